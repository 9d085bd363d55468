"""Stage 3, clock skew: estimate each service's clock offset and correct span times.

Assumptions (as Jaeger's clock-skew adjuster): a synchronous child lies within its parent, and
network latency is about the same on the way in and out, so the child sits in the middle of its
parent; a consumer starts after its producer started. Offsets are estimated per pair of services
from the cross-service parent -> child calls (median of the centring shift), propagated along a
maximum spanning tree from a reference service (the one with most spans), and then only corrected
where asynchronous evidence is violated (a consumer seen starting before its producer): an async
hop alone cannot tell a slow queue from a slow clock, so a positive lag is left as it is.
Evidence implying an offset over MAX_PLAUSIBLE_OFFSET_NS (a day) is left out: that is a broken
timestamp (a span at epoch 0, a unit mix-up), not a skewed clock, and one such span must not shift
a whole service by decades. Corrected times saturate at the BIGINT range instead of overflowing.
Reads `span_labels`, `parent_edges` and `span_links`; writes `clock_offsets`. `corrected_steps_sql`
is the one definition of corrected times (`start_adj`/`end_adj`) that later stages select.
"""

from __future__ import annotations

import duckdb
import networkx as nx
import pyarrow as pa

MAX_PLAUSIBLE_OFFSET_NS = 24 * 3600 * 10**9
INT64_MAX = 2**63 - 1


def estimate_offsets(con: duckdb.DuckDBPyConnection) -> dict[str, float]:
    """Offsets in ns by service (observed = true + offset), from `span_labels` and `parent_edges`."""
    sync_pairs = con.execute(
        """
        SELECT p.service, c.service,
               median((c.start_ns - p.start_ns) / 2.0 + (c.end_ns - p.end_ns) / 2.0) AS shift,
               count(*) AS n
        FROM parent_edges e
        JOIN span_labels p ON p.trace_id = e.src_trace_id AND p.span_id = e.src_span_id
        JOIN span_labels c ON c.trace_id = e.dst_trace_id AND c.span_id = e.dst_span_id
        WHERE e.via = 'call' AND p.service <> c.service
          AND p.start_ns IS NOT NULL AND c.start_ns IS NOT NULL
          AND p.end_ns >= p.start_ns AND c.end_ns >= c.start_ns
          AND abs(c.start_ns - p.start_ns) < $max_offset AND abs(c.end_ns - p.end_ns) < $max_offset
        GROUP BY ALL ORDER BY ALL
        """,
        {"max_offset": MAX_PLAUSIBLE_OFFSET_NS},
    ).fetchall()
    async_bounds = con.execute(
        """
        WITH hops AS (
            SELECT e.src_trace_id AS pt, e.src_span_id AS ps, e.dst_trace_id AS ct, e.dst_span_id AS cs
            FROM parent_edges e WHERE e.via = 'event'
            UNION ALL   -- span links between a producer and a consumer, whichever holds the link
            SELECT l.linked_trace_id, l.linked_span_id, l.trace_id, l.span_id FROM span_links l
            UNION ALL
            SELECT l.trace_id, l.span_id, l.linked_trace_id, l.linked_span_id FROM span_links l
        )
        SELECT p.service, c.service, min(c.start_ns - p.start_ns) AS bound, count(*) AS n
        FROM hops h
        JOIN span_labels p ON p.trace_id = h.pt AND p.span_id = h.ps AND p.role = 'producer'
        JOIN span_labels c ON c.trace_id = h.ct AND c.span_id = h.cs AND c.role = 'consumer'
        WHERE p.service <> c.service AND c.start_ns - p.start_ns > -$max_offset
        GROUP BY ALL ORDER BY ALL
        """,
        {"max_offset": MAX_PLAUSIBLE_OFFSET_NS},
    ).fetchall()
    span_counts = dict(con.execute("SELECT service, count(*) FROM span_labels GROUP BY ALL").fetchall())
    return solve_offsets(sync_pairs, async_bounds, span_counts)


