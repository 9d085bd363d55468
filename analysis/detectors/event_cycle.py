"""event_cycle: event hand-offs that loop back through the same services.

Detects: cycles in the event relay graph — nodes are events (destinations), an edge E1 -> E2
means a service, while handling E1, produced E2 — found with networkx `simple_cycles` over that
small aggregated graph. A loop means a message can travel around the same services again
(re-processing, ping-pong between two handlers) with no single place that decides when it stops.
A request/reply pair (A sends a command, B answers with a result) is not a cycle: the result is a
different event than the command. Nor is a retry that republishes the consumed message itself (same message
id and destination, Celery's `self.retry`): `event_relays` leaves it out, it is a redelivery of
the same message (`deliveries`, the retry detector's evidence).

Assumption: a relay is a producer span under a consumer span of the same service and trace;
only relays seen in real instances count, and the cycle is reported with the services in the order
the messages travel, starting at the service that sends the event through which messages
enter the loop (else at the service that relays most often in it).

Evidence: the events in the cycle, the relaying service of each hand-off, the instances where the
loop closed (its closing hand-off followed the rest in one instance), example traces.
"""

from __future__ import annotations

import networkx as nx

from choreoscope.analysis.detectors.query_helpers import rows
from choreoscope.analysis.findings import Finding

MAX_CYCLES = 200

SQL = """
SELECT event_in, event_out, service, count(*) AS relays, count(DISTINCT instance_id) AS instances,
       list(DISTINCT trace_id ORDER BY trace_id)[1:5] AS trace_ids
FROM event_relays GROUP BY ALL
"""

# Instances in which every hop of one cycle occurred (hops given as a VALUES list).
CLOSED_SQL = """
SELECT count(*) AS n, list(instance_id ORDER BY instance_id)[1:3] AS examples FROM (
    SELECT r.instance_id FROM event_relays r JOIN (VALUES {values}) h(event_in, event_out, service)
      ON r.event_in = h.event_in AND r.event_out = h.event_out AND r.service = h.service
    GROUP BY r.instance_id HAVING count(DISTINCT (r.event_in, r.event_out)) = {hops})
"""


def relay_graph(relays: list[dict]) -> nx.MultiDiGraph:
    """Events as nodes; one edge per (event in, event out, relaying service)."""
    graph = nx.MultiDiGraph()
    for r in relays:
        graph.add_edge(r["event_in"], r["event_out"], service=r["service"], relays=r["relays"],
                       instances=r["instances"], trace_ids=list(r["trace_ids"] or []))
    return graph


def _rotate(services: list[str]) -> list[str]:
    """Canonical order: start at the service appearing most often (then alphabetically first)."""
    start = min(range(len(services)), key=lambda i: (-services.count(services[i]), services[i], i))
    return services[start:] + services[:start]


def _entry_index(graph: nx.MultiDiGraph, cycle: list[str]) -> int | None:
    """Index of the event through which messages enter the loop from outside, if any."""
    inside = set(cycle)
    entries = [k for k, event in enumerate(cycle) if any(p not in inside for p in graph.predecessors(event))]
    return min(entries, key=lambda i: (cycle[i], i)) if entries else None


def _closed_in(con, hops: list[tuple[str, str, str]]) -> int:
    values = ", ".join("(?, ?, ?)" for _ in hops)
    params = [x for hop in hops for x in hop]
    return rows(con, CLOSED_SQL.format(values=values, hops=len(hops)), params)[0]["n"]


def detect(con) -> list[Finding]:
    return _cycles(con, relay_graph(rows(con, SQL)))


def _cycles(con, graph: nx.MultiDiGraph) -> list[Finding]:
    findings: dict[tuple, Finding] = {}
    for n, cycle in enumerate(nx.simple_cycles(nx.DiGraph(graph))):
        if n >= MAX_CYCLES:
            break
        k = _entry_index(graph, cycle)
        if k is not None:   # start at the hop that sends messages into the loop
            cycle = cycle[k - 1:] + cycle[:k - 1]
        hops = list(zip(cycle, cycle[1:] + cycle[:1]))
        edges = []
        for a, b in hops:
            # the relaying service with the most instances on this hop
            edges.append(max(graph.get_edge_data(a, b).values(), key=lambda d: (d["instances"], d["service"])))
        services_in_order = [d["service"] for d in edges]
        closed = _closed_in(con, [(a, b, d["service"]) for (a, b), d in zip(hops, edges)])
        if not closed:
            continue   # every hop occurs, but never all in one instance
        ordered = list(dict.fromkeys(services_in_order if k is not None else _rotate(services_in_order)))
        key = tuple(sorted(set(ordered)))
        events = cycle[1:] + cycle[:1]   # from the event entering the loop
        confidence = min(0.95, 0.6 + 0.05 * closed)
        if key in findings and findings[key].confidence >= confidence:
            continue
        # from the event entering the loop: e1 -(service relaying it)-> e2 ...
        route = events[0] + "".join(f" -({d['service']})-> {b}" for (_, b), d in zip(hops[1:] + hops[:1],
                                                                                    edges[1:] + edges[:1]))
        findings[key] = Finding(
            kind="event_cycle", services=ordered, confidence=confidence, severity="warning",
            summary=(f"Events loop back through {', '.join(ordered)}: {route}, closed in "
                     f"{closed} instances; nothing but the handlers' own logic stops the loop."),
            recommendation=(
                "Make the loop explicit and bounded: give one service (an orchestrator, or the service"
                " that decides to repeat) the decision, a retry/iteration counter in the message and a"
                " limit; otherwise a misjudgement in one handler keeps messages circling."
            ),
            evidence={"events": events, "relays": [{"from": a, "to": b, "service": d["service"],
                                                    "count": d["relays"]} for (a, b), d in zip(hops, edges)],
                      "instances": closed},
            trace_ids=sorted({t for d in edges for t in d["trace_ids"]})[:5],
        )
    return list(findings.values())
