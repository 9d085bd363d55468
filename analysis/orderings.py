"""Stage 7, orderings: how steps with no causal path between them are ordered in time.

For every ordered pair (A, B) of handler steps (consumer or server spans: where a service starts
work) of one workflow, with no causal path between them in the workflow's step graph and not
sequenced by a synchronous caller (some step calls A, waits, and also causes B; a request answered
over a broker that the requesting handler waits for counts as a call: REPLIES_SQL), over the
instances where both occur. Each row is the hypothesis "A happens before B", which traces can
refute (The Mystery Machine, Chow et al., OSDI 2014). Times are clock-skew corrected.

Where the order is judged, per instance:
- on a shared table, when A writes a table (or collection) B reads in that instance: B's first read
  against A's first write's end. A consumer span wraps its whole handler (a callback, work, then
  the read), so two siblings overlap almost always; what B depends on is the row, not A's span.
  A read after the write ended but before A's handler did may not see an uncommitted row: such an
  instance is uncertain, left out of both the broken and the ordered counts;
- otherwise on the handler spans: B's first attempt's start against A's last end.
A database span belongs to the nearest handler span of its own service above it (up to three
parents up); an orphan (its parent never exported, e.g. boto3sqs's unfinished process span)
belongs to its service's handler step when that service has only one in the instance. When that
handler is a server span called synchronously by another service, the access is also the caller's
(its nearest handler, likewise): a consumer that asks the producer's API for a record depends on
the row as much as one that reads the table itself (one call deep).

What happened when the order broke (B went first): B erred, was retried or redelivered (a second
attempt of the same step in the instance: same message redelivered, or a task republished; a span
wrapping one of its own step, an empty long poll and a second message with another id are no
attempts), or read
the table again after A's write (a re-read: the only trace of a failed attempt whose own span was
never exported). The same counts over the instances where the order held are the baseline: a B that
fails as often when it came second is not hurt by the order.

And where each step sits: hops (handler steps entered on the way, an event or a call into another
service each count one) from the workflow entry and from the common cause (the nearest step that
causes both). B many hops further down than A from their common cause is always late by its own
chain's latency, with or without A.
Writes `step_orderings`.
"""

from __future__ import annotations

import duckdb
import networkx as nx
import pyarrow as pa

from choreoscope.analysis.data_access import WRITE_VERBS

HANDLER_ROLES = ("consumer", "server")


def synchronously_sequenced(graph: nx.DiGraph, only: set[str] | None = None) -> set[tuple[str, str]]:
    """Pairs (a, b), both ways, where some step C reaches a through synchronous calls only and also
    causes b: C waits for a before going on, so their order is explicit (an orchestrator calling
    one service after another, or calling one and then publishing). With `only`, just the pairs
    with both ends in it."""
    calls = nx.DiGraph([(u, v) for u, v, via in graph.edges(data="via") if via == "call"])
    out: set[tuple[str, str]] = set()
    for c in calls:
        called = nx.descendants(calls, c)
        if only is not None:
            called &= only
        if not called:
            continue
        caused = nx.descendants(graph, c)
        if only is not None:
            caused &= only
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


def _excluded_pairs(graphs: dict[str, nx.DiGraph], handlers: set[str]) -> pa.Table:
    """Pairs (workflow, a, b) of handler steps explained causally: a path either way, or sequenced
    by a caller. Only handler steps are ever paired, so only they are closed over: handlers x
    handlers per workflow, not steps x steps."""
    rows: set[tuple[str, str, str]] = set()
    for wf, graph in graphs.items():
        for node in handlers.intersection(graph):
            for reached in nx.descendants(graph, node) & handlers:
                rows.add((wf, node, reached))
                rows.add((wf, reached, node))
        rows.update((wf, a, b) for a, b in synchronously_sequenced(graph, handlers))
    cols = list(zip(*rows)) if rows else [[], [], []]
    return pa.table({"workflow_id": list(cols[0]), "a": list(cols[1]), "b": list(cols[2])},
                    schema=pa.schema([("workflow_id", pa.string()), ("a", pa.string()), ("b", pa.string())]))