def solve_offsets(
    sync_pairs: list[tuple[str, str, float, int]],
    async_bounds: list[tuple[str, str, float, int]],
    span_counts: dict[str, int],
) -> dict[str, float]:
    """Offsets (ns) from pairwise shifts (child - parent) and async upper bounds (consumer - producer).

    Parameters
    ----------
    sync_pairs: (parent service, child service, median centring shift, pair count)
    async_bounds: (producer service, consumer service, min start difference, pair count)
    span_counts: spans by service; the service with most spans is the reference (offset 0)
    """
    graph = nx.Graph()
    graph.add_nodes_from(sorted(span_counts))  # sorted, as the rows are: ties in the spanning tree
    # are then broken the same way on every run
    for parent, child, shift, n in sync_pairs:
        # Combine both directions of a pair into one undirected estimate of off[b] - off[a].
        a, b, d = (parent, child, shift) if parent < child else (child, parent, -shift)
        if graph.has_edge(a, b):
            data = graph[a][b]
            total = data["n"] + n
            data["d"] = (data["d"] * data["n"] + d * n) / total
            data["n"] = total
        else:
            graph.add_edge(a, b, d=d, n=n, lo=a)
    offsets: dict[str, float] = {}
    components = sorted(nx.connected_components(graph), key=lambda c: -sum(span_counts.get(s, 0) for s in c))
    component_of: dict[str, int] = {}
    for index, component in enumerate(components):
        root = max(component, key=lambda s: (span_counts.get(s, 0), s))
        # the component in the graph's (sorted) order: a subgraph view of a small component
        # iterates the set of its nodes, whose order changes with every process (string hashing),
        # and with it the tree where pair counts tie, and the offsets
        sub = nx.Graph()
        sub.add_nodes_from(s for s in graph if s in component)
        sub.add_edges_from((u, v, d) for u, v, d in graph.edges(data=True) if u in component)
        tree = nx.maximum_spanning_tree(sub, weight="n")
        offsets[root] = 0.0
        for u, v in nx.bfs_edges(tree, root):
            data = graph[u][v]
            d = data["d"] if data["lo"] == u else -data["d"]  # d = off[v] - off[u]
            offsets[v] = offsets[u] + d
        for service in component:
            component_of[service] = index
    _place_components_by_async_bounds(offsets, component_of, async_bounds)
    return offsets


def _place_components_by_async_bounds(
    offsets: dict[str, float], component_of: dict[str, int], async_bounds: list[tuple[str, str, float, int]]
) -> None:
    """Shift whole sync components (never splitting them) to respect async bounds.

    The bounds give an interval for the component's shift; the shift is the point of that interval
    nearest to zero: the least correction that ends every violation (a consumer seen starting
    before its producer). Queue lag cannot be told from a slow clock, so the residual error is the
    smallest minimum lag of the hops involved; sync calls (centring) give the precise estimates.
    """
    placed = {0}
    remaining = set(component_of.values()) - placed
    while remaining:
        best = None
        for comp in sorted(remaining):
            lo, hi = float("-inf"), float("inf")
            for producer, consumer, bound, _n in async_bounds:
                cp, cc = component_of.get(producer), component_of.get(consumer)
                if cc == comp and cp in placed:  # off[consumer] - off[producer] <= bound
                    hi = min(hi, offsets[producer] + bound - offsets[consumer])
                elif cp == comp and cc in placed:  # off[producer] >= off[consumer] - bound
                    lo = max(lo, offsets[consumer] - bound - offsets[producer])
            if lo > float("-inf") or hi < float("inf"):
                best = (comp, lo, hi)
                break
        if best is None:
            # Nothing left is tied by an event to what is placed: the rest is another system (one
            # store can hold several). Its largest component becomes an anchor of its own (offsets
            # relative to its root), so the components tied to it are still corrected.
            anchor = min(remaining)  # components are numbered largest first
            placed.add(anchor)
            remaining.discard(anchor)
            continue
        comp, lo, hi = best
        if lo > hi:  # contradictory evidence: split the difference
            shift = (lo + hi) / 2
        else:
            shift = min(max(0.0, lo), hi)
        for service, c in component_of.items():
            if c == comp:
                offsets[service] += shift
        placed.add(comp)
        remaining.discard(comp)


def store_offsets(con: duckdb.DuckDBPyConnection, offsets: dict[str, float]) -> None:
    """Write `clock_offsets` (one row per service)."""
    con.execute("CREATE OR REPLACE TABLE clock_offsets (service VARCHAR, offset_ns BIGINT)")
    if offsets:  # one row per service, but there can be thousands: Arrow, not executemany
        rows = sorted(offsets.items())
        table = pa.table({"service": pa.array([r[0] for r in rows], type=pa.string()),
                          "offset_ns": pa.array([round(r[1]) for r in rows], type=pa.int64())})
        con.register("_clock_offset_rows", table)
        try:
            con.execute("INSERT INTO clock_offsets SELECT service, offset_ns FROM _clock_offset_rows")
        finally:
            con.unregister("_clock_offset_rows")


def corrected_steps_sql(labels: str = "span_labels") -> str:
    """SELECT of every column of `labels` plus `start_adj`/`end_adj`: t - offset, saturating (a span
    near the top of the BIGINT range minus a negative offset stays there). Needs `clock_offsets`."""
    return f"""
        SELECT s.*,
               least(s.start_ns, {INT64_MAX} + least(coalesce(o.offset_ns, 0), 0)) - coalesce(o.offset_ns, 0)
                   AS start_adj,
               least(s.end_ns, {INT64_MAX} + least(coalesce(o.offset_ns, 0), 0)) - coalesce(o.offset_ns, 0)
                   AS end_adj
        FROM {labels} s LEFT JOIN clock_offsets o ON o.service = s.service
    """


def correct_clock_skew(con: duckdb.DuckDBPyConnection) -> dict[str, float]:
    offsets = estimate_offsets(con)
    store_offsets(con, offsets)
    return offsets
