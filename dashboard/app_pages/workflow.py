"""Workflow: the recovered graph next to the intended one, its findings, variants and instances."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from choreoscope.dashboard import graphs, nav
from choreoscope.dashboard.app_pages.common import FINDINGS_PER_PAGE, pick, show_finding
from choreoscope.dashboard.store_access import query

MAX_SERVICE_NODES = 40

def conformance_service_edges(conf: pd.DataFrame, recovered: list[graphs.ServiceEdge]) -> list[graphs.ServiceEdge]:
    """The conformance verdicts as service edges, counts taken from the recovered edges."""
    if conf.empty:
        return []
    src, dst = "src_service", "dst_service"  # conformance_edges' columns (analysis/conformance.py)
    counts: dict[tuple, int] = {}
    for e in recovered:
        counts[(e.src, e.dst, e.event)] = counts.get((e.src, e.dst, e.event), 0) + e.count
    out: dict[tuple, graphs.ServiceEdge] = {}
    for r in conf.to_dict("records"):
        event = r.get("event") if isinstance(r.get("event"), str) and r.get("event") else None
        via = r.get("via") if isinstance(r.get("via"), str) else ("event" if event else "call")
        status = str(r["status"])
        if status not in graphs.STATUS_COLORS or not isinstance(r[src], str) or not isinstance(r[dst], str):
            continue
        count = r.get("count")
        count = int(count) if isinstance(count, (int, float)) and not pd.isna(count) else counts.get(
            (r[src], r[dst], event), 0)
        out[(r[src], r[dst], via, event)] = graphs.ServiceEdge(r[src], r[dst], via, event, status, count)
    return list(out.values())


def _legend(edges: list[graphs.ServiceEdge], compare: bool) -> str:
    parts = []
    for status in ("matched", "undeclared", "missing", "unchecked", "observed"):
        n = sum(1 for e in edges if e.status == status)
        if (compare and status in ("matched", "undeclared", "missing")) or (compare and n) or (
                not compare and status == "observed"):
            color = graphs.STATUS_COLORS[status]
            parts.append(f"<span style='color:{color};font-weight:600'>━ {status}: {n}</span> "
                         f"<span style='color:#666'>({graphs.STATUS_HELP[status]})</span>")
    return " &nbsp; ".join(parts)


def render() -> None:
    st.title("Workflow")
    wfs = query("workflows")
    if wfs.empty:
        st.info("No workflows recovered yet.")
        return
    # One label per workflow, computed once: format_func runs for every option (thousands of types).
    labels = {w: f"{n} — {int(i)} instances" for w, n, i in zip(wfs["workflow_id"], wfs["name"], wfs["instances"])}
    wf_id = pick("Workflow", list(wfs["workflow_id"]), "workflow", format_func=labels.__getitem__)
    wf = wfs.set_index("workflow_id").loc[wf_id]

    c = st.columns([2, 1, 1, 1, 1, 1.4])
    c[0].metric("Pattern", wf["pattern"])
    c[1].metric("Instances", int(wf["instances"]))
    c[2].metric("Services", int(wf["services"]))
    c[3].metric("Events", int(wf["events"]))
    c[4].metric("Max depth", int(wf["max_depth"]))
    c[5].metric("Findings", f"{wf['critical']} / {wf['warning']} / {wf['info']}",
                help="critical / warning / info")
    with st.expander("Why this pattern"):
        st.markdown(f"- **Who knows the workflow:** {wf['who_knows_the_workflow']}\n"
                    f"- **Where state lives:** {wf['where_state_lives']}\n"
                    f"- **Where errors are handled:** {wf['where_errors_are_handled']}")

    steps = query("workflow_steps", wf_id)
    edges = query("workflow_edges", wf_id)
    recovered = graphs.recovered_service_edges(edges)
    conf = query("conformance_edges", wf_id)
    diff = conformance_service_edges(conf, recovered)
    compare = bool(diff)
    if compare:
        # Recovered edges the conformance table does not mention are still shown, as observed.
        known = {(e.src, e.dst, e.event) for e in diff}
        diff += [graphs.ServiceEdge(e.src, e.dst, e.via, e.event, "unchecked", e.count)
                 for e in recovered if (e.src, e.dst, e.event) not in known]
    service_edges = diff if compare else recovered

    span_counts = steps[~steps["virtual"]].groupby("service")["count"].sum().to_dict()
    services = sorted({e.src for e in service_edges} | {e.dst for e in service_edges} | set(steps["service"]))
    peers = set(steps.loc[steps["virtual"], "service"]) - set(span_counts)
    nodes = {s: f"{s}\n{span_counts[s]} spans" if s in span_counts
             else f"{s}\n(uninstrumented)" if s in peers else f"{s}\n(never observed)" for s in services}
    if len(nodes) > MAX_SERVICE_NODES:
        st.warning(f"{len(nodes)} services: showing the {MAX_SERVICE_NODES} busiest; the tables list the rest.")
        keep = set(sorted(nodes, key=lambda s: -span_counts.get(s, 0))[:MAX_SERVICE_NODES])
        nodes = {s: v for s, v in nodes.items() if s in keep}
        service_edges = [e for e in service_edges if e.src in keep and e.dst in keep]

    st.markdown(_legend(service_edges, compare), unsafe_allow_html=True)
    absent = {s for s in nodes if s not in span_counts and s not in peers}
    rec_dot, int_dot = graphs.side_by_side(nodes, service_edges, peers, absent)
    left, right = st.columns(2)
    with left:
        st.markdown("**Recovered** (from traces, service level)")
        st.graphviz_chart(rec_dot, width="stretch")
    with right:
        st.markdown("**Intended** (declared)")
        if compare:
            st.graphviz_chart(int_dot, width="stretch")
        else:
            st.info("No intended workflow to compare with. Start `choreoscope serve --intended PATH`, "
                    "pass `--intended` to `choreoscope analyze`, or upload intended documents on the "
                    "**Load** page.")
    if compare:
        with st.expander("Edge verdicts"):
            st.dataframe(pd.DataFrame([e.__dict__ for e in service_edges]), hide_index=True, width="stretch")

    colors = {}
    if compare:
        by_service = {(e.src, e.dst, e.event): graphs.STATUS_COLORS[e.status] for e in service_edges}
        for r in edges.itertuples():
            color = by_service.get((r.src_service, r.dst_service, r.event))
            if color:
                colors[(r.src_step, r.dst_step)] = color
    with st.expander(f"Step graph ({len(steps)} steps, {len(edges)} edges)", expanded=len(steps) <= 30):
        dot, note = graphs.step_dot(wf["name"], steps, edges, colors)
        if note:
            st.caption(note)
        st.graphviz_chart(dot, width="stretch")
        st.caption("Solid: call · dashed: event · dotted: inferred (message id / time window) · grey: "
                   "uninstrumented peer. Node labels: service, operation ×spans.")

    _critical_path(wf_id)
    _findings(wf_id)
    _variants_and_instances(wf_id)
    with st.expander("Steps and edges"):
        st.dataframe(steps, hide_index=True, width="stretch")
        st.dataframe(edges.drop(columns=["src_service", "dst_service"]), hide_index=True, width="stretch")


def _critical_path(wf_id: str) -> None:
    """The typical critical path: the steps that set the instances' end-to-end time, in path order."""
    path = query("critical_path_steps", wf_id)
    if path.empty:
        return
    st.subheader("Typical critical path")
    st.caption("Per step and kind of segment: on the path of how many instances, and its median time "
               "there. work: a span's own time · queue: from the send's start to the consumer's start · "
               "wait: a consumer waiting on a sibling its implicit ordering names · network: client span "
               "minus server span. Open an instance to see its own path.")
    shown = path.assign(share=(100 * path["share"]).round(0), waits_on=path["waits_on"].fillna(""))
    st.dataframe(shown[["step_id", "kind", "waits_on", "share", "p50_ms", "instances"]], hide_index=True,
                 width="stretch", column_config={
                     "step_id": st.column_config.TextColumn("Step", width="large"), "kind": "Kind",
                     "waits_on": "Waits on", "share": st.column_config.NumberColumn("On path %", format="%d%%"),
                     "p50_ms": st.column_config.NumberColumn("p50 ms", format="%.1f"),
                     "instances": "Instances"})


