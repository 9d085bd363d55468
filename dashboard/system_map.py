"""The System map's graph: every service and event of the store, and the hand-offs between them.

Built from two small aggregates (`data.system_map_edges`, `data.system_map_services`) and the
findings, with no query of its own, so the page redraws from cached frames when a control moves.
Calls are service -> service edges; an event hand-off is service -> event -> service, the event a
node of its own. A node or edge a finding names takes the finding's severity colour (the worst,
when several do). To stay readable with hundreds of services: edges below a count are hidden, a
search keeps one service's neighbourhood, and services can be folded into their
`service.namespace` (events then become namespace -> namespace edges).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import pairwise
from urllib.parse import urlencode

import pandas as pd

SEVERITY_RANK = {"info": 1, "warning": 2, "critical": 3}
SEVERITY_COLORS = {"critical": "#c62828", "warning": "#e8710a", "info": "#1565c0"}
SEVERITY_FILLS = {"critical": "#fdecea", "warning": "#fff3e0", "info": "#e3f2fd"}
EXTERNAL = "(uninstrumented)"
NO_NAMESPACE = "(no namespace)"
LABEL_EDGES_UP_TO = 40  # edge labels (counts) only while the graph has at most this many edges (else tooltips)


@dataclass
class Node:
    id: str
    name: str
    kind: str  # service | virtual | event | namespace
    workflows: set[str] = field(default_factory=set)
    severity: str | None = None
    spans: int = 0
    members: list[str] = field(default_factory=list)  # a namespace's services
    note: str = ""  # an event with no consumer / no producer seen
    internal: int = 0  # a namespace's hand-offs between its own services


@dataclass
class Edge:
    src: str  # node ids
    dst: str
    via: str  # call | event
    count: int
    inferred: bool = False
    severity: str | None = None
    events: set[str] = field(default_factory=set)  # for namespace -> namespace event edges


@dataclass
class SystemMap:
    nodes: dict[str, Node]
    edges: list[Edge]
    hidden_edges: int = 0  # below the count threshold
    grouped: bool = False

    def dot(self) -> str:
        return to_dot(self)


def _worse(a: str | None, b: str | None) -> str | None:
    return a if SEVERITY_RANK.get(a or "", 0) >= SEVERITY_RANK.get(b or "", 0) else b


def _is_str(v) -> bool:
    return isinstance(v, str) and v != ""


def _finding_marks(findings: pd.DataFrame):
    """(severity by service, by event, by service pair, by (event, service)) from the findings."""
    by_service: dict[str, str] = {}
    by_event: dict[str, str] = {}
    by_pair: dict[tuple[str, str, str | None], str] = {}
    by_event_service: dict[tuple[str, str], str] = {}
    if findings is None or findings.empty:
        return by_service, by_event, by_pair, by_event_service
    for r in findings.to_dict("records"):
        sev = r["severity"]
        services = [s for s in (r.get("services") or []) if _is_str(s)]
        event = r["event"] if _is_str(r.get("event")) else None
        for s in services:
            by_service[s] = _worse(by_service.get(s), sev)
            if event:
                by_event_service[(event, s)] = _worse(by_event_service.get((event, s)), sev)
        if event:
            by_event[event] = _worse(by_event.get(event), sev)
        for a, b in pairwise(services):
            for key in ((a, b, event), (b, a, event)):
                by_pair[key] = _worse(by_pair.get(key), sev)
    return by_service, by_event, by_pair, by_event_service


def build(services: pd.DataFrame, edges: pd.DataFrame, findings: pd.DataFrame | None = None, *,
          min_count: int = 1, focus: str | None = None, group: bool = False) -> SystemMap:
    """The map over `data.system_map_services` / `data.system_map_edges` rows.

    min_count hides hand-offs seen fewer times; focus (a service name, or part of one) keeps the
    matching services, their direct peers and the events between them; group folds services into
    their namespace (ignored with a focus: a neighbourhood is small).
    """
    by_service, by_event, by_pair, by_event_service = _finding_marks(findings)
    info = {r["service"]: r for r in services.to_dict("records")} if not services.empty else {}
    rows = edges.to_dict("records") if not edges.empty else []
    total = len(rows)
    rows = [r for r in rows if int(r["count"]) >= min_count]
    hidden = total - len(rows)

    if focus:
        needle = focus.strip().lower()
        matched = {s for s in info if needle in s.lower()}
        # Events touching a matched service pull in that event's other producers and consumers.
        events = {r["event"] for r in rows if r["via"] == "event" and _is_str(r["event"])
                  and (r["src_service"] in matched or r["dst_service"] in matched)}
        rows = [r for r in rows if r["src_service"] in matched or r["dst_service"] in matched
                or (r["via"] == "event" and r["event"] in events)]
        group = False
    else:
        matched = set()

    nodes: dict[str, Node] = {}

    def service_node(name: str) -> str:
        r = info.get(name, {})
        virtual = bool(r.get("virtual", False))
        if group:
            ns = EXTERNAL if virtual else (r.get("namespace") if _is_str(r.get("namespace")) else NO_NAMESPACE)
            nid = "ns:" + ns
            node = nodes.setdefault(nid, Node(nid, ns, "namespace"))
            if name not in node.members:
                node.members.append(name)
                node.spans += int(r.get("spans", 0) or 0)
                node.severity = _worse(node.severity, by_service.get(name))
                node.workflows |= set(r.get("workflows") or [])
            return nid
        nid = "svc:" + name
        if nid not in nodes:
            nodes[nid] = Node(nid, name, "virtual" if virtual else "service",
                              set(r.get("workflows") or []), by_service.get(name),
                              int(r.get("spans", 0) or 0))
        return nid

    def event_node(name: str) -> str:
        nid = "ev:" + name
        if nid not in nodes:
            nodes[nid] = Node(nid, name, "event", severity=by_event.get(name))
        return nid

    out: dict[tuple[str, str, str], Edge] = {}

    def add(src: str, dst: str, via: str, count: int, inferred: bool, sev: str | None, event: str | None,
            combine=lambda a, b: a + b) -> None:
        key = (src, dst, via)
        e = out.get(key)
        if e is None:
            out[key] = Edge(src, dst, via, count, inferred, sev, {event} if event else set())
        else:
            e.count = combine(e.count, count)
            e.inferred = e.inferred and inferred
            e.severity = _worse(e.severity, sev)
            if event:
                e.events.add(event)

    for r in rows:
        src, dst, via, count = r["src_service"], r["dst_service"], r["via"], int(r["count"])
        event = r["event"] if _is_str(r.get("event")) else None
        wfs = set(r.get("workflows") or [])
        inferred = bool(r.get("inferred"))
        pair_sev = (_worse(by_pair.get((src, dst, None)), by_pair.get((src, dst, event)))
                    if _is_str(src) and _is_str(dst) else None)
        if via != "event" or event is None:
            if not (_is_str(src) and _is_str(dst)):
                continue
            s, d = service_node(src), service_node(dst)
            if s != d:
                add(s, d, "call", count, inferred, by_pair.get((src, dst, None)), None)
            elif group:
                nodes[s].internal += count
            continue
        dead = bool(r.get("dst_virtual"))
        if group:
            if not _is_str(src) or dead:
                continue  # no producer / no consumer: drawn only ungrouped, as the event node's note
            s, d = service_node(src), service_node(dst)
            if s != d:
                add(s, d, "event", count, inferred, _worse(pair_sev, by_event_service.get((event, dst))), event)
            else:
                nodes[s].internal += count
            continue
        ev = event_node(event)
        nodes[ev].workflows |= wfs
        if _is_str(src):
            s = service_node(src)
            nodes[s].workflows |= wfs
            # Producer -> event: the sends, about the busiest consumer's count (each consumer gets them all).
            add(s, ev, "event", count, inferred, _worse(pair_sev, by_event_service.get((event, src))), None,
                combine=max)
        else:
            nodes[ev].note = "no producer seen"
        if dead:
            nodes[ev].note = "no consumer"
        elif _is_str(dst):
            d = service_node(dst)
            add(ev, d, "event", count, inferred, _worse(pair_sev, by_event_service.get((event, dst))), None)

    # A matched service with no hand-off left is still shown (and, ungrouped, any isolated service).
    for name in sorted(matched):
        service_node(name)
    return SystemMap(nodes, list(out.values()), hidden, group)


def _q(text: str) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def node_url(n: Node) -> str:
    """Where clicking the node goes: its workflow when it has one, else the map with it selected
    (the list of its workflows under the graph). Relative to the app's pages."""
    if len(n.workflows) == 1 and n.kind != "namespace":
        return "workflow?" + urlencode({"workflow": next(iter(n.workflows))})
    return "system_map?" + urlencode({"node": n.id})


