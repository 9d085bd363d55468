"""System map: every service and event, the calls and event hand-offs between them over all
workflows, coloured by the findings that name them; pick a node to open its workflows."""

from __future__ import annotations

import streamlit as st

from choreoscope.dashboard import nav, system_map
from choreoscope.dashboard.store_access import context, query

GROUP_ABOVE = 40  # services: above this, fold them into their service.namespace by default
MAX_EDGES = 150  # the default count threshold keeps at most this many hand-offs
SMALL_GRAPH = 14  # nodes: up to this many, the graph is drawn at its natural size


def _legend() -> str:
    sev = " &nbsp; ".join(f"<span style='color:{c};font-weight:600'>■ {s}</span>"
                          for s, c in system_map.SEVERITY_COLORS.items())
    return (f"Named by a finding: {sev} &nbsp;·&nbsp; <span style='color:#555'>box: service · "
            "grey dashed: uninstrumented peer · ellipse: event (topic) · solid: call · dashed: event · "
            "dotted: inferred (message id / time window)</span>")


@st.cache_data(show_spinner=False, max_entries=64)
def _build(version: tuple, min_count: int, focus: str | None, group: bool) -> system_map.SystemMap:
    """The map for these controls, cached per data version: moving a control back is instant."""
    return system_map.build(query("system_map_services"), query("system_map_edges"), query("findings"),
                            min_count=min_count, focus=focus, group=group)


def render() -> None:
    st.title("System map")
    services = query("system_map_services")
    edges = query("system_map_edges")
    if services.empty:
        st.info("No services recovered yet.")
        return
    real = services[~services["virtual"]]
    namespaces = sorted({n for n in real["namespace"] if isinstance(n, str) and n})
    max_count = int(edges["count"].max()) if not edges.empty else 1

    c = st.columns([2, 2, 1.2])
    focus = c[0].text_input("Search a service", value=st.query_params.get("focus", ""), key="map_focus",
                            placeholder="e.g. order", help="Keep the matching services, their direct "
                            "peers and the events between them.").strip()
    if focus != st.query_params.get("focus", ""):
        if focus:
            st.query_params["focus"] = focus
        else:
            del st.query_params["focus"]
    min_count = c[1].slider("Hide hand-offs seen fewer times than", 1, max(max_count, 2),
                            system_map.threshold_for(edges, MAX_EDGES), key="map_min_count",
                            help="Counts are summed over every workflow.")
    group = c[2].toggle("Group by namespace", value=len(real) > GROUP_ABOVE and len(namespaces) > 1,
                        key="map_group", disabled=not namespaces or bool(focus),
                        help="Fold services into their `service.namespace`; events become edges between "
                             "namespaces. Off while searching: a neighbourhood is small.")

    m = _build(context().data_version(), min_count, focus or None, group)
    kinds = {k: sum(1 for n in m.nodes.values() if n.kind == k) for k in ("service", "virtual", "event", "namespace")}
    shown = (f"{kinds['namespace']} namespaces" if m.grouped else
             f"{kinds['service']} services · {kinds['virtual']} uninstrumented peers · {kinds['event']} events")
    st.caption(f"{shown} · {len(m.edges)} edges"
               + (f" · {m.hidden_edges} hand-offs below {min_count} hidden" if m.hidden_edges else "")
               + (f" · neighbourhood of “{focus}”" if focus else "")
               + f" · {len(real)} services in the store")
    st.markdown(_legend(), unsafe_allow_html=True)
    if focus and not any(n.kind in ("service", "virtual") for n in m.nodes.values()):
        st.warning(f"No service matches “{focus}”.")
        return
    if not m.nodes:
        st.info("Nothing above the threshold: lower it.")
        return
    # A small neighbourhood at its natural size; a big map scaled to the page.
    st.graphviz_chart(m.dot(), width="stretch" if len(m.nodes) > SMALL_GRAPH else "content")
    _open_node(m)


def _open_node(m: system_map.SystemMap) -> None:
    """The map's nodes in a select box: a node opens its workflows (and a namespace its services)."""
    wfs = query("workflows")
    names = dict(zip(wfs["workflow_id"], wfs["name"]))
    order = {"service": 0, "namespace": 0, "event": 1, "virtual": 2}
    nodes = sorted(m.nodes.values(), key=lambda n: (order[n.kind], SEVERITY_ORDER.get(n.severity, 3), n.name))
    labels = {n.id: f"{n.name} ({n.kind})" + (f" · {n.severity}" if n.severity else "") for n in nodes}
    wanted = st.query_params.get("node")
    ids = list(labels)
    index = ids.index(wanted) if wanted in ids else None
    nid = st.selectbox("Open a node", ids, index=index, format_func=labels.__getitem__, key="map_node",
                       placeholder="pick a service, event or namespace to see its workflows")
    if nid is None:
        return
    if nid != wanted:
        st.query_params["node"] = nid
    node = m.nodes[nid]
    if node.kind == "namespace":
        st.markdown(f"**{node.name}**: " + ", ".join(sorted(node.members)))
    workflows = sorted(node.workflows, key=lambda w: names.get(w, w))
    st.markdown(f"**{node.name}** takes part in {len(workflows)} workflow{'s' if len(workflows) != 1 else ''}:")
    for w in workflows[:50]:
        nav.link("workflow", names.get(w, w), workflow=w)
    if len(workflows) > 50:
        st.caption(f"… and {len(workflows) - 50} more (Services page).")
    f = query("findings")
    if not f.empty:
        if node.kind == "event":
            mine = f[f["event"] == node.name]
        else:
            members = set(node.members) if node.kind == "namespace" else {node.name}
            mine = f[f["services"].map(lambda s: bool(members & set(s)))]
        if not mine.empty:
            st.markdown(f"Findings naming it ({len(mine)}):")
            for r in mine.head(20).to_dict("records"):
                nav.link("findings", f"{r['severity']} · {r['kind']} — {r['summary'][:110]}", finding=r["finding_id"])


SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}

if __name__ == "__main__":  # Streamlit runs each page file as a script
    render()