def _findings(wf_id: str) -> None:
    f = query("findings")
    steps = query("workflow_steps", wf_id)
    services = set(steps.loc[~steps["virtual"], "service"])
    mine = f[(f["workflow_id"] == wf_id) | (f["workflow_id"].isna() & f["services"].map(
        lambda s: bool(services & set(s))))] if not f.empty else f
    st.subheader(f"Findings ({len(mine)})")
    if mine.empty:
        st.caption("No findings touch this workflow.")
    for i, row in enumerate(mine.head(FINDINGS_PER_PAGE).to_dict("records")):
        show_finding(row, key=f"wf_f{i}")
    if len(mine) > FINDINGS_PER_PAGE:
        st.caption(f"The first {FINDINGS_PER_PAGE}; the Findings page lists all {len(mine)} (filter by Workflow).")


def _variants_and_instances(wf_id: str) -> None:
    variants = query("workflow_variants", wf_id)
    left, right = st.columns(2)
    with left:
        st.subheader(f"Variants ({len(variants)})")
        total = int(variants["count"].sum()) if not variants.empty else 0
        for i, r in enumerate(variants.head(12).itertuples(), 1):
            share = 100 * r.count / total if total else 0
            label = f"#{i} · {r.count} instances ({share:.0f}%)" + (f" · {r.errors} with errors" if r.errors else "")
            if isinstance(r.example_instance, str):
                nav.link("instance", label, instance=r.example_instance)
            else:
                st.write(label)
    with right:
        inst = query("workflow_instances", wf_id)
        st.subheader("Example instances")
        for r in inst.head(8).itertuples():
            flag = ":red[errors] " if r.errors else ""
            nav.link("instance", f"{flag}{r.instance_id[:12]} · {r.spans} spans · {r.traces} traces · "
                     f"{r.duration_ms:,.0f} ms", instance=r.instance_id)


if __name__ == "__main__":  # Streamlit runs each page file as a script
    render()
