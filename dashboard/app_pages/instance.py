"""Instance: one stitched workflow instance as a waterfall across its traces."""

from __future__ import annotations

import altair as alt
import streamlit as st

from choreoscope.dashboard import nav
from choreoscope.dashboard.store_access import query

MAX_SPANS = 400


def render() -> None:
    st.title("Instance")
    wanted = st.query_params.get("instance")
    trace = st.text_input("Instance id or trace id", value=wanted or "", key="instance_input",
                          help="Open one from a workflow, a variant or a finding, or paste an id.")
    if not trace:
        trace = _pick_instance()
        if not trace:
            return
    inst = query("instance", trace)
    if inst is None:
        iid = query("instance_of_trace", trace)
        inst = query("instance", iid) if iid else None
    if inst is None:
        st.error(f"No workflow instance with id or trace id {trace!r}.")
        return
    iid = inst["instance_id"]
    if wanted != iid:
        st.query_params["instance"] = iid
    spans = query("instance_spans", iid)
    hops = query("instance_cross_edges", iid)

    wf_names = dict(zip(*[query("workflows")[c] for c in ("workflow_id", "name")]))
    st.markdown(f"**Workflow:** {wf_names.get(inst['workflow_id'], inst['workflow_id'])}")
    nav.link("workflow", "open the workflow", workflow=inst["workflow_id"])
    c = st.columns(5)
    c[0].metric("Spans", int(inst["spans"]))
    c[1].metric("Traces", int(inst["traces"]))
    c[2].metric("Services", int(inst["services"]))
    c[3].metric("Errors", int(inst["errors"]))
    c[4].metric("Duration", f"{(inst['end_adj'] - inst['start_adj']) / 1e6:,.0f} ms")

    corrected = st.toggle("Clock-skew corrected times", value=True, key="skew_toggle",
                          help="Off: the timestamps as the services reported them.")
    start, end = ("start_ms", "end_ms") if corrected else ("raw_start_ms", "raw_end_ms")
    shown = spans.head(MAX_SPANS).copy()
    if len(spans) > MAX_SPANS:
        st.caption(f"{len(spans)} spans: showing the first {MAX_SPANS} by start time.")
    many_traces = shown["trace_id"].nunique() > 1
    shown["row"] = [f"{i:03d} " + (f"[{r.trace_id[:4]}] " if many_traces else "") + f"{r.service} · {r.operation}"
                    for i, r in enumerate(shown.itertuples())]
    shown["trace"] = shown["trace_id"].str[:8]
    shown["linked"] = shown["span_id"].isin(set(hops["dst_span_id"])) | shown["span_id"].isin(
        set(hops["src_span_id"]))
    shown["status"] = shown["is_error"].map({True: "error", False: "ok"})
    base = alt.Chart(shown).encode(
        y=alt.Y("row:N", sort=list(shown["row"]), title=None, axis=alt.Axis(labelLimit=360, labelOverlap=False, labelExpr="substring(datum.value, 4)")),
        tooltip=["service", "operation", "name", "trace_id", "span_id", "status", "status_message",
                 alt.Tooltip("duration_ms:Q", format=",.1f"), alt.Tooltip(f"{start}:Q", format=",.1f"),
                 alt.Tooltip("clock_offset_ms:Q", format=",.1f"), "retry_attempt"],
    )
    bars = base.mark_bar(height=14, cornerRadius=2).encode(
        x=alt.X(f"{start}:Q", title="ms since the instance started"), x2=f"{end}:Q",
        color=alt.Color("service:N", scale=alt.Scale(scheme="set2"),
                        legend=alt.Legend(orient="bottom", columns=4)),
        stroke=alt.condition("datum.is_error", alt.value("#c62828"), alt.value(None)),
        strokeWidth=alt.condition("datum.is_error", alt.value(2.5), alt.value(0)),
    )
    errors = base.transform_filter("datum.is_error").mark_text(text="✕", color="#c62828", dx=8, align="left",
                                                                fontSize=13).encode(x=f"{end}:Q")
    links = base.transform_filter("datum.linked").mark_point(shape="diamond", filled=True, color="#6a1b9a",
                                                              size=60).encode(x=f"{start}:Q")
    path = query("instance_critical_path", iid)
    row_of = dict(zip(shown["span_id"], shown["row"]))
    on_path = path[path["span_id"].isin(row_of)].assign(row=lambda d: d["span_id"].map(row_of)) if corrected \
        else path.iloc[0:0].assign(row=[])
    layers = bars + errors + links
    if not on_path.empty:
        layers += alt.Chart(on_path).mark_bar(height=4, color="#111").encode(
            y=alt.Y("row:N", sort=list(shown["row"])), x="start_ms:Q", x2="end_ms:Q",
            tooltip=["kind", "service", "step_id", "waits_on", alt.Tooltip("duration_ms:Q", format=",.1f")])
    chart = layers.properties(height=max(160, 22 * len(shown)))
    st.altair_chart(chart, width="stretch")
    st.caption("Bars: spans coloured by service (`[abcd]` = trace id prefix), red outline and ✕ = error, purple diamond = start of a cross-trace hop (span link, "
               "message id or time-window inference). Traces in this instance: "
               + ", ".join(sorted(shown["trace"].unique())))
    if not path.empty:
        st.caption("Black line: the instance's critical path (the chain that set its end-to-end time), on "
                   "the span whose time it is; a queue or wait sits before its consumer's bar. Shown on "
                   "corrected times.")
        st.subheader("Critical path")
        totals = path.groupby("kind")["duration_ms"].sum()
        st.markdown(" · ".join(f"**{k}** {v:,.1f} ms" for k, v in totals.items()))
        st.dataframe(path[["kind", "service", "step_id", "waits_on", "start_ms", "duration_ms"]],
                     hide_index=True, width="stretch")
    if not hops.empty:
        st.subheader(f"Hops between traces ({len(hops)})")
        st.dataframe(hops[["src_service", "dst_service", "via", "evidence", "inferred", "confidence",
                           "src_trace_id", "dst_trace_id"]], hide_index=True, width="stretch")
    with st.expander("Spans"):
        st.dataframe(spans.drop(columns=["step_id"]), hide_index=True, width="stretch")
    skewed = spans[spans["clock_offset_ms"].abs() > 0][["service", "clock_offset_ms"]].drop_duplicates()
    if not skewed.empty:
        st.caption("Clock offsets corrected: " + ", ".join(
            f"{r.service} {r.clock_offset_ms:+,.1f} ms" for r in skewed.itertuples()))

def _pick_instance() -> str | None:
    """Without an id: choose a workflow, then one of its instances (errors first, then the
    longest-stitched), so the page shows a waterfall on arrival."""
    wfs = query("workflows")
    if wfs.empty:
        st.caption("No workflow instances yet.")
        return None
    names = dict(zip(wfs["workflow_id"], wfs["name"]))
    wf = st.selectbox("Workflow", list(names), format_func=lambda w: names[w], key="instance_workflow")
    rows = query("workflow_instances", wf)
    if rows.empty:
        return None
    rows = rows.sort_values(["errors", "traces", "start_adj"], ascending=[False, False, True])
    labels = {
        r.instance_id: f"{r.entry_trace_id[:16]} · {r.spans} spans in {r.traces} trace(s)"
        + (f" · {r.errors} error(s)" if r.errors else "") + f" · {r.duration_ms:,.0f} ms"
        for r in rows.itertuples()
    }
    st.caption("Or paste an id above, or open one from a workflow, a variant or a finding.")
    return st.selectbox("Instance", list(labels), format_func=lambda i: labels[i], key="instance_pick")


if __name__ == "__main__":  # Streamlit runs each page file as a script
    render()
