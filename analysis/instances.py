"""Stage: workflow instances: traces tied together by causal edges form one instance.

A consumer that starts a new trace with a link to its producer (the OpenTelemetry messaging
default for batch consumers) belongs to its producer's instance; so does one tied only by message
id or time window. A batch — a trace entered only through links, from several traces — does not
tie them together: the messages it took were independent requests that shared a poll
(`TRACE_PAIRS_SQL`). Spans of one trace always share an instance. The components are found in SQL
over trace pairs (one row per cross-trace edge), never over spans (`connected_traces_sql`).
An instance's entry is its earliest root span (no incoming causal edge) in a trace no other trace
leads into (else its earliest root span); its step is the instance's workflow type (`workflow_id`).
Reads `span_labels`, `causal_edges`, `clock_offsets`; writes `trace_instances` (trace_id ->
instance_id = the smallest trace id of the component) and `instances` (one row per instance: times,
counts, entry trace and workflow).
"""

from __future__ import annotations

import duckdb

from choreoscope.analysis.clock_skew import corrected_steps_sql

MAX_ROUNDS = 64  # rounds of large-star + small-star: O(log^2 n) in theory, a handful in practice
# (a 200-hop chain with its smallest id in the middle takes a few); more means a bug, so it raises.


def connected_traces_sql(con: duckdb.DuckDBPyConnection, pairs_sql: str) -> str:
    """Build the TEMP table `_trace_labels` (trace_id, label): each trace of the pairs `pairs_sql`
    selects (columns a, b) with the smallest trace id of its connected component; returns its name.

    Large-star / small-star (Kiveris et al., "Connected Components in MapReduce and Beyond", 2014)
    in SQL over edges kept as (larger, smaller): large-star hangs every larger neighbour of a node on
    the smallest id around it, small-star hangs a node and its smaller neighbours on the smallest
    of them; alternated until the edges stop changing, each component is a star around its
    smallest id. Joins and aggregates only, so the same stage runs on any SQL engine (no
    GraphFrames, no Python over pairs). Plain min-label propagation needs as many rounds as the
    longest chain of linked traces; this needs about log2 of it.
    The rounds run over numbers given to the trace ids in their order (so the smallest number is
    the smallest id), mapped back at the end: over the 32-character ids themselves, each round's
    joins, groupings and EXCEPTs took a fifth more CPU (the bench's 1M-span store: 2.7-3.0 s
    against 2.1-2.5 s, the same labels).
    """
    con.execute(f"CREATE OR REPLACE TEMP TABLE _trace_pairs AS SELECT a, b FROM ({pairs_sql}) WHERE a <> b")
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _trace_nos AS
        SELECT trace_id, row_number() OVER (ORDER BY trace_id) AS no
        FROM (SELECT a AS trace_id FROM _trace_pairs UNION SELECT b FROM _trace_pairs)
    """)
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _trace_edges AS
        SELECT DISTINCT greatest(x.no, y.no) AS a, least(x.no, y.no) AS b
        FROM _trace_pairs p JOIN _trace_nos x ON x.trace_id = p.a JOIN _trace_nos y ON y.trace_id = p.b
    """)
    con.execute("DROP TABLE _trace_pairs")
    for _ in range(MAX_ROUNDS):
        con.execute("""
            CREATE OR REPLACE TEMP TABLE _trace_edges_large AS
            WITH nbr AS (SELECT a AS u, b AS v FROM _trace_edges UNION ALL SELECT b, a FROM _trace_edges),
            m AS (SELECT u, least(u, min(v)) AS m FROM nbr GROUP BY u)
            SELECT DISTINCT n.v AS a, m.m AS b FROM nbr n JOIN m ON m.u = n.u WHERE n.v > n.u
        """)
        con.execute("""
            CREATE OR REPLACE TEMP TABLE _trace_edges_next AS
            WITH m AS (SELECT a AS u, min(b) AS m FROM _trace_edges_large GROUP BY a)
            SELECT DISTINCT e.b AS a, m.m AS b FROM _trace_edges_large e JOIN m ON m.u = e.a WHERE e.b <> m.m
            UNION
            SELECT u, m FROM m
        """)
        changed = con.execute("""
            SELECT (SELECT count(*) FROM (SELECT a, b FROM _trace_edges_next EXCEPT SELECT a, b FROM _trace_edges))
                 + (SELECT count(*) FROM (SELECT a, b FROM _trace_edges EXCEPT SELECT a, b FROM _trace_edges_next))
        """).fetchone()[0]
        con.execute("DROP TABLE _trace_edges")
        con.execute("DROP TABLE _trace_edges_large")
        con.execute("ALTER TABLE _trace_edges_next RENAME TO _trace_edges")
        if not changed:
            con.execute("""
                CREATE OR REPLACE TEMP TABLE _trace_labels AS
                SELECT t.trace_id, l.trace_id AS label
                FROM (SELECT a AS no, min(b) AS label
                      FROM (SELECT a, b FROM _trace_edges UNION ALL SELECT b, b FROM _trace_edges)
                      GROUP BY a) c
                JOIN _trace_nos t ON t.no = c.no JOIN _trace_nos l ON l.no = c.label
            """)
            con.execute("DROP TABLE _trace_edges")
            con.execute("DROP TABLE _trace_nos")
            return "_trace_labels"
    raise RuntimeError(f"connected components did not converge in {MAX_ROUNDS} rounds")


