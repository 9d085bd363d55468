"""Overview: what the store holds, the live receiver and analysis loop, the workflows found."""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from choreoscope.dashboard import nav
from choreoscope.dashboard.app_pages.common import show_finding
from choreoscope.dashboard.store_access import context, fresh, query


@st.fragment(run_every=2.0)
def _live_panel() -> None:
    ctx = context()
    stats = ctx.receiver.stats()
    s = fresh("summary")
    c = st.columns(6)
    c[0].metric("Spans", f"{s['spans']:,}")
    c[1].metric("Traces", f"{s['traces']:,}")
    c[2].metric("Services", s["services"])
    c[3].metric("Spans/s", f"{stats.spans_per_s:,.0f}")
    c[4].metric("Queued spans", f"{stats.queue_spans:,}", help=f"limit {stats.queue_limit:,}; above it "
                "exports are refused with 429 / RESOURCE_EXHAUSTED")
    c[5].metric("Refused", stats.requests_refused)
    loop = ctx.loop
    if loop is not None:
        st_ = loop.status
        when = "never" if st_.last_run_at is None else f"{time.time() - st_.last_run_at:.0f}s ago"
        line = (f"Analysis: {'**running**' if st_.running else 'idle'} · {st_.runs} runs · last {when}"
                + (f" ({st_.last_duration_s:.1f}s over " + (
                    f"{st_.last_span_count:,} spans" if st_.last_window_spans is None else
                    f"the traces of the latest {loop.window_spans:,} spans: {st_.last_window_spans:,} of "
                    f"{st_.last_span_count:,}; `choreoscope analyze` for all") + ")"
                   if st_.last_duration_s else "")
                + (f" · every {loop.interval_s:g}s" if loop.interval_s else " · on request only"))
        cols = st.columns([5, 1])
        cols[0].markdown(line)
        if cols[1].button("Analyse now", key="analyse_now"):
            loop.request()
            st.toast("Analysis requested")
        if st_.last_error:
            st.error(f"Last analysis failed: {st_.last_error}")


def render() -> None:
    ctx = context()
    st.title("Overview")
    if ctx.live:
        _live_panel()
    else:
        s = query("summary")
        c = st.columns(4)
        c[0].metric("Spans", f"{s['spans']:,}")
        c[1].metric("Traces", f"{s['traces']:,}")
        c[2].metric("Services", s["services"])
        if s["first_ns"]:
            span_s = (s["last_ns"] - s["first_ns"]) / 1e9
            c[3].metric("Time span", f"{span_s:,.0f} s")
    if not fresh("has_analysis"):
        return
    wfs = query("workflows")
    f = query("findings")
    st.subheader(f"Workflows ({len(wfs)})")
    sev = f["severity"].value_counts() if not f.empty else pd.Series(dtype=int)
    st.markdown(f"**{len(f)} findings:** :red[**{sev.get('critical', 0)} critical**] · "
                f":orange[**{sev.get('warning', 0)} warning**] · :blue[{sev.get('info', 0)} info]")
    table = wfs[["name", "pattern", "instances", "services", "events", "critical", "warning", "info"]]
    event = st.dataframe(
        table, hide_index=True, width="stretch", on_select="rerun", selection_mode="single-row",
        key="overview_workflows",
        column_config={
            "name": st.column_config.TextColumn("Workflow (entry)", width="large"),
            "pattern": "Pattern", "instances": "Instances", "services": "Services", "events": "Events",
            "critical": "critical", "warning": "warning", "info": "info",
        },
    )
    rows = event.selection.rows if event is not None else []
    st.caption("Select a row to open the workflow.")
    if rows:
        nav.go("workflow", workflow=wfs.iloc[rows[0]]["workflow_id"])
    patterns = wfs["pattern"].value_counts()
    st.caption("Patterns: " + " · ".join(f"{k}: {v}" for k, v in patterns.items()))
    _verdicts(wfs)
    top = f[(f["severity"] != "info") & (f["confidence"] >= 0.5)].head(6)
    if not top.empty:
        st.subheader("Top findings")
        for i, row in enumerate(top.to_dict("records")):
            show_finding(row, key=f"ov{i}")
        nav.link("findings", f"all {len(f)} findings")


def _verdicts(wfs: pd.DataFrame) -> None:
    """Plain words per workflow whose pattern should be reconsidered, each sign linked to its findings."""
    verdicts = query("verdicts")
    if not verdicts:
        return
    names = dict(zip(wfs["workflow_id"], wfs["name"]))
    st.subheader("Verdicts")
    for wf_id, items in verdicts.items():
        for i, v in enumerate(items):
            with st.container(border=True):
                st.markdown(f"**{names.get(wf_id, wf_id)}: {v['verdict']}**")
                st.markdown(v["summary"])
                for j, sign in enumerate(v["signs"]):
                    st.markdown(f"- *{sign['sign']}*: {sign['text']}")
                    for fid in sign["finding_ids"]:
                        nav.link("findings", f"finding {fid}", finding=fid)
                st.caption(f"What to do: {v['recommendation']}")
                nav.link("workflow", "open the workflow", workflow=wf_id)


if __name__ == "__main__":  # Streamlit runs each page file as a script
    render()
