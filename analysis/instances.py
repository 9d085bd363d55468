"""Stage 4, workflow instances: traces tied together by causal edges form one instance.

A consumer that starts a new trace with a link to its producer (the OpenTelemetry messaging
default for batch consumers) belongs to its producer's instance; so does one tied only by message
id or time window. Spans of one trace always share an instance. The union-find runs over trace
pairs (one row per cross-trace edge), never over spans, so it stays small at millions of spans.
An instance's entry is its earliest root span (no incoming causal edge); its step is the instance's
workflow type (`workflow_id`).
Reads `span_labels`, `causal_edges`, `clock_offsets`; writes `trace_instances` (trace_id ->
instance_id = the smallest trace id of the component) and `instances` (one row per instance: times,
counts, entry trace and workflow).
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from choreoscope.analysis.clock_skew import corrected_steps_sql


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
    """Create `trace_instances` and `instances`."""
    _build_trace_instances(con)
    _build_instance_table(con)


def _build_trace_instances(con: duckdb.DuckDBPyConnection) -> None:
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
            FROM (SELECT DISTINCT trace_id FROM span_labels) t
            LEFT JOIN _stitched s ON s.trace_id = t.trace_id
            """
        )
    finally:
        con.unregister("_stitched")


def _build_instance_table(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        f"""
        CREATE OR REPLACE TABLE instances AS
        WITH steps AS (
            SELECT s.trace_id, s.span_id, s.step_id, s.service, s.is_error, s.start_adj, s.end_adj,
                   ti.instance_id,
                   NOT EXISTS (SELECT 1 FROM causal_edges e
                               WHERE e.dst_trace_id = s.trace_id AND e.dst_span_id = s.span_id) AS is_root
            FROM ({corrected_steps_sql()}) s JOIN trace_instances ti USING (trace_id)
        ),
        ranked AS (
            SELECT instance_id, step_id, trace_id,
                   row_number() OVER (PARTITION BY instance_id ORDER BY is_root DESC, start_adj, trace_id, span_id) AS rn
            FROM steps
        ),
        agg AS (
            SELECT instance_id, min(start_adj) AS start_adj, max(end_adj) AS end_adj, count(*) AS spans,
                   count(DISTINCT trace_id) AS traces, count(DISTINCT service) AS services,
                   count(*) FILTER (WHERE is_error) AS errors
            FROM steps GROUP BY instance_id
        )
        SELECT agg.*, ranked.step_id AS workflow_id, ranked.trace_id AS entry_trace_id
        FROM agg JOIN ranked ON ranked.instance_id = agg.instance_id AND ranked.rn = 1
        """
    )