# The cross-trace pairs the components are made of. A trace entered only through span links, from
# two or more traces, is a batch consumer's (one process span linking every message it took, the
# messaging conventions' batch shape): it joins just one of them — the one whose linked span started
# first (the message the batch waited on longest; ties by trace id) — so that requests that merely
# shared a poll stay separate instances (200 bookings polled two or three at a time became 107
# instances, each with "repeated" steps that read as retries).
TRACE_PAIRS_SQL = """
    WITH x AS (
        SELECT e.src_trace_id AS a, e.dst_trace_id AS b, e.evidence, s.start_ns
        FROM causal_edges e JOIN span_labels s ON s.trace_id = e.src_trace_id AND s.span_id = e.src_span_id
        WHERE e.src_trace_id <> e.dst_trace_id),
    batch AS (
        SELECT b, arg_min(a, (start_ns, a)) AS first_a FROM x GROUP BY b
        HAVING count(DISTINCT a) > 1 AND bool_and(evidence = 'link'))
    SELECT a, b FROM x WHERE b NOT IN (SELECT b FROM batch)
    UNION ALL
    SELECT first_a AS a, b FROM batch"""


def build_instances(con: duckdb.DuckDBPyConnection) -> None:
    """Create `trace_instances` and `instances`."""
    _build_trace_instances(con)
    _build_instance_table(con)


def _build_trace_instances(con: duckdb.DuckDBPyConnection) -> None:
    labels = connected_traces_sql(con, TRACE_PAIRS_SQL)
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
                               WHERE e.dst_trace_id = s.trace_id AND e.dst_span_id = s.span_id) AS is_root,
                   s.trace_id IN (SELECT dst_trace_id FROM causal_edges WHERE src_trace_id <> dst_trace_id)
                       AS trace_reached
            FROM ({corrected_steps_sql()}) s JOIN trace_instances ti USING (trace_id)
        )
        -- the entry per instance as an arg_min, not a window sorting every span of the store: the
        -- earliest root span of a trace no other trace leads into (ties by ids), else the earliest
        -- root. A consumer's trace reached from the producer's is no entry even when it started
        -- first: an SQS long poll waits before the order that it then receives is placed.
        SELECT instance_id, min(start_adj) AS start_adj, max(end_adj) AS end_adj, count(*) AS spans,
               count(DISTINCT trace_id) AS traces, count(DISTINCT service) AS services,
               count(*) FILTER (WHERE is_error) AS errors,
               arg_min(step_id, (NOT is_root, trace_reached, start_adj, trace_id, span_id)) AS workflow_id,
               arg_min(trace_id, (NOT is_root, trace_reached, start_adj, trace_id, span_id)) AS entry_trace_id
        FROM steps GROUP BY instance_id
        """
    )