def ancestor_hops(graphs: dict[str, nx.DiGraph], handlers: set[str]) -> pa.Table:
    """(workflow, step, ancestor, hops, edges) for every handler step (the only steps paired) and
    every step that causes it (itself at 0): hops = handler steps entered on the shortest way down
    (the ancestor not counted), edges = step-graph edges on it. One Dijkstra per handler step over
    the (small) workflow step graph."""
    out: dict[str, list] = {"workflow_id": [], "step": [], "ancestor": [], "hops": [], "edges": []}
    for wf, graph in graphs.items():
        up = graph.reverse(copy=False)

        def weight(u, _v, _d):  # going up from u: entering u counted one hop if u is a handler
            return 1 if u in handlers else 0

        for node in graph:
            if node not in handlers:
                continue
            edges = nx.single_source_shortest_path_length(up, node)
            for anc, hops in nx.single_source_dijkstra_path_length(up, node, weight=weight).items():
                for key, value in (("workflow_id", wf), ("step", node), ("ancestor", anc),
                                   ("hops", int(hops)), ("edges", int(edges.get(anc, 0)))):
                    out[key].append(value)
    return pa.table(out, schema=pa.schema([("workflow_id", pa.string()), ("step", pa.string()),
                                           ("ancestor", pa.string()), ("hops", pa.int32()),
                                           ("edges", pa.int32())]))


HANDLER_SQL = "s.role IN ('consumer', 'server')"
_H = "role IN ('consumer', 'server')"

# One row per (instance, handler step): its attempts. A span wrapping a span of its own step (a
# boto3sqs `receive` around its `process`) is one delivery, not two; a consumer span without a
# message id where the step's others carry one handled nothing (an empty long poll). `inst_no` and
# `step_no` (one per workflow and step) are integer keys for the pairing below: the instance x
# step x step join and its grouping are the stage's bulk, and long text keys made them slow. They
# are given first, over the (few) instances and steps, so the spans are grouped by them too (an
# instance is one workflow's; a step is one role's, so a span of a handler's step is a handler).
# Instances are numbered in entry trace order, so the smallest numbers are the example traces.
OCC_SQL = f"""
CREATE OR REPLACE TEMP TABLE _ord_occ AS
WITH inst AS (
    SELECT instance_id, start_adj AS inst_start, entry_trace_id,
           row_number() OVER (ORDER BY entry_trace_id, instance_id) AS inst_no
    FROM instances
),
steps AS (  -- a step's id names its service, role and operation
    SELECT workflow_id, step_id, any_value(service) AS service,
           any_value(CASE WHEN role = 'consumer' THEN operation END) AS event,
           row_number() OVER (ORDER BY workflow_id, step_id) AS step_no
    FROM span_steps s WHERE {HANDLER_SQL}
    GROUP BY workflow_id, step_id
),
h AS (
    SELECT s.trace_id, s.span_id, s.step_id, s.role, s.messaging_message_id AS message_id, s.start_adj, s.end_adj,
           s.is_error, i.inst_no, st.step_no
    FROM span_steps s JOIN inst i USING (instance_id) JOIN steps st USING (workflow_id, step_id)
    WHERE {HANDLER_SQL}
),
messages AS (SELECT DISTINCT inst_no, step_no FROM h WHERE message_id IS NOT NULL),
occ AS (
    SELECT s.inst_no, s.step_no, min(s.start_adj) AS first_start, max(s.start_adj) AS final_start,
           max(s.end_adj) AS last_end,
           -- attempts: deliveries of one message; two messages (an upstream that sent twice, e.g.
           -- two replicas after a rebalance) are two handlings, not a retry
           CASE WHEN count(s.message_id) = count(*)
                THEN count(*) - count(DISTINCT s.message_id) + 1 ELSE count(*) END AS attempts,
           bool_or(s.is_error) AS any_error
    FROM h s LEFT JOIN messages m ON m.inst_no = s.inst_no AND m.step_no = s.step_no
    WHERE NOT EXISTS (SELECT 1 FROM span_steps c WHERE c.trace_id = s.trace_id AND c.parent_span_id = s.span_id
                      AND c.step_id = s.step_id AND c.{_H})   -- a wrapper
      AND NOT (s.role = 'consumer' AND s.message_id IS NULL AND m.inst_no IS NOT NULL)   -- a poll
    GROUP BY s.inst_no, s.step_no
)
SELECT st.workflow_id, i.instance_id, st.step_id, st.service, st.event, occ.first_start, occ.final_start,
       occ.last_end, occ.attempts, occ.any_error, i.inst_start, i.entry_trace_id, occ.inst_no, occ.step_no
FROM occ JOIN inst i USING (inst_no) JOIN steps st USING (step_no)
ORDER BY occ.step_no, occ.inst_no  -- the pairs then come grouped by step: their aggregation took half as long
"""

