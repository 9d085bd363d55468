"""Stage: workflow instances: traces tied together by causal edges form one instance.

A consumer that starts a new trace with a link to its producer (the OpenTelemetry messaging
default for batch consumers) belongs to its producer's instance; so does one tied only by message
id or time window. Spans of one trace always share an instance. The components are found in SQL
over trace pairs (one row per cross-trace edge), never over spans (`connected_traces_sql`).
An instance's entry is its earliest root span (no incoming causal edge); its step is the instance's
workflow type (`workflow_id`).
Reads `span_labels`, `causal_edges`, `clock_offsets`; writes `trace_instances` (trace_id ->
instance_id = the smallest trace id of the component) and `instances` (one row per instance: times,
counts, entry trace and workflow).
"""

from __future__ import annotations

import duckdb

from choreoscope.analysis.clock_skew import corrected_steps_sql

MAX_ROUNDS = 64  # min-label propagation with pointer jumping halves chain distances each round:
# 64 rounds cover components of any size that fits in memory; more means a bug, so it raises.


def connected_traces_sql(con: duckdb.DuckDBPyConnection, pairs_sql: str) -> str:
    """Build the TEMP table `_trace_labels` (trace_id, label): each trace of the pairs `pairs_sql`
    selects (columns a, b) with the smallest trace id of its connected component; returns its name.

    Iterative min-label propagation in SQL (each trace takes the smallest label among itself and
    its neighbours), each round followed by pointer jumping (a trace takes its label's label), until
    nothing changes: connected components as joins and aggregates only, so the same stage runs on
    any SQL engine (no GraphFrames, no Python over pairs). A long chain of linked traces converges
    in about log2(length) rounds.
    """
    # Traces as integers numbered in trace id order (so the smallest number is the smallest id):
    # the rounds join and compare numbers, not 32-character strings.
    con.execute(f"CREATE OR REPLACE TEMP TABLE _trace_pairs AS SELECT DISTINCT a, b FROM ({pairs_sql}) WHERE a <> b")
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _trace_nos AS
        SELECT trace_id, row_number() OVER (ORDER BY trace_id) AS no
        FROM (SELECT a AS trace_id FROM _trace_pairs UNION SELECT b FROM _trace_pairs)
    """)
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _trace_edges AS
        SELECT DISTINCT na.no AS a, nb.no AS b
        FROM (SELECT a, b FROM _trace_pairs UNION ALL SELECT b, a FROM _trace_pairs) p
        JOIN _trace_nos na ON na.trace_id = p.a JOIN _trace_nos nb ON nb.trace_id = p.b
    """)
    con.execute("DROP TABLE _trace_pairs")
    con.execute("CREATE OR REPLACE TEMP TABLE _trace_no_labels AS SELECT DISTINCT a AS trace_no, a AS label "
                "FROM _trace_edges")
    for _ in range(MAX_ROUNDS):
        con.execute("""
            CREATE OR REPLACE TEMP TABLE _trace_no_labels_next AS
            WITH propagated AS (
                SELECT l.trace_no, least(l.label, min(n.label)) AS label
                FROM _trace_no_labels l
                JOIN _trace_edges e ON e.a = l.trace_no
                JOIN _trace_no_labels n ON n.trace_no = e.b
                GROUP BY l.trace_no, l.label
            )
            SELECT p.trace_no, least(p.label, coalesce(j.label, p.label)) AS label
            FROM propagated p LEFT JOIN propagated j ON j.trace_no = p.label
        """)
        changed = con.execute("""
            SELECT count(*) FROM _trace_no_labels_next n JOIN _trace_no_labels l USING (trace_no)
            WHERE n.label <> l.label
        """).fetchone()[0]
        con.execute("DROP TABLE _trace_no_labels")
        con.execute("ALTER TABLE _trace_no_labels_next RENAME TO _trace_no_labels")
        if not changed:
            con.execute("""
                CREATE OR REPLACE TEMP TABLE _trace_labels AS
                SELECT t.trace_id, lt.trace_id AS label
                FROM _trace_no_labels l
                JOIN _trace_nos t ON t.no = l.trace_no JOIN _trace_nos lt ON lt.no = l.label
            """)
            for scratch in ("_trace_edges", "_trace_no_labels", "_trace_nos"):
                con.execute(f"DROP TABLE {scratch}")
            return "_trace_labels"
    raise RuntimeError(f"connected components did not converge in {MAX_ROUNDS} rounds")


def build_instances(con: duckdb.DuckDBPyConnection) -> None:
    """Create `trace_instances` and `instances`."""
    _build_trace_instances(con)
    _build_instance_table(con)


def _build_trace_instances(con: duckdb.DuckDBPyConnection) -> None:
    labels = connected_traces_sql(
        con, "SELECT src_trace_id AS a, dst_trace_id AS b FROM causal_edges WHERE src_trace_id <> dst_trace_id")
    con.execute(
        f"""
        CREATE OR REPLACE TABLE trace_instances AS
        SELECT t.trace_id, coalesce(s.label, t.trace_id) AS instance_id
        FROM (SELECT DISTINCT trace_id FROM span_labels) t
        LEFT JOIN {labels} s ON s.trace_id = t.trace_id
        """
    )
    con.execute(f"DROP TABLE {labels}")


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
        )
        -- the entry (earliest root span, ties by ids) per instance as an arg_min, not a window
        -- sorting every span of the store
        SELECT instance_id, min(start_adj) AS start_adj, max(end_adj) AS end_adj, count(*) AS spans,
               count(DISTINCT trace_id) AS traces, count(DISTINCT service) AS services,
               count(*) FILTER (WHERE is_error) AS errors,
               arg_min(step_id, (NOT is_root, start_adj, trace_id, span_id)) AS workflow_id,
               arg_min(trace_id, (NOT is_root, start_adj, trace_id, span_id)) AS entry_trace_id
        FROM steps GROUP BY instance_id
        """
    )
