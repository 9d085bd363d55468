"""Stage: workflow types and their models.

Instances with the same entry step (see the instances stage) form one workflow type. Per workflow: steps and step-to-step edges with counts and
latency, uninstrumented peers as virtual steps, variants (distinct edge sets) and structure metrics.
Reads `span_steps`, `span_edges`, `unanswered_spans`, `instances`; writes `workflow_edges`,
`workflow_steps`, `instance_variants`, `workflow_variants` and `workflows` (the pattern stage
answers the pattern questions in a table of its own).

Edge latency: for an event, the consumer's start minus the producer's start (the send; a send
span may end after the consumer started, once the broker acknowledged); for a call, the callee's
duration (none from a span that ends before it starts: a broken clock, not a negative latency).
"""

from __future__ import annotations

import duckdb
import networkx as nx
import pyarrow as pa

from choreoscope.collector import store

WORKFLOW_ROW_TYPES = {c: pa.int64() for c in ("instances", "services", "events", "max_depth", "cycles",
                                                 "fan_out_max", "first_start", "last_end")}


# Every step-to-step edge of every instance (the edges' `joined` and the virtual peers'
# `unanswered`) as `alle`, with `edge_key`, a hash of the workflow edge it counts towards.
_EDGE_ROWS = """
        WITH joined AS (
            SELECT workflow_id, instance_id, src_step, dst_step, src_service, dst_service, via, evidence,
                   inferred, confidence, event,
                   CASE WHEN via = 'event' THEN dst_start_adj - src_start_adj
                        WHEN dst_end_adj >= dst_start_adj THEN dst_end_adj - dst_start_adj END / 1e6 AS latency_ms
            FROM span_edges
            WHERE src_step <> dst_step
        ),
        unanswered AS (   -- calls and sends with no instrumented counterpart: virtual peers
            SELECT s.workflow_id, s.instance_id, s.step_id AS src_step,
                   CASE WHEN s.role = 'producer' THEN s.messaging_destination || ' virtual ' || s.messaging_destination
                        ELSE coalesce(s.peer, 'unknown peer') || ' virtual ' || s.operation END AS dst_step,
                   s.service AS src_service,
                   CASE WHEN s.role = 'producer' THEN s.messaging_destination
                        ELSE coalesce(s.peer, 'unknown peer') END AS dst_service,
                   CASE WHEN s.role = 'producer' THEN 'event' ELSE 'call' END AS via,
                   'unanswered' AS evidence, false AS inferred, 1.0::DOUBLE AS confidence,
                   CASE WHEN s.role = 'producer' THEN s.messaging_destination END AS event,
                   CASE WHEN s.end_adj >= s.start_adj THEN (s.end_adj - s.start_adj) / 1e6 END AS latency_ms
            FROM unanswered_spans s
        ),
        alle AS (SELECT *, {edge_key} AS edge_key FROM (SELECT * FROM joined UNION ALL SELECT * FROM unanswered) e)
"""
_EDGE_KEY = "hash(workflow_id, src_step, dst_step, via, event)"
_EDGE_GROUP = "workflow_id, src_step, dst_step, via, event"
_EDGE_AGGREGATES = """any_value(src_service) AS src_service, any_value(dst_service) AS dst_service, count(*) AS count,
               bool_and(inferred) AS inferred, max(confidence) AS confidence,
               list(DISTINCT evidence ORDER BY evidence) AS evidence,
               quantile_cont(latency_ms, 0.5) AS latency_p50_ms, quantile_cont(latency_ms, 0.95) AS latency_p95_ms"""
_EDGE_COLUMNS = ("workflow_id, src_step, dst_step, src_service, dst_service, via, event, count, instances, inferred, "
                 "confidence, evidence, latency_p50_ms, latency_p95_ms")