# The names behind each step_no (a step of one workflow).
STEPS_SQL = """
CREATE OR REPLACE TEMP TABLE _ord_steps AS
SELECT step_no, any_value(workflow_id) AS workflow_id, any_value(step_id) AS step_id,
       any_value(service) AS service, any_value(event) AS event
FROM _ord_occ GROUP BY step_no
"""

# Database spans attributed to the handler step that ran them (see the module docstring).


def _nearest_handler(p: str) -> tuple[str, str]:
    """(select list, joins): the nearest handler span up to three parents above the span `{p}0`
    (`{p}1`, `{p}2`, `{p}3` its parent, grandparent and great-grandparent), its step only when it
    is of `{p}0`'s service: handler_step, handler_end, handler_span_id."""
    def first(column: str) -> str:
        return "CASE " + " ".join(f"WHEN {p}{i}.{_H} THEN {column.format(a=f'{p}{i}')}" for i in (1, 2, 3)) + " END"

    select = (f"{first(f'(CASE WHEN {{a}}.service = {p}0.service THEN {{a}}.step_id END)')} AS handler_step, "
              f"{first('{a}.end_adj')} AS handler_end, {first('{a}.span_id')} AS handler_span_id")
    # Only what the select list can use is joined: a parent's parent only above a non-handler, the
    # last one only if it is a handler (each join was a hash table of every span).
    def join(i: int) -> str:
        source = f"(SELECT * FROM span_steps WHERE {_H})" if i == 3 else "span_steps"
        above = f" AND NOT ({p}{i - 1}.{_H})" if i > 1 else ""
        return (f"LEFT JOIN {source} {p}{i} ON {p}{i}.trace_id = {p}{i - 1}.trace_id "
                f"AND {p}{i}.span_id = {p}{i - 1}.parent_span_id{above}")

    return select, "\n".join(join(i) for i in (1, 2, 3))


_OWN_HANDLER = _nearest_handler("p")     # of the database span's own service
_CALLER_HANDLER = _nearest_handler("q")  # of the client span that called the owning server span
ACCESS_SQL = f"""
CREATE OR REPLACE TEMP TABLE _ord_access AS
WITH db AS (
    SELECT trace_id, span_id, parent_span_id, service, instance_id, workflow_id, db_system,
           db_collection AS resource, upper(coalesce(db_operation, '')) IN {WRITE_VERBS} AS writes,
           start_adj, end_adj
    FROM span_steps WHERE db_system IS NOT NULL AND db_collection IS NOT NULL
),
own AS (
    SELECT p0.*, {_OWN_HANDLER[0]}, p1.span_id IS NULL AS orphan
    FROM db p0
    {_OWN_HANDLER[1]}
),
on_behalf AS (  -- the same access for the handler that called this one synchronously (see above)
    SELECT o.trace_id, o.span_id, o.parent_span_id, o.service, o.instance_id, o.workflow_id, o.db_system,
           o.resource, o.writes, o.start_adj, o.end_adj, {_CALLER_HANDLER[0]}, false AS orphan
    FROM own o
    JOIN span_steps h ON h.trace_id = o.trace_id AND h.span_id = o.handler_span_id AND h.role = 'server'
    JOIN span_steps q0 ON q0.trace_id = h.trace_id AND q0.span_id = h.parent_span_id AND q0.role = 'client'
                      AND q0.service <> h.service
    {_CALLER_HANDLER[1]}
    WHERE o.handler_step IS NOT NULL
),
up AS (SELECT * FROM own UNION ALL SELECT * FROM on_behalf),
only_step AS (   -- for the orphans only: there are few
    SELECT o.instance_id, o.service, min(o.step_id) AS step_id FROM _ord_occ o
    WHERE EXISTS (SELECT 1 FROM own x WHERE x.orphan AND x.instance_id = o.instance_id AND x.service = o.service)
    GROUP BY o.instance_id, o.service HAVING count(*) = 1
)
SELECT k.inst_no, k.step_no, up.db_system, up.resource,   -- keyed like the occurrences, by number
       min(up.end_adj) FILTER (WHERE up.writes) AS first_write_end,
       min(greatest(up.end_adj, coalesce(up.handler_end, up.end_adj))) FILTER (WHERE up.writes) AS write_settled,
       min(up.start_adj) FILTER (WHERE NOT up.writes) AS first_read,
       max(up.start_adj) FILTER (WHERE NOT up.writes) AS last_read,
       count(*) FILTER (WHERE NOT up.writes) AS reads
FROM up LEFT JOIN only_step o ON o.instance_id = up.instance_id AND o.service = up.service AND up.orphan
JOIN _ord_occ k ON k.instance_id = up.instance_id
               AND k.step_id = coalesce(up.handler_step, CASE WHEN up.orphan THEN o.step_id END)
GROUP BY k.inst_no, k.step_no, up.db_system, up.resource
"""

