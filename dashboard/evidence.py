"""A finding's evidence as pictures (the Findings page's detail view).

implicit_ordering / ordering_violation: the gap between the earlier step's end and the later
step's start, per instance, as a histogram, and the instances where the later one started early;
schema_drift: the attribute sets by producer version; retry_loop: attempts per instance. Each
reads small aggregates through `store_access.query` (cached per analysis run).
"""

from __future__ import annotations

import shlex

import altair as alt
import pandas as pd
import streamlit as st

from choreoscope.dashboard import nav
from choreoscope.dashboard.store_access import context, query

PICTURED = ("implicit_ordering", "ordering_violation", "schema_drift", "retry_loop")
OUTCOME_COLORS = {"started early · failed": "#c62828", "started early · retried": "#e8710a",
                  "started early": "#f2b134", "after it finished": "#4a6fa5"}
MAX_LINKS = 12


def check_command(kind: str) -> str:
    """The `choreoscope check` line that gates CI on this kind of finding."""
    ctx = context()
    parts = ["choreoscope", "check", ctx.db_path]
    for p in getattr(ctx, "intended_paths", None) or []:
        parts += ["--intended", str(p)]
    parts += ["--fail-on", kind]
    return " ".join(shlex.quote(p) for p in parts)


def ordering_steps(row) -> tuple[str, str] | None:
    """(earlier step, later step) of an ordering finding: the evidence's step pair, else the two
    services' consumer steps of the finding's event."""
    pairs = (row.get("evidence") or {}).get("step_pairs") or []
    if pairs and len(pairs[0]) == 2:
        return str(pairs[0][0]), str(pairs[0][1])
    services, event = row.get("services") or [], row.get("event")
    if len(services) >= 2 and isinstance(event, str) and event:
        return f"{services[0]} consumer {event}", f"{services[1]} consumer {event}"
    return None


def _workflow(row) -> str | None:
    wf = row.get("workflow_id")
    if isinstance(wf, str) and wf:
        return wf
    wf = (row.get("evidence") or {}).get("workflow")
    return wf if isinstance(wf, str) and wf else None


def show(row) -> bool:
    """Draw the pictures for `row`'s kind; False when the kind has none (or its data is gone)."""
    kind = row["kind"]
    if kind in ("implicit_ordering", "ordering_violation"):
        return _ordering(row)
    if kind == "schema_drift":
        return _schema_drift(row)
    if kind == "retry_loop":
        return _retry_loop(row)
    return False


def outcome(r) -> str:
    if not r["started_early"]:
        return "after it finished"
    if r["b_errors"] > 0:
        return "started early · failed"
    if r["b_attempts"] > 1:
        return "started early · retried"
    return "started early"


def _ordering(row) -> bool:
    steps, wf = ordering_steps(row), _workflow(row)
    if steps is None or wf is None:
        return False
    a, b = steps
    gaps = query("step_pair_gaps", wf, a, b)
    if gaps.empty:
        return False
    gaps = gaps.copy()
    gaps["outcome"] = gaps.apply(outcome, axis=1)
    early = gaps[gaps["started_early"]]
    st.markdown(f"**Gap: `{b}` first start − `{a}` end**, per instance ({len(gaps)} instances where both "
                f"ran; negative = it started before the other had finished). {len(early)} started early.")
    bars = alt.Chart(gaps).mark_bar().encode(
        x=alt.X("first_gap_ms:Q", bin=alt.Bin(maxbins=40), title="gap (ms, corrected clocks)"),
        y=alt.Y("count():Q", title="instances", stack=True, axis=alt.Axis(tickMinStep=1, format="d")),
        color=alt.Color("outcome:N", title=None, legend=alt.Legend(orient="bottom"),
                        scale=alt.Scale(domain=list(OUTCOME_COLORS), range=list(OUTCOME_COLORS.values()))),
        tooltip=["outcome", alt.Tooltip("count():Q", title="instances")],
    )
    zero = alt.Chart(pd.DataFrame({"x": [0]})).mark_rule(color="#333", strokeDash=[4, 3]).encode(x="x:Q")
    st.altair_chart((bars + zero).properties(height=220), width="stretch")
    if not early.empty:
        st.markdown(f"**Instances where `{b.split(' ')[0]}` started early** ({len(early)}; "
                    f"{int((early['b_errors'] > 0).sum())} failed, {int((early['b_attempts'] > 1).sum())} retried):")
        for r in early.head(MAX_LINKS).itertuples():
            what = (f"failed {r.b_errors}× · " if r.b_errors else "") + (
                f"{r.b_attempts} attempts · " if r.b_attempts > 1 else "")
            nav.link("instance", f"{r.instance_id[:12]} · started {-r.first_gap_ms:,.1f} ms early · {what}"
                     f"last attempt at {r.final_gap_ms:+,.1f} ms", instance=r.instance_id)
        if len(early) > MAX_LINKS:
            with st.popover(f"all {len(early)}"):
                st.dataframe(early[["instance_id", "first_gap_ms", "final_gap_ms", "b_attempts", "b_errors"]],
                             hide_index=True)
    return True


def _schema_drift(row) -> bool:
    event = row.get("event")
    if not isinstance(event, str) or not event:
        return False
    attrs = query("event_attribute_sets", event)
    producers = set(row.get("services") or [])
    if producers:
        attrs = attrs[attrs["producer"].isin(producers)]
    changes = (row.get("evidence") or {}).get("changes") or []
    if changes:
        st.markdown(f"**What changed on `{event}`**")
        st.dataframe(pd.DataFrame([{"version": c.get("from_version"), "after": c.get("previous_version"),
                                    "added": ", ".join(c.get("added") or []),
                                    "removed": ", ".join(c.get("removed") or []),
                                    "spans before": c.get("spans_before"), "spans after": c.get("spans_after")}
                                   for c in changes]), hide_index=True)
    if attrs.empty:
        return bool(changes)
    st.markdown(f"**Attribute sets of `{event}` by producer version**")
    table = attrs.copy()
    table["attribute_keys"] = table["attribute_keys"].map(lambda k: ", ".join(k) if k is not None else "")
    st.dataframe(table, hide_index=True, width="stretch")
    return True


def _retry_loop(row) -> bool:
    ev = row.get("evidence") or {}
    step = ev.get("step")
    if not isinstance(step, str) or not step:
        return False
    attempts = query("step_attempts", _workflow(row), step)
    if attempts.empty:
        return False
    dist = attempts.groupby("attempts").agg(instances=("instance_id", "count"),
                                            failed_attempts=("errors", "sum")).reset_index()
    st.markdown(f"**Attempts of `{step}` per instance** ({len(attempts)} instances, "
                f"{int((attempts['attempts'] > 1).sum())} needed more than one)")
    chart = alt.Chart(dist).mark_bar(color="#e8710a").encode(
        x=alt.X("attempts:O", title="attempts in the instance", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("instances:Q", title="instances", axis=alt.Axis(tickMinStep=1, format="d")),
        tooltip=["attempts", "instances", "failed_attempts"])
    st.altair_chart(chart.properties(height=200), width="stretch")
    if ev.get("errors"):
        st.markdown("Failed attempts by error: " + " · ".join(f"{k} ×{v}" for k, v in ev["errors"].items()))
    worst = attempts[attempts["attempts"] > 1].head(6)
    for r in worst.itertuples():
        nav.link("instance", f"{r.instance_id[:12]} · {r.attempts} attempts · {r.errors} failed",
                 instance=r.instance_id)
    return True
