"""Stage: the critical path of every stitched workflow instance, across traces, and per workflow the
typical one.

The walk (Jaeger's last-finishing-child walk, extended to event edges across traces), over
clock-corrected times (`span_steps.start_adj`/`end_adj`) and the causal edges with both ends as
steps (`span_edges`). The walk's choices are made once for every span in SQL (a window over each
parent's child ends), then one recursive CTE follows them from every instance's end at once:
- it starts at the instance's last end: the span ending last (ties: the outermost, earliest start),
  leaving out side-sink traces (below), with `t` = its end;
- at a span, the child ending last inside it before `t` (any edge: calls, database spans, and
  consumers of its sends that finished inside it) is on the path: the span's own time from that
  child's end to `t` is a segment, and the walk goes down into the child with `t` = its end;
- a span with no such child contributes its time from its start to `t`, and the walk goes up to its
  cause (the span's incoming edge: parent first, then link, message id, subscription, time window,
  the most confident) with `t` = its start. Going up an event edge is a `queue` segment: from the
  send's start to the consumer's start on the same message (the broker, the poll, redeliveries);
- unless the consumer waited on a sibling: when an implicit ordering (the implicit_ordering
  detector's step pairs, A before B; a declared ordering is still a wait) has this consumer's step
  as B and a handler span of A in the instance ended after the send started and before this span
  started, the gap from A's end to this span's start is a `wait` segment of B (where the implicit
  ordering costs time), and the walk continues in A with `t` = A's end: A's chain set when B could
  run;
- a client span's own time around a call into an instrumented server is `network` (client span
  minus server span); every other span's own time is `work` (a client span with no instrumented
  peer — a database, an external API — is that peer's work seen by the client).
Side-sink traces: a trace other than the entry trace joined to the instance only by span links
(OTel consumers start a new trace with a link when their processing is not a continuation of the
producer's: batch and poll consumers) and with no edge out to another trace or service. Its end
does not end the instance's path (an analytics poller's own fixed delay would otherwise hide every
other chain); the walk still goes through such a trace when it is on the path.

Writes:
- `critical_path_segments`: one row per segment of an instance's path: workflow_id, instance_id,
  seq (0 = the last segment, counting back), kind (work/queue/wait/network), trace_id, span_id,
  step_id, service, waits_on (the step A of a wait), start_adj, end_adj, duration_ms;
- `critical_path_steps`: per (workflow, step, kind): service, instances (on the path), share (of the
  workflow's instances), p50_ms (median of the step's summed segments per instance on the path),
  total_share (its part of the summed path time of all instances), waits_on, at_p50_ms (median
  start of its first segment, from the instance start: the path's order).
Reads `span_steps`, `span_edges`, `detector_findings`.
"""

from __future__ import annotations

import json

import duckdb

from choreoscope.analysis.clock_skew import INT64_MAX
from choreoscope.collector import store

MAX_STEPS = 100_000  # moves of one walk: a guard, a walk only goes back in time

_CAUSE_RANK = "CASE evidence WHEN 'parent' THEN 0 WHEN 'link' THEN 1 WHEN 'message_id' THEN 2 " \
              "WHEN 'subscription' THEN 3 ELSE 4 END"
_SPAN_KEY = "hash({t}, {s})"
_SPAN_COLUMNS = "trace_id, span_id, instance_id, workflow_id, step_id, service, start_adj, end_adj"
_EDGE_COLUMNS = ("src_trace_id, src_span_id, dst_span_id, via, evidence, confidence, src_role, dst_role, "
                 "src_start_adj, dst_start_adj, dst_end_adj")


def _orderings(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, str]]:
    pairs = set()
    for wf, evidence in con.execute(
        "SELECT workflow_id, evidence FROM detector_findings WHERE kind = 'implicit_ordering'"
    ).fetchall():
        ev = json.loads(evidence or "{}")
        for pair in ev.get("step_pairs") or []:
            if len(pair) == 2:
                pairs.add((wf or ev.get("workflow"), pair[0], pair[1]))
    return sorted(p for p in pairs if p[0])