# The pairs of handler steps of one workflow not explained causally (the common causes are found
# for these, whether or not the two ever share an instance).
STEP_PAIRS_SQL = """
CREATE OR REPLACE TEMP TABLE _ord_step_pairs AS
SELECT sa.step_no AS a_no, sb.step_no AS b_no, sa.workflow_id, sa.step_id AS step_a, sb.step_id AS step_b
FROM _ord_steps sa JOIN _ord_steps sb ON sb.workflow_id = sa.workflow_id AND sb.step_no <> sa.step_no
WHERE NOT EXISTS (SELECT 1 FROM _explained_pairs x
                  WHERE x.workflow_id = sa.workflow_id AND x.a = sa.step_id AND x.b = sb.step_id)
"""

# Every pair of handler steps of one instance not explained causally, keyed by numbers (the names
# are joined back once per step pair): CTEs of ORDERINGS_SQL, which aggregates the rows as they
# come (one row per instance and pair, over ten million at 1M spans: writing them to a table cost
# more than the aggregation).
PAIRS_SQL = """
access AS (
    SELECT inst_no, step_no, db_system, resource, first_write_end, write_settled, first_read, last_read, reads
    FROM _ord_access
),
data AS (   -- A writes a table B reads, in the same instance
    SELECT w.inst_no, w.step_no AS a_no, r.step_no AS b_no,
           list(DISTINCT w.resource ORDER BY w.resource) AS tables,
           bool_or(r.first_read < w.first_write_end) AS read_before_write,
           bool_or(r.first_read >= w.first_write_end AND r.first_read < w.write_settled) AS read_uncommitted,
           bool_and(r.last_read >= w.first_write_end) AS final_read_after,
           bool_or(r.reads > 1 AND r.first_read < w.first_write_end AND r.last_read >= w.first_write_end) AS reread
    FROM access w JOIN access r
      ON r.inst_no = w.inst_no AND r.db_system = w.db_system AND r.resource = w.resource
     AND r.step_no <> w.step_no
    WHERE w.first_write_end IS NOT NULL AND r.first_read IS NOT NULL
    GROUP BY ALL
),
explained AS (
    SELECT sa.step_no AS a_no, sb.step_no AS b_no
    FROM _explained_pairs x
    JOIN _ord_steps sa ON sa.workflow_id = x.workflow_id AND sa.step_id = x.a
    JOIN _ord_steps sb ON sb.workflow_id = x.workflow_id AND sb.step_id = x.b
),
pairs AS (
    SELECT a.step_no AS a_no, b.step_no AS b_no, a.inst_no,
       a.last_end AS a_end, b.first_start AS b_first, b.final_start AS b_final,
       b.attempts AS b_attempts, b.any_error AS b_error, a.inst_start,
       d.inst_no IS NOT NULL AS data_seen, coalesce(d.read_before_write, false) AS read_before_write,
       coalesce(d.reread, false) AS reread,
       coalesce(d.read_uncommitted AND NOT d.read_before_write, false) AS uncertain,
       CASE WHEN d.inst_no IS NOT NULL THEN d.read_before_write ELSE b.first_start < a.last_end END AS broken,
       CASE WHEN d.inst_no IS NOT NULL THEN d.final_read_after ELSE a.last_end <= b.final_start END AS final_ok
    FROM _ord_occ a JOIN _ord_occ b   -- one instance is one workflow's
      ON a.inst_no = b.inst_no AND a.step_no <> b.step_no
    LEFT JOIN data d ON d.inst_no = a.inst_no AND d.a_no = a.step_no AND d.b_no = b.step_no
    WHERE NOT EXISTS (SELECT 1 FROM explained x WHERE x.a_no = a.step_no AND x.b_no = b.step_no)
)
"""