def _build_workflow_edges(con: duckdb.DuckDBPyConnection) -> None:
    """`workflow_edges`. Its distinct instances are counted per `edge_key`: grouping an integer and
    an instance instead of five strings and one took half the time at 1M spans. Should two edges
    share a key, they are counted per edge instead."""
    rows = _EDGE_ROWS.format(edge_key=_EDGE_KEY)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _wf_edges AS
        {rows},
        grouped AS (SELECT {_EDGE_GROUP}, any_value(edge_key) AS edge_key, {_EDGE_AGGREGATES}
                    FROM alle GROUP BY {_EDGE_GROUP}),
        counted AS (SELECT edge_key, count(DISTINCT instance_id) AS instances FROM alle GROUP BY edge_key)
        SELECT g.*, c.instances FROM grouped g JOIN counted c ON c.edge_key = g.edge_key""")
    if store.scalar(con, "SELECT count(DISTINCT edge_key) = count(*) FROM _wf_edges"):
        con.execute(f"CREATE OR REPLACE TABLE workflow_edges AS SELECT {_EDGE_COLUMNS} FROM _wf_edges")
    else:
        con.execute(f"""
            CREATE OR REPLACE TABLE workflow_edges AS
            {rows}
            SELECT {_EDGE_COLUMNS} FROM (
                SELECT {_EDGE_GROUP}, count(DISTINCT instance_id) AS instances, {_EDGE_AGGREGATES}
                FROM alle GROUP BY {_EDGE_GROUP}) e""")
    con.execute("DROP TABLE _wf_edges")


def build_workflows(con: duckdb.DuckDBPyConnection) -> None:
    """Create the workflow tables from `span_steps`, `span_edges`, `unanswered_spans`, `instances`."""
    _build_workflow_edges(con)
    con.execute(
        """
        CREATE OR REPLACE TABLE workflow_steps AS
        SELECT workflow_id, step_id, any_value(service) AS service, any_value(role) AS role,
               any_value(operation) AS operation, count(*) AS count, count(DISTINCT instance_id) AS instances,
               count(*) FILTER (WHERE is_error) AS errors, false AS virtual
        FROM span_steps GROUP BY workflow_id, step_id
        UNION ALL
        SELECT workflow_id, dst_step, any_value(dst_service), 'virtual',
               any_value(coalesce(event, regexp_extract(dst_step, ' virtual (.*)$', 1))),
               sum(count)::BIGINT, max(instances), 0, true
        FROM workflow_edges WHERE 'unanswered' = ANY(evidence)
        GROUP BY workflow_id, dst_step
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TABLE instance_variants AS
        WITH edge_sets AS (  -- grouped by the instance alone, then joined: a third faster than grouped after the join
            SELECT instance_id, string_agg(DISTINCT src_step || ' > ' || dst_step, ' | '
                                           ORDER BY src_step || ' > ' || dst_step) AS edges
            FROM span_edges WHERE dst_step <> src_step GROUP BY instance_id)
        SELECT i.instance_id, i.workflow_id, md5(coalesce(v.edges, i.workflow_id)) AS variant_id
        FROM instances i LEFT JOIN edge_sets v ON v.instance_id = i.instance_id
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TABLE workflow_variants AS
        SELECT i.workflow_id, v.variant_id, count(*) AS count,
               list(i.entry_trace_id ORDER BY i.start_adj, i.entry_trace_id)[1:3] AS example_trace_ids,
               sum(i.errors) AS errors
        FROM instances i JOIN instance_variants v USING (instance_id) GROUP BY i.workflow_id, v.variant_id
        """
    )
    _build_workflow_table(con)


def _build_workflow_table(con: duckdb.DuckDBPyConnection) -> None:
    rows = con.execute(
        """
        SELECT i.workflow_id, any_value(st.service), any_value(st.operation), any_value(st.role),
               count(*) AS instances, min(i.start_adj), max(i.end_adj)
        FROM instances i
        JOIN (SELECT DISTINCT workflow_id, step_id, service, operation, role FROM workflow_steps) st
          ON st.workflow_id = i.workflow_id AND st.step_id = i.workflow_id
        GROUP BY i.workflow_id
        """
    ).fetchall()
    edges = con.execute(
        "SELECT workflow_id, src_step, dst_step, via, event FROM workflow_edges"
    ).fetchall()
    services = dict(
        con.execute(
            "SELECT workflow_id, list(DISTINCT service ORDER BY service) FROM workflow_steps "
            "WHERE NOT virtual GROUP BY ALL"
        ).fetchall()
    )
    graphs: dict[str, nx.DiGraph] = {}
    events: dict[str, set] = {}
    for wf, src, dst, via, event in edges:
        graphs.setdefault(wf, nx.DiGraph()).add_edge(src, dst)
        if event:
            events.setdefault(wf, set()).add(event)
    out = []
    for wf, service, operation, role, n, start, end in rows:
        metrics = structure_metrics(graphs.get(wf, nx.DiGraph()))
        out.append(
            (wf, f"{operation} ({service})", service, operation, role, n, len(services.get(wf, [])),
             len(events.get(wf, ())), metrics["max_depth"], metrics["cycles"], metrics["fan_out_max"],
             start, end)
        )
    con.execute(
        """
        CREATE OR REPLACE TABLE workflows (
            workflow_id VARCHAR, name VARCHAR, entry_service VARCHAR, entry_operation VARCHAR,
            entry_role VARCHAR, instances BIGINT, services INTEGER, events INTEGER, max_depth INTEGER,
            cycles INTEGER, fan_out_max INTEGER, first_start BIGINT, last_end BIGINT)
        """
    )
    if out:  # one row per workflow type, but there can be thousands: Arrow, not executemany
        columns = ["workflow_id", "name", "entry_service", "entry_operation", "entry_role", "instances",
                   "services", "events", "max_depth", "cycles", "fan_out_max", "first_start", "last_end"]
        rows_table = pa.table({c: pa.array([r[i] for r in out], type=WORKFLOW_ROW_TYPES.get(c, pa.string()))
                               for i, c in enumerate(columns)})
        con.register("_workflow_rows", rows_table)
        try:
            con.execute(f"INSERT INTO workflows ({', '.join(columns)}) SELECT * FROM _workflow_rows")
        finally:
            con.unregister("_workflow_rows")


def structure_metrics(graph: nx.DiGraph, max_cycles: int = 1000) -> dict[str, int]:
    """Depth (longest path, in edges, over the condensation if cyclic), simple cycles (capped),
    and the largest fan-out of a step graph."""
    if graph.number_of_nodes() == 0:
        return {"max_depth": 0, "cycles": 0, "fan_out_max": 0}
    cycles = 0
    for _ in nx.simple_cycles(graph):
        cycles += 1
        if cycles >= max_cycles:
            break
    dag = graph if cycles == 0 else nx.condensation(graph)
    return {
        "max_depth": nx.dag_longest_path_length(dag),
        "cycles": cycles,
        "fan_out_max": max((d for _, d in graph.out_degree()), default=0),
    }
