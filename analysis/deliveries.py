"""Stage: every delivery of a message to a consumer, numbered per message, with how it ended.

No instrumentation records a redelivered flag or a receive count, so a retry that a broker or a
task queue performs shows only as the same message handled again by the same service. This stage
makes that visible once, for the retry detector and anyone ordering steps by their final attempt.

What counts as a delivery (one row of `deliveries`):
- a consumer span that carries a message key: its `messaging_message_id` (pika, amqplib, Celery's
  task id, SQS' MessageId on boto3sqs `process` spans), else its parent producer span (RabbitMQ and
  Kafka consumers are children of the publish, and a redelivery has the same parent);
- a client span that received a message: it carries a message id and its operation says receive
  (botocore's `SQS.ReceiveMessage`, the only record of an SQS attempt whose consumer span was never
  exported, see below).
Spans of one poll are one delivery: a consumer or receive span whose parent is a consumer span of
the same service (boto3sqs' `X process` and botocore's `SQS.ReceiveMessage` under `X receive`) is
grouped with its siblings of the same message under that parent. A consumer span without a key
(an empty long poll) is no delivery.

A message is (service, message key). Its deliveries are numbered by start time (`attempt`, 1..
`attempts`); `is_redelivery` is attempt > 1. `retry_count` is the explicit retry counter when the
instrumentation sets one (`retry_attempt`: `messaging.retry.attempt` and kin; Celery's
`celery.retries`); `explicit_retry` also holds when the previous attempt ended in Celery's RETRY
state (`self.retry` republishes the same task id from inside the failing run).

How a delivery ended (`ended`): `error` (the consumer span has error status), `retry` (Celery's
`celery.state=RETRY`, status UNSET), `unfinished` (only its receive span was exported: boto3sqs
ends a process span only when the message is deleted, so an attempt that left the message for
redelivery never exports it), `redelivered` (none of those, yet the same message came again), else
`done`. `gave_up` marks an attempt followed by another delivery of the message that ended in
error, retry or unfinished, or did less than the final attempt: its work (the distinct steps of
its descendants in its own service, `work_steps`) lacks a step the final attempt has (a RabbitMQ
nack leaves no mark on the span; the failed attempt only misses its write). An at-least-once
duplicate after complete work is a redelivery that did not give up. `failed_calls` counts the
error spans among its work: a handler that gave up because a call failed met a transient fault,
one that gave up with no failing call decided itself that a condition was not met yet. A call
answered 404, 409, 412 or 425 (NOT_YET_STATUSES: not found, conflict, precondition failed, too
early) is such a condition, not a fault: the record or state it asked for was not there yet.

Orphaned spans (`delivery_orphans`, one row per missing parent): spans of a consuming service
whose parent span id is in no exported span, grouped by that missing parent. When the missing
parent is the consumer span of an unfinished delivery (the latest unfinished delivery of the
service in the same trace that started before the orphans), the row names it and its spans count
as that delivery's work (`orphaned_spans`); otherwise `delivery_span_id` is NULL and the row is
only evidence. Consumer spans among the orphans (the next polls, which boto3sqs runs in the leaked
context) are counted apart (`polls`), not as work.

Reads `span_steps`, `spans` (attributes Celery keeps outside the typed columns); writes
`deliveries`, `delivery_orphans`.
"""

from __future__ import annotations

import duckdb

MAX_DEPTH = 64  # guards the recursive walk against parent cycles in broken data


def receive_client(alias: str = "") -> str:
    """SQL: the span (of table alias `alias`) is a client span that received a message (botocore
    `SQS.ReceiveMessage`): it names the message it got and its operation says receive."""
    a = f"{alias}." if alias else ""
    return (f"({a}role = 'client' AND {a}messaging_message_id IS NOT NULL "
            f"AND regexp_matches({a}operation, '(?i)receive'))")


# The consumer and receive spans that carry a message key (see the module docstring), with it:
# a subquery of _GROUPS_SQL, its only reader (the stage alone on the bench's 1M-span store, twice
# each: 2.06-2.16 s so, 2.10-2.68 s with these spans in a table of their own).
_SPANS_SQL = f"""
SELECT s.trace_id, s.span_id, s.service, s.step_id, s.workflow_id, s.instance_id, s.start_adj, s.end_adj,
       s.is_error, s.retry_attempt, s.messaging_destination AS destination, s.role = 'consumer' AS is_handler,
       coalesce(s.messaging_message_id, 'producer span ' || p.trace_id || '/' || p.span_id) AS message_key,
       CASE WHEN s.messaging_message_id IS NOT NULL THEN 'message_id' ELSE 'producer_span' END AS key_kind,
       CASE WHEN p.role = 'consumer' AND p.service = s.service THEN p.span_id ELSE s.span_id END AS poll_span_id
FROM span_steps s
LEFT JOIN span_steps p ON p.trace_id = s.trace_id AND p.span_id = s.parent_span_id
WHERE (s.role = 'consumer' OR {receive_client("s")})
  AND (s.messaging_message_id IS NOT NULL OR p.role = 'producer')
"""