# The common cause of (A, B): of the steps causing both, the one fewest hops (then edges) above them.
CAUSE_SQL = """
CREATE OR REPLACE TEMP TABLE _ord_cause AS
WITH c AS (
    SELECT p.a_no, p.b_no, ha.ancestor AS common_cause, ha.hops AS hops_a, hb.hops AS hops_b,
           row_number() OVER (PARTITION BY p.a_no, p.b_no
                              ORDER BY ha.hops + hb.hops, ha.edges + hb.edges, ha.ancestor) AS rank
    FROM _ord_step_pairs p
    JOIN _ancestor_hops ha ON ha.workflow_id = p.workflow_id AND ha.step = p.step_a
    JOIN _ancestor_hops hb ON hb.workflow_id = p.workflow_id AND hb.step = p.step_b AND hb.ancestor = ha.ancestor
)
SELECT p.a_no, p.b_no, c.common_cause, c.hops_a, c.hops_b, da.hops AS depth_a, db.hops AS depth_b
FROM _ord_step_pairs p
LEFT JOIN c ON c.a_no = p.a_no AND c.b_no = p.b_no AND c.rank = 1
LEFT JOIN _ancestor_hops da ON da.workflow_id = p.workflow_id AND da.step = p.step_a AND da.ancestor = p.workflow_id
LEFT JOIN _ancestor_hops db ON db.workflow_id = p.workflow_id AND db.step = p.step_b AND db.ancestor = p.workflow_id
"""

# The event of a common cause that is a publish (both steps consume the message it sent).
CAUSE_EVENT_SQL = """
CREATE OR REPLACE TEMP TABLE _ord_cause AS
SELECT c.*, e.event AS cause_event
FROM _ord_cause c
LEFT JOIN (SELECT step_id, any_value(operation) AS event FROM span_steps WHERE role = 'producer' GROUP BY step_id) e
  ON e.step_id = c.common_cause
"""

