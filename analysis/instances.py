"""Stage 4, workflow instances: traces tied together by causal edges form one instance.

A consumer that starts a new trace with a link to its producer (the OpenTelemetry messaging
default for batch consumers) belongs to its producer's instance; so does one tied only by message
id or time window. Spans of one trace always share an instance. The union-find runs over trace
pairs (one row per cross-trace edge), never over spans, so it stays small at millions of spans.
Writes `trace_instances` (trace_id -> instance_id = the smallest trace id of the component).
"""

from __future__ import annotations

import duckdb
import pyarrow as pa


def _find(parent: dict[str, str], x: str) -> str:
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:
        parent[x], x = root, parent[x]
    return root


def connected_traces(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """Map each trace id in `pairs` to its component's smallest trace id (union-find)."""
    parent: dict[str, str] = {}
    for a, b in pairs:
        parent.setdefault(a, a)
        parent.setdefault(b, b)
        ra, rb = _find(parent, a), _find(parent, b)
        if ra != rb:
            if ra < rb:
                parent[rb] = ra
            else:
                parent[ra] = rb
    return {t: _find(parent, t) for t in parent}


def build_instances(con: duckdb.DuckDBPyConnection) -> None:
    pairs = con.execute(
        """
        SELECT DISTINCT src_trace_id, dst_trace_id FROM causal_edges
        WHERE src_trace_id <> dst_trace_id
        """
    ).fetchall()
    mapping = connected_traces(pairs)
    table = pa.table(
        {"trace_id": list(mapping.keys()), "instance_id": list(mapping.values())},
        schema=pa.schema([("trace_id", pa.string()), ("instance_id", pa.string())]),
    )
    con.register("_stitched", table)
    try:
        con.execute(
            """
            CREATE OR REPLACE TABLE trace_instances AS
            SELECT t.trace_id, coalesce(s.instance_id, t.trace_id) AS instance_id
            FROM (SELECT DISTINCT trace_id FROM span_steps) t
            LEFT JOIN _stitched s ON s.trace_id = t.trace_id
            """
        )
    finally:
        con.unregister("_stitched")