def _drop(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Drop the temp view or table `name`, whichever it is (DuckDB refuses to drop one as the other)."""
    kind = store.scalar(con, "SELECT 'VIEW' FROM duckdb_views() WHERE temporary AND view_name = ? UNION ALL "
                             "SELECT 'TABLE' FROM duckdb_tables() WHERE temporary AND table_name = ?", [name, name])
    if kind:
        con.execute(f"DROP {kind} {name}")


def build_critical_path(con: duckdb.DuckDBPyConnection) -> None:
    # Spans and edges keyed by an integer (`sk`): the walk's joins on integers instead of (trace id,
    # span id) strings, which made them several times slower. The key is the ids' hash, in views
    # (a copy of a million spans and edges took longer than hashing at each use); should two spans
    # share one (a collision, or a span stored twice), tables numbered by row id stand in.
    for t in ("_cp_spans", "_cp_edges"):  # as a run that stopped (out of memory) left them
        _drop(con, t)
    con.execute(f"""
        CREATE OR REPLACE TEMP VIEW _cp_spans AS
        SELECT {_SPAN_KEY.format(t="trace_id", s="span_id")} AS sk, {_SPAN_COLUMNS} FROM span_steps""")
    if store.scalar(con, "SELECT count(DISTINCT sk) = count(*) FROM _cp_spans"):
        con.execute(f"""
            CREATE OR REPLACE TEMP VIEW _cp_edges AS
            SELECT {_SPAN_KEY.format(t="src_trace_id", s="src_span_id")} AS src_sk,
                   {_SPAN_KEY.format(t="dst_trace_id", s="dst_span_id")} AS dst_sk, {_EDGE_COLUMNS}
            FROM span_edges""")
    else:
        con.execute("DROP VIEW _cp_spans")
        con.execute(f"CREATE OR REPLACE TEMP TABLE _cp_spans AS SELECT rowid AS sk, {_SPAN_COLUMNS} FROM span_steps")
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE _cp_edges AS
            SELECT s.sk AS src_sk, d.sk AS dst_sk, {_EDGE_COLUMNS}
            FROM span_edges e
            JOIN _cp_spans s ON s.trace_id = e.src_trace_id AND s.span_id = e.src_span_id
            JOIN _cp_spans d ON d.trace_id = e.dst_trace_id AND d.span_id = e.dst_span_id""")
    con.execute("CREATE OR REPLACE TEMP TABLE _cp_orderings (workflow_id VARCHAR, step_a VARCHAR, step_b VARCHAR)")
    pairs = _orderings(con)
    if pairs:
        con.executemany("INSERT INTO _cp_orderings VALUES (?, ?, ?)", pairs)
    # The cause of each span: an arg_min per span, not a window sorting every edge; and only over
    # the spans with more than one incoming edge (an arg_min over strings costs twice the counting).
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _cp_cause AS
        WITH n AS (SELECT dst_sk, count(*) AS n FROM _cp_edges GROUP BY dst_sk),
        e AS (SELECT e.*, n.n FROM _cp_edges e JOIN n USING (dst_sk))
        SELECT dst_sk AS sk, src_sk, via, src_start_adj AS p_start FROM e WHERE n = 1
        UNION ALL
        SELECT sk, c.src_sk, c.via, c.p_start FROM (
            SELECT dst_sk AS sk,
                   arg_min(struct_pack(src_sk := src_sk, via := via, p_start := src_start_adj),
                           ({_CAUSE_RANK}, -confidence, src_trace_id, src_span_id)) AS c
            FROM e WHERE n > 1 GROUP BY dst_sk)""")
    # Client spans calling an instrumented server: their own time is the network's.
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _cp_network AS
        SELECT DISTINCT src_sk AS sk FROM _cp_edges
        WHERE via = 'call' AND src_role = 'client' AND dst_role = 'server'""")
    # Side-sink traces: entered from other traces by links only, and nothing out of them (each
    # condition one pass over the edges, grouped by trace).
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _cp_side AS
        WITH linked AS (
            SELECT dst_trace_id AS trace_id FROM span_edges WHERE src_trace_id <> dst_trace_id
            GROUP BY dst_trace_id HAVING count(*) FILTER (WHERE evidence <> 'link') = 0),
        leaving AS (
            SELECT DISTINCT src_trace_id AS trace_id FROM span_edges
            WHERE dst_trace_id <> src_trace_id OR dst_service <> src_service)
        SELECT s.trace_id FROM (SELECT DISTINCT trace_id, instance_id FROM span_steps) s
        JOIN instances i USING (instance_id)
        JOIN linked USING (trace_id)
        WHERE s.trace_id <> i.entry_trace_id
          AND NOT EXISTS (SELECT 1 FROM leaving o WHERE o.trace_id = s.trace_id)""")
    # The walk's choices, made once for every span: entering span `p` at its end, the child ending
    # last inside it (`ask` NULL); leaving child `ask` of `p` at its start, the child of `p` ending
    # last before it (ties: the earliest start, then span id). An as-of join of the times asked
    # about to each parent's child ends (a span with no end asks after all of them): half the time
    # of a window over both.
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _cp_choice AS
        WITH kids AS (
            SELECT src_sk AS p, dst_sk AS c, dst_span_id AS c_span, dst_start_adj AS c_start, dst_end_adj AS c_end
            FROM _cp_edges WHERE dst_end_adj > dst_start_adj),
        ends AS (SELECT p, c_end, count(*) AS n, any_value(c) AS c FROM kids GROUP BY p, c_end),
        last_at AS (  -- the arg_min over a string only where children end at once
            SELECT p, c_end, c FROM ends WHERE n = 1
            UNION ALL
            SELECT p, c_end, arg_min(c, (c_start, c_span)) FROM kids
            SEMI JOIN (SELECT p, c_end FROM ends WHERE n > 1) m USING (p, c_end) GROUP BY p, c_end),
        asks AS (
            SELECT p, c_start AS t, c AS ask FROM kids
            UNION ALL  -- a span without children has no choice to make
            SELECT sk, end_adj, NULL FROM _cp_spans WHERE sk IN (SELECT p FROM kids))
        SELECT a.p, a.ask, k.c AS b, k.c_end AS b_end
        FROM asks a ASOF JOIN last_at k ON k.p = a.p AND k.c_end <= coalesce(a.t, {INT64_MAX})""")
    # A consumer's wait: the last-ending span of the step its implicit ordering puts first, ended
    # after the send started and before the consumer did.
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _cp_wait AS
        SELECT c.sk, a.sk AS a_sk, a.end_adj AS a_end, o.step_a
        FROM _cp_spans c JOIN _cp_cause k USING (sk)
        JOIN _cp_orderings o ON o.workflow_id = c.workflow_id AND o.step_b = c.step_id
        JOIN _cp_spans a ON a.instance_id = c.instance_id AND a.step_id = o.step_a
        WHERE k.via = 'event' AND a.end_adj <= c.start_adj AND a.end_adj > k.p_start
        QUALIFY row_number() OVER (PARTITION BY c.sk ORDER BY a.end_adj DESC, a.span_id) = 1""")
    # Every state's one move: entering a span (`E`, at its end) or leaving it (`L`, at its start),
    # with the segment the move covers.
    con.execute("""
        CREATE OR REPLACE TEMP TABLE _cp_move AS
        WITH own AS (
            SELECT s.*, CASE WHEN n.sk IS NOT NULL THEN 'network' ELSE 'work' END AS own_kind
            FROM _cp_spans s LEFT JOIN _cp_network n USING (sk))
        SELECT 'E' AS state, s.sk, s.own_kind AS kind, s.sk AS seg_sk, NULL AS waits_on,
               CASE WHEN f.b_end > s.start_adj THEN f.b_end ELSE s.start_adj END AS seg_start, s.end_adj AS seg_end,
               CASE WHEN f.b_end > s.start_adj THEN 'E' ELSE 'L' END AS next_state,
               CASE WHEN f.b_end > s.start_adj THEN f.b ELSE s.sk END AS next_sk
        FROM own s LEFT JOIN _cp_choice f ON f.p = s.sk AND f.ask IS NULL
        UNION ALL
        SELECT 'L', c.sk,
               CASE WHEN k.via = 'event' AND w.a_sk IS NOT NULL THEN 'wait' WHEN k.via = 'event' THEN 'queue'
                    ELSE p.own_kind END,
               CASE WHEN k.via = 'event' THEN c.sk ELSE p.sk END,
               CASE WHEN k.via = 'event' THEN w.step_a END,
               CASE WHEN k.via = 'event' AND w.a_sk IS NOT NULL THEN w.a_end WHEN k.via = 'event' THEN p.start_adj
                    WHEN b.b_end > p.start_adj THEN b.b_end ELSE p.start_adj END,
               c.start_adj,
               CASE WHEN k.via = 'event' AND w.a_sk IS NOT NULL THEN 'E' WHEN k.via = 'event' THEN 'L'
                    WHEN b.b_end > p.start_adj THEN 'E' ELSE 'L' END,
               CASE WHEN k.via = 'event' AND w.a_sk IS NOT NULL THEN w.a_sk WHEN k.via = 'event' THEN p.sk
                    WHEN b.b_end > p.start_adj THEN b.b ELSE p.sk END
        FROM _cp_spans c JOIN _cp_cause k USING (sk)
        JOIN own p ON p.sk = k.src_sk
        LEFT JOIN _cp_wait w ON w.sk = c.sk
        LEFT JOIN _cp_choice b ON b.p = p.sk AND b.ask = c.sk""")
    # The walk: from each instance's last end (an arg_min per instance; `~` reverses the order of
    # an integer without overflowing), one move at a time (a recursive CTE: pointer chasing); each
    # row carries its move, so the moves are joined once.
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _cp_seg AS
        WITH RECURSIVE walk(instance_id, seq, kind, seg_sk, waits_on, start_adj, end_adj, next_state, next_sk) AS (
            SELECT s.instance_id, 0, m.kind, m.seg_sk, m.waits_on, m.seg_start, m.seg_end, m.next_state, m.next_sk
            FROM (SELECT instance_id, arg_min(sk, (~end_adj, start_adj, span_id)) AS sk FROM _cp_spans
                  WHERE trace_id NOT IN (SELECT trace_id FROM _cp_side) GROUP BY instance_id) s
            JOIN _cp_move m ON m.state = 'E' AND m.sk = s.sk
            UNION ALL
            SELECT w.instance_id, w.seq + 1, m.kind, m.seg_sk, m.waits_on, m.seg_start, m.seg_end, m.next_state,
                   m.next_sk
            FROM walk w JOIN _cp_move m ON m.state = w.next_state AND m.sk = w.next_sk
            WHERE w.seq < {MAX_STEPS})
        SELECT instance_id, seq, kind, seg_sk, waits_on, start_adj, end_adj FROM walk""")
    con.execute("""
        CREATE OR REPLACE TABLE critical_path_segments AS
        SELECT s.workflow_id, g.instance_id, g.seq, g.kind, s.trace_id, s.span_id, s.step_id, s.service,
               g.waits_on, g.start_adj, g.end_adj, (g.end_adj - g.start_adj) / 1e6 AS duration_ms
        FROM _cp_seg g JOIN _cp_spans s ON s.sk = g.seg_sk
        WHERE g.end_adj > g.start_adj
        ORDER BY s.workflow_id, g.instance_id, g.seq DESC""")
    con.execute("""
        CREATE OR REPLACE TABLE critical_path_steps AS
        WITH per_instance AS (
            SELECT workflow_id, instance_id, step_id, kind, any_value(service) AS service,
                   any_value(waits_on) AS waits_on, sum(duration_ms) AS ms,
                   (min(g.start_adj) - any_value(i.start_adj)) / 1e6 AS at_ms
            FROM critical_path_segments g JOIN instances i USING (instance_id, workflow_id) GROUP BY ALL),
        wf AS (SELECT workflow_id, count(*) AS n FROM instances GROUP BY ALL),
        total AS (SELECT workflow_id, sum(duration_ms) AS ms FROM critical_path_segments GROUP BY ALL)
        SELECT p.workflow_id, p.step_id, any_value(p.service) AS service, p.kind,
               count(*) AS instances, count(*) / any_value(wf.n) AS share,
               quantile_cont(p.ms, 0.5) AS p50_ms, sum(p.ms) / any_value(total.ms) AS total_share,
               any_value(p.waits_on) AS waits_on, quantile_cont(p.at_ms, 0.5) AS at_p50_ms
        FROM per_instance p JOIN wf USING (workflow_id) JOIN total USING (workflow_id)
        GROUP BY p.workflow_id, p.step_id, p.kind
        ORDER BY p.workflow_id, total_share DESC, p.step_id, p.kind""")
    for t in ("_cp_spans", "_cp_edges"):
        _drop(con, t)
    for t in ("_cp_orderings", "_cp_cause", "_cp_network", "_cp_side", "_cp_choice", "_cp_wait", "_cp_move", "_cp_seg"):
        con.execute(f"DROP TABLE IF EXISTS {t}")