ORDERINGS_SQL = f"""
CREATE OR REPLACE TABLE step_orderings AS
WITH {PAIRS_SQL},
causes AS (
    SELECT common_cause, row_number() OVER () AS cause_no
    FROM (SELECT DISTINCT common_cause FROM _ord_cause WHERE common_cause IS NOT NULL)
),
cause_time AS (   -- when the common cause happened in each instance (its first span's start)
    SELECT o.inst_no, k.cause_no, min(s.start_adj) AS cause_start
    FROM span_steps s JOIN causes k ON k.common_cause = s.step_id
    JOIN (SELECT DISTINCT instance_id, inst_no FROM _ord_occ) o ON o.instance_id = s.instance_id
    GROUP BY ALL
),
pair_cause AS (   -- per step pair; its other columns are joined once per pair, after the aggregation
    SELECT c.a_no, c.b_no, k.cause_no FROM _ord_cause c LEFT JOIN causes k ON k.common_cause = c.common_cause
),
p AS (
    SELECT p.*, coalesce(ct.cause_start, p.inst_start) AS cause_start,
           b_attempts > 1 AS b_retry,
           (b_attempts > 1 OR b_error OR reread) AS harmed
    FROM pairs p
    JOIN pair_cause c USING (a_no, b_no)
    LEFT JOIN cause_time ct ON ct.inst_no = p.inst_no AND ct.cause_no = c.cause_no
),
agg AS (   -- count_if, not count(*) FILTER: over the 12.7M pair rows of a 1M-span bench set
           -- DuckDB took 0.74 s for 15 filtered counts against 0.37 s for 15 count_if (HUGEINT,
           -- cast back to count's BIGINT); the statement went from 2.0-2.2 s to 1.45-1.55 s
    SELECT a_no, b_no,
       count(*) AS both_instances,
       count_if(a_end <= b_final)::BIGINT AS a_before_b,
       count_if(b_first < a_end)::BIGINT AS b_started_early,
       count_if(b_first < a_end AND b_error)::BIGINT AS b_early_errors,
       count_if(b_first < a_end AND b_attempts > 1)::BIGINT AS b_early_retries,
       count_if(b_first >= a_end AND b_error)::BIGINT AS b_errors_when_ordered,
       count_if(b_attempts > 1)::BIGINT AS b_retried,
       -- the order judged on the shared table where there is one, else on the handler spans
       count_if(data_seen)::BIGINT AS data_instances,
       count_if(read_before_write)::BIGINT AS reads_before_write,
       count_if(final_ok)::BIGINT AS final_ordered,
       count_if(broken)::BIGINT AS broken_instances,
       count_if(broken AND harmed)::BIGINT AS broken_harmed,
       count_if(broken AND b_error)::BIGINT AS broken_errors,
       count_if(broken AND b_retry)::BIGINT AS broken_retries,
       count_if(broken AND reread)::BIGINT AS broken_rereads,
       count_if(uncertain)::BIGINT AS uncertain_instances,
       count_if(NOT broken AND NOT uncertain AND harmed)::BIGINT AS ordered_harmed,
       quantile_cont((b_final - a_end) / 1e6, [0.5, 0.9]) FILTER (WHERE a_end <= b_final) AS gap_ms,
       quantile_cont((b_first - inst_start) / 1e6, 0.5) AS b_start_p50_ms,
       quantile_cont((a_end - inst_start) / 1e6, 0.5) AS a_end_p50_ms,
       stddev_samp((a_end - inst_start) / 1e6) AS a_end_stddev_ms,
       corr((b_final - inst_start) / 1e6, (a_end - inst_start) / 1e6)
           FILTER (WHERE a_end <= b_final) AS follow_corr,
       regr_slope((b_final - inst_start) / 1e6, (a_end - inst_start) / 1e6)
           FILTER (WHERE a_end <= b_final) AS follow_slope,
       -- the same, measured from the common cause: variation both inherit from above is taken out
       stddev_samp((a_end - cause_start) / 1e6) AS cause_a_end_stddev_ms,
       corr((b_final - cause_start) / 1e6, (a_end - cause_start) / 1e6)
           FILTER (WHERE a_end <= b_final) AS cause_follow_corr,
       regr_slope((b_final - cause_start) / 1e6, (a_end - cause_start) / 1e6)
           FILTER (WHERE a_end <= b_final) AS cause_follow_slope,
       -- the five smallest, without sorting every instance's id into a list first
       min(inst_no, 5) AS example_nos,
       min(inst_no, 5) FILTER (WHERE broken) AS broken_example_nos
    FROM p
    GROUP BY a_no, b_no
),
shared AS (   -- the tables of the pairs' data rows, apart: a list column through every pair cost more
    SELECT d.a_no, d.b_no, list_sort(list_distinct(flatten(list(d.tables)))) AS shared_tables
    FROM data d JOIN pair_cause c ON c.a_no = d.a_no AND c.b_no = d.b_no
    GROUP BY d.a_no, d.b_no
),
examples AS (   -- the instance numbers of the examples back to their entry trace ids
    SELECT x.a_no, x.b_no, x.broken, list(e.entry_trace_id ORDER BY x.n) AS trace_ids
    FROM (SELECT a_no, b_no, false AS broken, unnest(example_nos) AS n FROM agg
          UNION ALL SELECT a_no, b_no, true, unnest(broken_example_nos) FROM agg) x
    JOIN (SELECT DISTINCT inst_no, entry_trace_id FROM _ord_occ) e ON e.inst_no = x.n
    GROUP BY ALL
)
SELECT sa.workflow_id, sa.step_id AS step_a, sb.step_id AS step_b, sa.service AS service_a,
       sb.service AS service_b, sa.event AS event_a, sb.event AS event_b,
       agg.both_instances, agg.a_before_b, agg.b_started_early, agg.b_early_errors,
       agg.b_early_retries, agg.b_errors_when_ordered, agg.b_retried, agg.data_instances,
       sh.shared_tables, agg.reads_before_write, agg.final_ordered, agg.broken_instances,
       agg.broken_harmed, agg.broken_errors, agg.broken_retries, agg.broken_rereads,
       agg.uncertain_instances, agg.ordered_harmed, c.common_cause, c.cause_event, c.hops_a,
       c.hops_b, c.depth_a, c.depth_b,
       agg.gap_ms[1] AS gap_p50_ms, agg.gap_ms[2] AS gap_p90_ms, agg.b_start_p50_ms, agg.a_end_p50_ms,
       agg.a_end_stddev_ms, agg.follow_corr, agg.follow_slope, agg.cause_a_end_stddev_ms,
       agg.cause_follow_corr, agg.cause_follow_slope,
       ex.trace_ids AS example_trace_ids, bx.trace_ids AS broken_example_trace_ids
FROM agg JOIN _ord_steps sa ON sa.step_no = agg.a_no JOIN _ord_steps sb ON sb.step_no = agg.b_no
JOIN _ord_cause c ON c.a_no = agg.a_no AND c.b_no = agg.b_no
LEFT JOIN shared sh ON sh.a_no = agg.a_no AND sh.b_no = agg.b_no
LEFT JOIN examples ex ON ex.a_no = agg.a_no AND ex.b_no = agg.b_no AND NOT ex.broken
LEFT JOIN examples bx ON bx.a_no = agg.a_no AND bx.b_no = agg.b_no AND bx.broken
"""