def to_dot(m: SystemMap) -> str:
    # A big map is scaled down to the page: larger fonts keep its labels legible after scaling.
    font = 12 if len(m.nodes) <= 14 else 17
    lines = ["digraph G {", "  rankdir=LR; nodesep=0.25; ranksep=0.7; bgcolor=transparent;",
             ('  node [shape=box, style="rounded,filled", fillcolor="#eef3fb", color="#8aa4c8", '
              f'fontname="Helvetica", fontsize={font}];'),
             f'  edge [fontname="Helvetica", fontsize={font - 2}, arrowsize=0.6, color="#7a8797"];']
    ids = {nid: f"n{i}" for i, nid in enumerate(sorted(m.nodes))}
    for nid in sorted(m.nodes):
        n = m.nodes[nid]
        attrs = []
        if n.kind == "namespace":
            if n.name == EXTERNAL:
                label = f"{len(n.members)} uninstrumented peers"
                attrs += ['style="rounded,filled,dashed"', 'fillcolor="#e6e6e6"', 'color="#9e9e9e"']
            else:
                label = (f"{n.name}\n{len(n.members)} services · {n.spans:,} spans"
                         + (f"\n{n.internal:,} hand-offs inside" if n.internal else ""))
                attrs.append("shape=box3d")
        elif n.kind == "event":
            label = n.name + (f"\n({n.note})" if n.note else "")
            attrs += ["shape=ellipse", 'style="filled"', 'fillcolor="#fff8e1"', 'color="#c9a227"']
        elif n.kind == "virtual":
            label = f"{n.name}\n(uninstrumented)"
            attrs += ['style="rounded,filled,dashed"', 'fillcolor="#e6e6e6"', 'color="#9e9e9e"']
        else:
            label = f"{n.name}\n{n.spans:,} spans"
        if n.severity:
            attrs += [f'fillcolor="{SEVERITY_FILLS[n.severity]}"', f'color="{SEVERITY_COLORS[n.severity]}"',
                      "penwidth=2"]
        attrs += [f"URL={_q(node_url(n))}", 'target="_top"',
                  f"tooltip={_q(f'{n.name}: {len(n.workflows)} workflow(s), click to open')}"]
        lines.append(f"  {ids[nid]} [label={_q(label)}{''.join(', ' + a for a in attrs)}];")
    biggest = max((e.count for e in m.edges), default=1)
    labelled = len(m.edges) <= LABEL_EDGES_UP_TO
    for e in sorted(m.edges, key=lambda e: (e.src, e.dst, e.via)):
        width = 1.0 + 2.5 * math.log1p(e.count) / math.log1p(max(biggest, 1))
        style = "dotted" if e.inferred else ("dashed" if e.via == "event" else "solid")
        attrs = [f"style={style}", f"penwidth={width:.2f}"]
        label = f"×{e.count:,}"
        if e.events:
            label = f"{len(e.events)} event{'s' if len(e.events) != 1 else ''} ×{e.count:,}"
        if labelled:
            attrs.append(f"label={_q(label)}")
        attrs.append(f"tooltip={_q(f'{m.nodes[e.src].name} → {m.nodes[e.dst].name} {label}')}")
        if e.severity:
            color = SEVERITY_COLORS[e.severity]
            attrs += [f'color="{color}"', f'fontcolor="{color}"']
        lines.append(f"  {ids[e.src]} -> {ids[e.dst]} [{', '.join(attrs)}];")
    lines.append("}")
    return "\n".join(lines)


def threshold_for(edges: pd.DataFrame, max_edges: int) -> int:
    """The smallest count threshold that leaves at most `max_edges` hand-offs (1 if all fit)."""
    if edges.empty or len(edges) <= max_edges:
        return 1
    counts = sorted((int(c) for c in edges["count"]), reverse=True)
    return counts[max_edges] + 1