# One row per (service, message, trace, poll): the consumer span if one was exported, else the receive.
# Only attributes that mention celery are parsed for Celery's state and retries (a text search is
# far cheaper than parsing every consumer's JSON), and only those spans are joined: joining all of
# them carried every span's attributes through the join (0.33 s of 0.49 at 1M spans). Each group's
# span is one of `span_steps`, so each has its row in `spans`.
_GROUPS_SQL = f"""
CREATE OR REPLACE TEMP TABLE _delivery_groups AS
SELECT g.*, json_extract_string(sp.attributes, '$."celery.state"') AS state,
       greatest(coalesce(g.retry_attr, 0),
                coalesce(TRY_CAST(json_extract_string(sp.attributes, '$."celery.retries"') AS INTEGER), 0)) AS retry_count
FROM (
    SELECT service, message_key, trace_id, poll_span_id,
           first(span_id ORDER BY is_handler DESC, start_adj, span_id) AS span_id,
           first(step_id ORDER BY is_handler DESC, start_adj, span_id) AS own_step_id,
           first(workflow_id ORDER BY is_handler DESC, start_adj, span_id) AS workflow_id,
           first(instance_id ORDER BY is_handler DESC, start_adj, span_id) AS instance_id,
           first(destination ORDER BY is_handler DESC, start_adj, span_id) AS destination,
           any_value(key_kind) AS key_kind,
           bool_or(is_handler) AS handler_exported,
           bool_or(is_error AND is_handler) AS is_error,
           max(retry_attempt) AS retry_attr,
           min(start_adj) AS start_adj, max(end_adj) AS end_adj
    FROM ({_SPANS_SQL}) d
    GROUP BY service, message_key, trace_id, poll_span_id
) g
LEFT JOIN (SELECT trace_id, span_id, attributes FROM spans WHERE contains(attributes, '"celery.')) sp
  ON sp.trace_id = g.trace_id AND sp.span_id = g.span_id
"""

# Spans of a consuming service whose parent was never exported, grouped by the missing parent.
_ORPHAN_CHILDREN_SQL = """
CREATE OR REPLACE TEMP TABLE _orphan_children AS
SELECT s.trace_id, s.span_id, s.parent_span_id AS missing_span_id, s.service, s.role, s.start_adj, s.step_id,
       s.is_error
FROM span_steps s
WHERE s.parent_span_id IS NOT NULL AND s.service IN (SELECT DISTINCT service FROM _delivery_groups)
  AND NOT EXISTS (SELECT 1 FROM span_steps p WHERE p.trace_id = s.trace_id AND p.span_id = s.parent_span_id)
"""

# The missing parent is the consumer span of the latest unfinished delivery before its children.
_ATTRIBUTION_SQL = """
CREATE OR REPLACE TEMP TABLE _orphan_owner AS
SELECT o.trace_id, o.missing_span_id, o.service, o.first_start, d.span_id AS delivery_span_id
FROM (SELECT trace_id, missing_span_id, service, min(start_adj) FILTER (WHERE role <> 'consumer') AS first_start
      FROM _orphan_children GROUP BY ALL) o
LEFT JOIN _delivery_groups d
  ON d.trace_id = o.trace_id AND d.service = o.service AND NOT d.handler_exported AND d.start_adj <= o.first_start
QUALIFY row_number() OVER (PARTITION BY o.trace_id, o.missing_span_id, o.service
                           ORDER BY d.start_adj DESC NULLS LAST, d.span_id) = 1
"""

# HTTP answers that say the state asked for is not there (yet), not that the call failed.
NOT_YET_STATUSES = (404, 409, 412, 425)

# The work of each delivery: its descendants in its own service (stopping at nested consumer spans),
# and for an unfinished one the orphans under its missing consumer span with their descendants.
# The walk carries each span's step and error (the delivery's own row, depth 0, needs neither):
# joining them back from span_steps afterwards cost a hash table over every span.
_WORK_SQL = f"""
CREATE OR REPLACE TEMP TABLE _delivery_work AS
WITH RECURSIVE work(trace_id, span_id, delivery_span_id, service, depth, step_id, is_error) AS (
    SELECT trace_id, span_id, span_id, service, 0, CAST(NULL AS VARCHAR), CAST(NULL AS BOOLEAN)
    FROM _delivery_groups WHERE handler_exported
    UNION ALL
    SELECT c.trace_id, c.span_id, w.delivery_span_id, c.service, 1, c.step_id, c.is_error
    FROM _orphan_children c
    JOIN _orphan_owner w ON w.trace_id = c.trace_id AND w.missing_span_id = c.missing_span_id AND w.service = c.service
    WHERE w.delivery_span_id IS NOT NULL AND c.role <> 'consumer'
    UNION ALL
    SELECT s.trace_id, s.span_id, w.delivery_span_id, w.service, w.depth + 1, s.step_id, s.is_error
    FROM work w JOIN span_steps s ON s.trace_id = w.trace_id AND s.parent_span_id = w.span_id
    WHERE s.service = w.service AND s.role <> 'consumer' AND w.depth < {MAX_DEPTH}
)
SELECT trace_id, delivery_span_id, list(step_id ORDER BY step_id) FILTER (WHERE below) AS work_steps,
       CAST(coalesce(sum(failed) FILTER (WHERE below), 0) AS BIGINT) AS failed_calls
FROM (  -- one row per step first: a list(DISTINCT) took three aggregations and a join
    SELECT w.trace_id, w.delivery_span_id, w.step_id, w.depth > 0 AS below,
           count(*) FILTER (WHERE w.is_error AND nf.span_id IS NULL) AS failed
    FROM work w
    LEFT JOIN (SELECT trace_id, span_id FROM spans WHERE http_status_code IN {NOT_YET_STATUSES}) nf
           ON nf.trace_id = w.trace_id AND nf.span_id = w.span_id
    GROUP BY w.trace_id, w.delivery_span_id, w.step_id, w.depth > 0
)
GROUP BY trace_id, delivery_span_id
"""

