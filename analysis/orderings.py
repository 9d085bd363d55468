"""Stage 7, orderings: how steps with no causal path between them are ordered in time.

For every ordered pair (A, B) of handler steps (consumer or server spans: where a service starts
work) of one workflow, with no causal path between them in the workflow's step graph and not
sequenced by a synchronous caller (some step calls A, waits, and also causes B), over the
instances where both occur:
how often A ended before B's final attempt started, how tightly B's start follows A's end (gap
quantiles) and whether it moves with it (correlation of both, relative to the instance start), and
what happened when the order did not hold (B's first attempt started before A ended: B erred,
B retried). Each row is the hypothesis "A happens before B", which traces can refute
(The Mystery Machine, Chow et al., OSDI 2014). Times are clock-skew corrected.
Writes `step_orderings`.
"""

from __future__ import annotations

import duckdb
import networkx as nx
import pyarrow as pa


def synchronously_sequenced(graph: nx.DiGraph) -> set[tuple[str, str]]:
    """Pairs (a, b), both ways, where some step C reaches a through synchronous calls only and also
    causes b: C waits for a before going on, so their order is explicit (an orchestrator calling
    one service after another, or calling one and then publishing)."""
    calls = nx.DiGraph([(u, v) for u, v, via in graph.edges(data="via") if via == "call"])
    out: set[tuple[str, str]] = set()
    for c in calls:
        called = nx.descendants(calls, c)
        if not called:
            continue
        caused = nx.descendants(graph, c)
        for a in called:
            for b in caused:
                if a != b:
                    out.add((a, b))
                    out.add((b, a))
    return out


def step_graphs(con: duckdb.DuckDBPyConnection) -> dict[str, nx.DiGraph]:
    """workflow_id -> step graph (edges carry `via`), uninstrumented peers left out."""
    graphs: dict[str, nx.DiGraph] = {}
    for wf, src, dst, via in con.execute(
        "SELECT workflow_id, src_step, dst_step, via FROM workflow_edges WHERE NOT ('unanswered' = ANY(evidence))"
    ).fetchall():
        graphs.setdefault(wf, nx.DiGraph()).add_edge(src, dst, via=via)
    return graphs


def _excluded_pairs(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """Pairs (workflow, a, b) explained causally: a path either way, or sequenced by a caller."""
    rows: set[tuple[str, str, str]] = set()
    for wf, graph in step_graphs(con).items():
        for node in graph:
            for reached in nx.descendants(graph, node):
                rows.add((wf, node, reached))
                rows.add((wf, reached, node))
        rows.update((wf, a, b) for a, b in synchronously_sequenced(graph))
    cols = list(zip(*rows)) if rows else [[], [], []]
    return pa.table({"workflow_id": list(cols[0]), "a": list(cols[1]), "b": list(cols[2])},
                    schema=pa.schema([("workflow_id", pa.string()), ("a", pa.string()), ("b", pa.string())]))


def build_orderings(con: duckdb.DuckDBPyConnection) -> None:
    con.register("_explained_pairs", _excluded_pairs(con))
    try:
        con.execute(
            """
            CREATE OR REPLACE TABLE step_orderings AS
            WITH occ AS (
                SELECT s.workflow_id, s.instance_id, s.step_id, any_value(s.service) AS service,
                       any_value(CASE WHEN s.role = 'consumer' THEN s.operation END) AS event,
                       min(s.start_adj) AS first_start, max(s.start_adj) AS final_start,
                       max(s.end_adj) AS last_end, count(*) AS attempts, bool_or(s.is_error) AS any_error,
                       any_value(i.start_adj) AS inst_start, any_value(i.entry_trace_id) AS entry_trace_id
                FROM span_steps s JOIN instances i USING (instance_id)
                WHERE s.role IN ('consumer', 'server')
                GROUP BY s.workflow_id, s.instance_id, s.step_id
            ),
            pairs AS (
                SELECT a.workflow_id, a.instance_id, a.step_id AS step_a, b.step_id AS step_b,
                       a.service AS service_a, b.service AS service_b, a.event AS event_a, b.event AS event_b,
                       a.last_end AS a_end, b.first_start AS b_first, b.final_start AS b_final,
                       b.attempts AS b_attempts, b.any_error AS b_error, a.inst_start, a.entry_trace_id
                FROM occ a JOIN occ b
                  ON a.instance_id = b.instance_id AND a.workflow_id = b.workflow_id AND a.step_id <> b.step_id
                WHERE NOT EXISTS (SELECT 1 FROM _explained_pairs x
                                  WHERE x.workflow_id = a.workflow_id AND x.a = a.step_id AND x.b = b.step_id)
            )
            SELECT workflow_id, step_a, step_b, any_value(service_a) AS service_a,
                   any_value(service_b) AS service_b, any_value(event_a) AS event_a,
                   any_value(event_b) AS event_b,
                   count(*) AS both_instances,
                   count(*) FILTER (WHERE a_end <= b_final) AS a_before_b,
                   count(*) FILTER (WHERE b_first < a_end) AS b_started_early,
                   count(*) FILTER (WHERE b_first < a_end AND b_error) AS b_early_errors,
                   count(*) FILTER (WHERE b_first < a_end AND b_attempts > 1) AS b_early_retries,
                   count(*) FILTER (WHERE b_first >= a_end AND b_error) AS b_errors_when_ordered,
                   count(*) FILTER (WHERE b_attempts > 1) AS b_retried,
                   quantile_cont((b_final - a_end) / 1e6, 0.5) FILTER (WHERE a_end <= b_final) AS gap_p50_ms,
                   quantile_cont((b_final - a_end) / 1e6, 0.9) FILTER (WHERE a_end <= b_final) AS gap_p90_ms,
                   quantile_cont((b_first - inst_start) / 1e6, 0.5) AS b_start_p50_ms,
                   quantile_cont((a_end - inst_start) / 1e6, 0.5) AS a_end_p50_ms,
                   stddev_samp((a_end - inst_start) / 1e6) AS a_end_stddev_ms,
                   corr((b_final - inst_start) / 1e6, (a_end - inst_start) / 1e6)
                       FILTER (WHERE a_end <= b_final) AS follow_corr,
                   regr_slope((b_final - inst_start) / 1e6, (a_end - inst_start) / 1e6)
                       FILTER (WHERE a_end <= b_final) AS follow_slope,
                   list(entry_trace_id ORDER BY entry_trace_id)[1:5] AS example_trace_ids,
                   list(entry_trace_id ORDER BY entry_trace_id) FILTER (WHERE b_first < a_end)[1:5]
                       AS broken_example_trace_ids
            FROM pairs
            GROUP BY workflow_id, step_a, step_b
            """
        )
    finally:
        con.unregister("_explained_pairs")
