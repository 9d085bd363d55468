"""DOT for the Workflow page: the recovered and intended graphs side by side, and the step graph.

`st.graphviz_chart` lays each graph out on its own and scales it to its column. To make the two
graphs comparable at a glance, both DOT texts hold the SAME nodes and the SAME edges in the same
order (so Graphviz computes the same layout); an edge that exists on one side only is drawn
invisible on the other. Edge colours say the conformance verdict: matched / undeclared / missing.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from choreoscope.analysis.graph_export import workflow_dot

STATUS_COLORS = {"matched": "#2e7d32", "undeclared": "#e8710a", "missing": "#c62828", "observed": "#4a6fa5",
                 "unchecked": "#9e9e9e"}
STATUS_HELP = {
    "matched": "observed and declared",
    "undeclared": "observed, not in the intended flow",
    "missing": "declared, never observed",
    "observed": "observed (no intended workflow to compare with)",
    "unchecked": "observed, not judged by conformance (e.g. an event no one consumes)",
}
MAX_STEP_EDGES = 60


@dataclass(frozen=True)
class ServiceEdge:
    src: str
    dst: str
    via: str  # call | event
    event: str | None
    status: str  # matched | undeclared | missing | observed
    count: int = 0


def _q(text: str) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _edge_label(edge: ServiceEdge) -> str:
    return f"{edge.event or 'call'} ×{edge.count}"


def _service_dot(nodes: dict[str, str], edges: list[ServiceEdge], visible: set[str], side: str,
                 grey: set[str], absent: set[str]) -> str:
    lines = ["digraph G {", "  rankdir=LR; nodesep=0.35; ranksep=0.6; bgcolor=transparent;",
             ('  node [shape=box, style="rounded,filled", fillcolor="#eef3fb", color="#8aa4c8", '
             'fontname="Helvetica", fontsize=13];'),
             '  edge [fontname="Helvetica", fontsize=11, arrowsize=0.7];']
    ids = {svc: f"s{i}" for i, svc in enumerate(nodes)}
    for svc, label in nodes.items():
        extra = (', fillcolor="#e6e6e6", color="#aaaaaa", style="rounded,filled,dashed"' if svc in grey
                 else ', fillcolor="#fdecea", color="#c62828", style="rounded,filled,dashed"' if svc in absent
                 else "")
        lines.append(f"  {ids[svc]} [label={_q(label)}{extra}];")
    for edge in edges:
        # Same label on both sides: Graphviz then gives both graphs the same layout.
        attrs = [f"label={_q(_edge_label(edge))}"]
        if edge.status not in visible:
            attrs.append("style=invis")
        else:
            color = STATUS_COLORS[edge.status]
            style = "dashed" if edge.status == "missing" or edge.via == "event" else "solid"
            if edge.status == "missing":
                style = "dashed"
            attrs += [f"style={style}", f'color="{color}"', f'fontcolor="{color}"', "penwidth=1.8"]
        lines.append(f"  {ids[edge.src]} -> {ids[edge.dst]} [{', '.join(attrs)}];")
    lines.append("}")
    return "\n".join(lines)


def side_by_side(nodes: dict[str, str], edges: list[ServiceEdge],
                 grey: set[str] | None = None, absent: set[str] | None = None) -> tuple[str, str]:
    """(recovered DOT, intended DOT) over the same nodes and edge list, so they share one layout.

    nodes maps service -> label; edges carry their status. The recovered side shows matched and
    undeclared edges, the intended side matched and missing ones. `grey` services (uninstrumented
    peers) are drawn grey and dashed, `absent` ones (declared, never observed) red and dashed.
    """
    grey, absent = grey or set(), absent or set()
    edges = sorted(edges, key=lambda e: (e.src, e.dst, e.via, e.event or "", e.status))
    return (_service_dot(nodes, edges, {"matched", "undeclared", "observed", "unchecked"}, "recovered", grey, absent),
            _service_dot(nodes, edges, {"matched", "missing"}, "intended", grey, absent))


def recovered_service_edges(edges: pd.DataFrame) -> list[ServiceEdge]:
    """Step edges folded to service level (calls inside one service dropped), status `observed`."""
    if edges.empty:
        return []
    cross = edges[edges["src_service"] != edges["dst_service"]]
    grouped = cross.groupby(["src_service", "dst_service", "via", cross["event"].fillna("")],
                            dropna=False)["count"].sum()
    return [ServiceEdge(src, dst, via, event or None, "observed", int(count))
            for (src, dst, via, event), count in grouped.items()]


def step_dot(workflow_name: str, steps: pd.DataFrame, edges: pd.DataFrame,
             edge_colors: dict[tuple[str, str], str] | None = None,
             max_edges: int = MAX_STEP_EDGES) -> tuple[str, str | None]:
    """The step-level graph via analysis.graph_export; above `max_edges` edges only the busiest
    are drawn. Returns (DOT, note or None)."""
    note = None
    shown = edges
    if len(edges) > max_edges:
        shown = edges.sort_values("count", ascending=False).head(max_edges)
        note = (f"{len(edges)} step edges: showing the {max_edges} busiest. The service graph above "
                "shows every service; the tables below list every step and edge.")
    keep = set(shown["src_step"]) | set(shown["dst_step"])
    step_rows = steps if note is None else steps[steps["step_id"].isin(keep)]
    workflow = {
        "name": workflow_name,
        "steps": [{"id": r.step_id, "service": r.service, "operation": r.operation,
                   "role": "virtual" if r.virtual else r.role, "count": int(r.count)}
                  for r in step_rows.itertuples()],
        "edges": [{"source": r.src_step, "target": r.dst_step, "via": r.via,
                   "event": r.event if isinstance(r.event, str) else None,
                   "count": int(r.count), "inferred": bool(r.inferred)} for r in shown.itertuples()],
    }
    return workflow_dot(workflow, edge_colors), note
