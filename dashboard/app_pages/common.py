"""Small display helpers shared by pages."""

from __future__ import annotations

import pandas as pd
import streamlit as st

# Findings listed at once: each is an expander whose example instances are a query, and a store
# with hundreds of findings (870 shared-table findings on bench/gen_dump.py's 1M spans) took minutes.
FINDINGS_PER_PAGE = 25

SEVERITY_ICON = {"critical": ":red[:material/error:]", "warning": ":orange[:material/warning:]",
                 "info": ":blue[:material/info:]"}


def short(text: str, n: int = 60) -> str:
    text = str(text)
    return text if len(text) <= n else text[: n - 1] + "…"


def pick(label: str, options: list[str], param: str, format_func=str, key: str | None = None) -> str | None:
    """A selectbox whose choice follows (and sets) the query parameter `param`, so pages link
    to each other and a URL reopens the same view."""
    if not options:
        return None
    wanted = st.query_params.get(param)
    index = options.index(wanted) if wanted in options else 0
    choice = st.selectbox(label, options, index=index, format_func=format_func, key=key or f"pick_{param}")
    if choice != wanted:
        st.query_params[param] = choice
    return choice


def finding_title(row) -> str:
    where = " → ".join(row["services"])
    about = [v for v in (row.get("event"), row.get("resource")) if isinstance(v, str) and v]
    extra = "".join(f" · {v}" for v in about)
    return f"{SEVERITY_ICON.get(row['severity'], '')} {row['kind']} — {where}{extra} ({row['confidence']:.2f})"


def _meta(row) -> str:
    meta = {k: row[k] for k in ("kind", "severity", "confidence", "event", "resource", "workflow_id")
            if row.get(k) is not None and not (isinstance(row[k], float) and pd.isna(row[k]))}
    return " · ".join(f"{k}: {v}" for k, v in meta.items())


def _examples(row, limit: int = 5) -> None:
    from choreoscope.dashboard import nav
    from choreoscope.dashboard.store_access import query

    if not row["trace_ids"]:
        return
    inst = query("instances_of_traces", list(row["trace_ids"]))
    st.markdown(f"**Example instances** ({len(inst)}):")
    for r in inst.head(limit).itertuples():
        nav.link("instance", f"instance {r.instance_id[:12]} · {r.spans} spans · "
                 f"{r.errors} errors · {r.duration_ms:.0f} ms", instance=r.instance_id)


def show_finding(row, key: str) -> None:
    """A finding as an expander: summary and recommendation first, then the evidence, the example
    instances (one click to the Instance page), the `choreoscope check` line; the full view with
    the evidence as pictures is one click away on the Findings page."""
    from choreoscope.dashboard import evidence, nav

    with st.expander(finding_title(row)):
        st.markdown(f"**{row['summary']}**")
        if row.get("recommendation"):
            st.markdown(f"*Recommendation:* {row['recommendation']}")
        st.caption(_meta(row))
        if row["kind"] in evidence.PICTURED:
            nav.link("findings", "Evidence as charts", finding=row["finding_id"])
        else:
            nav.link("findings", "Open the finding", finding=row["finding_id"])
        if row["evidence"]:
            st.caption("Evidence as recorded:")
            st.json(row["evidence"], expanded=False)
        _examples(row)
        st.code(evidence.check_command(row["kind"]), language="bash", wrap_lines=True)


def show_finding_page(row) -> None:
    """One finding in full: summary and recommendation, its evidence as pictures, example
    instances, the line that gates CI on its kind, the raw evidence."""
    from choreoscope.dashboard import evidence

    st.subheader(finding_title(row))
    st.markdown(f"**{row['summary']}**")
    if row.get("recommendation"):
        st.markdown(f"*Recommendation:* {row['recommendation']}")
    st.caption(_meta(row))
    st.markdown("#### Evidence")
    if not evidence.show(row) and not row["evidence"]:
        st.caption("No evidence recorded.")
    if row["evidence"]:
        with st.expander("Evidence as recorded (JSON)", expanded=row["kind"] not in evidence.PICTURED):
            st.json(row["evidence"])
    _examples(row, limit=10)
    st.markdown("**Fail CI when this kind of finding appears** (add `--baseline report.json` to fail "
                "only on new ones):")
    st.code(evidence.check_command(row["kind"]), language="bash", wrap_lines=True)