# Replies: a consumer step whose spans start and end inside the span of a handler step of the same
# service in the same trace, in at least REPLY_SHARE of its occurrences, and causally below it: the
# handler waited for it (request-reply over a broker: asked on one queue, answered on a reply
# queue). The wait sequences what the handler does afterwards as a synchronous call would, so the
# reply counts as called (`synchronously_sequenced`). 0.9: a reply that sometimes arrives after the
# handler gave up waiting (a timeout) is still one.
REPLY_SHARE = 0.9
REPLIES_SQL = f"""
WITH occurrences AS (SELECT workflow_id, step_id, count(*) AS n FROM span_steps WHERE role = 'consumer' GROUP BY ALL),
enclosed AS (
    SELECT c.workflow_id, c.step_id AS waiter, a.step_id AS reply, count(DISTINCT a.span_id) AS k
    FROM span_steps a JOIN span_steps c
      ON c.trace_id = a.trace_id AND c.service = a.service AND c.step_id <> a.step_id
     AND c.start_adj < a.start_adj AND a.end_adj <= c.end_adj
    WHERE a.role = 'consumer' AND c.{_H}
    GROUP BY ALL
)
SELECT e.workflow_id, e.waiter, e.reply FROM enclosed e
JOIN occurrences o ON o.workflow_id = e.workflow_id AND o.step_id = e.reply
WHERE e.k >= {REPLY_SHARE} * o.n
"""


def _with_replies(con: duckdb.DuckDBPyConnection, graphs: dict[str, nx.DiGraph]) -> dict[str, nx.DiGraph]:
    """The step graphs with each reply (REPLIES_SQL), and every step on the way from the request to
    it (the service that answered), also called by the handler that waited for them."""
    out = dict(graphs)
    for wf, waiter, reply in con.execute(REPLIES_SQL).fetchall():
        graph = out.get(wf)
        if graph is None or waiter not in graph or reply not in graph:
            continue
        between = nx.descendants(graph, waiter) & (nx.ancestors(graph, reply) | {reply})
        if reply not in between:
            continue
        if out[wf] is graphs[wf]:
            out[wf] = graph = graph.copy()
        for step in between:
            if not graph.has_edge(waiter, step):
                graph.add_edge(waiter, step, via="call")
    return out


def build_orderings(con: duckdb.DuckDBPyConnection) -> None:
    graphs = step_graphs(con)
    handlers = {s for (s,) in con.execute(
        "SELECT DISTINCT step_id FROM span_steps WHERE role IN ('consumer', 'server')").fetchall()}
    con.register("_explained_pairs", _excluded_pairs(_with_replies(con, graphs), handlers))
    con.register("_ancestor_hops", ancestor_hops(graphs, handlers))
    try:
        for sql in (OCC_SQL, STEPS_SQL, ACCESS_SQL, STEP_PAIRS_SQL, CAUSE_SQL, CAUSE_EVENT_SQL, ORDERINGS_SQL):
            con.execute(sql)
    finally:
        con.unregister("_explained_pairs")
        con.unregister("_ancestor_hops")
        for scratch in ("_ord_occ", "_ord_steps", "_ord_access", "_ord_step_pairs", "_ord_cause"):
            con.execute(f"DROP TABLE IF EXISTS {scratch}")