_DELIVERIES_SQL = """
CREATE OR REPLACE TABLE deliveries AS
WITH numbered AS (
    SELECT g.trace_id, g.span_id, g.service,
           -- the step of the message's consumer span, also for an attempt only its receive recorded
           coalesce(min(CASE WHEN g.handler_exported THEN g.own_step_id END)
                        OVER (PARTITION BY g.service, g.message_key), g.own_step_id) AS step_id,
           g.workflow_id, g.instance_id, g.destination, g.message_key, g.key_kind, g.start_adj, g.end_adj,
           row_number() OVER msg AS attempt, count(*) OVER (PARTITION BY g.service, g.message_key) AS attempts,
           g.handler_exported, g.is_error, g.state, g.retry_count,
           g.retry_count > 0 OR coalesce(lag(g.state) OVER msg = 'RETRY', false) AS explicit_retry,
           coalesce(w.work_steps, []) AS work_steps, coalesce(w.failed_calls, 0) AS failed_calls,
           coalesce(o.orphaned_spans, 0) AS orphaned_spans,
           -- the final attempt's work, over the attempts' own order (a second sort by attempt cost 0.3 s)
           last(coalesce(w.work_steps, [])) OVER (PARTITION BY g.service, g.message_key ORDER BY g.start_adj, g.span_id
                                                  ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS final_steps
    FROM _delivery_groups g
    LEFT JOIN _delivery_work w ON w.trace_id = g.trace_id AND w.delivery_span_id = g.span_id
    LEFT JOIN (SELECT a.trace_id, a.delivery_span_id, count(*) AS orphaned_spans
               FROM _orphan_owner a JOIN _orphan_children c USING (trace_id, missing_span_id, service)
               WHERE c.role <> 'consumer' AND a.delivery_span_id IS NOT NULL GROUP BY ALL) o
      ON o.trace_id = g.trace_id AND o.delivery_span_id = g.span_id
    WINDOW msg AS (PARTITION BY g.service, g.message_key ORDER BY g.start_adj, g.span_id)
),
ended AS (
    SELECT *, attempt > 1 AS is_redelivery,
           CASE WHEN is_error THEN 'error' WHEN state = 'RETRY' THEN 'retry'
                WHEN NOT handler_exported THEN 'unfinished'
                WHEN attempt < attempts THEN 'redelivered' ELSE 'done' END AS ended
    FROM numbered
)
SELECT * EXCLUDE (final_steps, missing),
       CASE WHEN attempt < attempts THEN coalesce(missing, []) ELSE [] END AS missing_steps,
       attempt < attempts AND (ended IN ('error', 'retry', 'unfinished') OR coalesce(array_length(missing), 0) > 0) AS gave_up
FROM (SELECT *, list_sort(list_filter(final_steps, lambda x: NOT list_contains(work_steps, x))) AS missing
      FROM ended)
"""

_ORPHANS_SQL = """
CREATE OR REPLACE TABLE delivery_orphans AS
SELECT c.trace_id, c.missing_span_id, c.service, a.delivery_span_id,
       count(*) FILTER (WHERE c.role <> 'consumer') AS spans, count(*) FILTER (WHERE c.role = 'consumer') AS polls
FROM _orphan_children c JOIN _orphan_owner a USING (trace_id, missing_span_id, service)
GROUP BY ALL
"""

_SCRATCH = ("_delivery_groups", "_orphan_children", "_orphan_owner", "_delivery_work")


def build_deliveries(con: duckdb.DuckDBPyConnection) -> None:
    for sql in (_GROUPS_SQL, _ORPHAN_CHILDREN_SQL, _ATTRIBUTION_SQL, _WORK_SQL, _DELIVERIES_SQL,
                _ORPHANS_SQL):
        con.execute(sql)
    for table in _SCRATCH:
        con.execute(f"DROP TABLE {table}")
