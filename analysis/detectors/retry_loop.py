"""retry_loop: a service that retries (redelivery, resends, polling) to wait for something.

Detects: a message handled again by the same service after its handler gave it back, or a client
step repeated within one workflow instance (its earlier attempts failing, a later one succeeding)
or marked with a retry attribute (`messaging.retry.attempt`, `http.request.resend_count`, ...).
Looping until it works means the service is waiting for a condition nobody tells it about (often
an implicit ordering).

Consumers, from `deliveries` (no instrumentation marks a redelivery: a message is the same message
id, else the same parent producer span, handled again by the same service): a message is retried
when an attempt gave up and the message came again (the attempt ended in error, in Celery's RETRY
state, unfinished - its consumer span never exported, as boto3sqs does for a message left for
redelivery - or it lacked work the final attempt did, as a RabbitMQ nack leaves no other mark), or
when the instrumentation counts retries (`messaging.retry.attempt`, `celery.retries`). A redelivery
after complete work (an at-least-once duplicate) is not a retry.

Clients, from `span_steps`: the same client step repeated in one instance with errors, or with a
retry attribute. Receive calls that fetched a message (`SQS.ReceiveMessage`) are deliveries, not
client retries.

Assumptions and thresholds:
- MIN_RETRIED_INSTANCES (2) retried messages (consumers) or instances (clients): one is an
  accident, not a habit.
- A handler that gave a message back while none of its calls failed decided itself that a
  condition was not met yet: that is waiting, and is reported even when each message came back
  once, if most (MIN_WAITED_SHARE, 0.5) of the retried messages are like that.
- Otherwise (a client resend, or a handler that gave up because a call failed) the retries must
  loop: MIN_EXTRA_PER_RETRIED (1.5) extra attempts per retried message or instance on average, or
  MIN_LOOPED_SHARE (0.3) of them with three attempts or more. One resend of a transient error
  (a 503 answered by one resend) is ordinary fault tolerance and is not reported.

Evidence: the step, messages (or instances) with the step, how many were retried, extra attempts,
attempts per retried message (max, p50), how many looped (three attempts or more), recovered (the
last attempt succeeded), how the given-up attempts ended (`failed_attempts`), the work they lacked
that the final attempt did (`missing_steps`), orphaned spans of unexported attempts (and those of
the service no delivery could claim), the errors the failed attempts gave, example traces.
"""

from __future__ import annotations

from choreoscope.analysis.deliveries import receive_client
from choreoscope.analysis.detectors.query_helpers import ratio, rows
from choreoscope.analysis.findings import Finding
from choreoscope.analysis.steps import templated

MIN_RETRIED_INSTANCES = 2
MIN_EXTRA_PER_RETRIED = 1.5   # mean extra attempts per retried message or instance ...
MIN_LOOPED_SHARE = 0.3        # ... or share of retried ones with three attempts or more
MIN_WAITED_SHARE = 0.5        # ... or, consumers only: share of retried messages given back with no failing call

# Consumer steps: one row per (workflow, service, step) over the messages it handled. A message
# handled once (nearly all) is its delivery as it is: the arg_mins over strings, for the few handled
# again only, were most of the detector's time; and one grouping by instance counts the step's
# instances, where four distinct counts each grouped every message again.
DELIVERIES_SQL = """
WITH counted AS (SELECT service, message_key, count(*) AS n FROM deliveries GROUP BY service, message_key),
counted_deliveries AS (
    SELECT d.*, c.n FROM deliveries d
    JOIN counted c ON c.service IS NOT DISTINCT FROM d.service AND c.message_key IS NOT DISTINCT FROM d.message_key
),
messages AS (
    SELECT service, message_key, step_id,
           CASE WHEN attempt IS NOT NULL THEN workflow_id END AS workflow_id,
           CASE WHEN attempt IS NOT NULL THEN instance_id END AS instance_id,
           CASE WHEN attempt IS NOT NULL THEN trace_id END AS trace_id, attempts,
           (gave_up IS TRUE)::BIGINT AS gave_up, ((gave_up AND failed_calls > 0) IS TRUE)::BIGINT AS gave_up_on_failed_call,
           explicit_retry AS explicit, CASE WHEN attempt IS NOT NULL THEN ended END AS last_ended
    FROM counted_deliveries WHERE n = 1
    UNION ALL
    SELECT service, message_key, any_value(step_id) AS step_id,
           arg_min(workflow_id, attempt) AS workflow_id, arg_min(instance_id, attempt) AS instance_id,
           arg_min(trace_id, attempt) AS trace_id, max(attempts) AS attempts,
           count(*) FILTER (WHERE gave_up) AS gave_up,
           count(*) FILTER (WHERE gave_up AND failed_calls > 0) AS gave_up_on_failed_call,
           bool_or(explicit_retry) AS explicit, arg_max(ended, attempt) AS last_ended
    FROM counted_deliveries WHERE n > 1 GROUP BY service, message_key
),
flagged AS (
    SELECT *, (attempts > 1 AND gave_up > 0) OR explicit AS retried FROM messages
),
per_step AS (
    SELECT workflow_id, service, step_id, count(*) AS messages,
           count(*) FILTER (WHERE retried) AS retried_messages,
           sum(attempts - 1) FILTER (WHERE retried) AS extra_attempts, max(attempts) AS max_attempts,
           median(attempts) FILTER (WHERE retried) AS p50_attempts,
           count(*) FILTER (WHERE retried AND attempts >= 3) AS looped,
           count(*) FILTER (WHERE retried AND last_ended = 'done') AS recovered,
           count(*) FILTER (WHERE retried AND gave_up_on_failed_call = 0) AS waited,
           list(trace_id ORDER BY attempts DESC, trace_id) FILTER (WHERE retried)[1:5] AS trace_ids
    FROM flagged GROUP BY ALL
    HAVING count(*) FILTER (WHERE retried) >= ?
),
per_instance AS (
    SELECT workflow_id, service, step_id, instance_id, bool_or(retried) AS retried,
           bool_or(retried AND attempts >= 3) AS looped, bool_or(retried AND last_ended = 'done') AS recovered
    FROM flagged GROUP BY ALL
),
instance_counts AS (
    SELECT workflow_id, service, step_id, count(instance_id) AS instances,
           count(instance_id) FILTER (WHERE retried) AS retried_instances,
           count(instance_id) FILTER (WHERE looped) AS looped_instances,
           count(instance_id) FILTER (WHERE recovered) AS recovered_instances
    FROM per_instance GROUP BY ALL
)
SELECT s.workflow_id, s.service, s.step_id, s.messages, i.instances, s.retried_messages, i.retried_instances,
       s.extra_attempts, s.max_attempts, s.p50_attempts, s.looped, s.recovered, i.looped_instances,
       i.recovered_instances, s.waited, s.trace_ids
FROM per_step s
JOIN instance_counts i ON i.workflow_id IS NOT DISTINCT FROM s.workflow_id AND i.service IS NOT DISTINCT FROM s.service
                      AND i.step_id IS NOT DISTINCT FROM s.step_id
ORDER BY service, retried_messages DESC, step_id
"""

# How the attempts that gave up ended, what they lacked, and their orphaned spans, per step and
# service (one query for every step, looked up per candidate: a query per step cost seconds).
GAVE_UP_SQL = """
SELECT step_id, service, ended, count(*) AS n, sum(orphaned_spans) AS orphaned_spans,
       list_sort(list_distinct(flatten(list(missing_steps)))) AS missing_steps
FROM deliveries WHERE gave_up
GROUP BY step_id, service, ended ORDER BY step_id, service, n DESC, ended
"""

# Per service: spans whose parent was never exported and that no delivery could claim.
UNATTRIBUTED_SQL = """
SELECT service, sum(spans) AS spans FROM delivery_orphans WHERE delivery_span_id IS NULL GROUP BY service
"""

# Client steps: one row per (workflow, service, step) over the instances where it ran.
CLIENT_SQL = f"""
WITH attempts AS (
    SELECT s.workflow_id, s.instance_id, s.service, s.step_id, count(*) AS attempts,
           count(*) FILTER (WHERE s.is_error) AS errors,
           arg_max(s.is_error, s.start_adj) AS last_failed,
           max(coalesce(s.retry_attempt, 0)) AS max_retry_attr,
           any_value(i.entry_trace_id) AS trace_id
    FROM span_steps s JOIN instances i USING (instance_id)
    WHERE s.role = 'client' AND NOT {receive_client("s")}
    GROUP BY s.workflow_id, s.instance_id, s.service, s.step_id
),
per_step AS (
    SELECT workflow_id, service, step_id, count(*) AS instances,
           count(*) FILTER (WHERE retried) AS retried_instances,
           sum(attempts - 1) FILTER (WHERE retried) AS extra_attempts,
           max(attempts) AS max_attempts,
           median(attempts) FILTER (WHERE retried) AS p50_attempts,
           count(*) FILTER (WHERE retried AND attempts >= 3) AS looped,
           count(*) FILTER (WHERE retried AND NOT last_failed) AS recovered,
           count(*) FILTER (WHERE retried AND attempts >= 3) AS looped_instances,
           count(*) FILTER (WHERE retried AND NOT last_failed) AS recovered_instances,
           list(trace_id ORDER BY attempts DESC, trace_id) FILTER (WHERE retried)[1:5] AS trace_ids
    FROM (SELECT *, (attempts > 1 AND (errors > 0 OR max_retry_attr > 0)) OR max_retry_attr > 0 AS retried
          FROM attempts)
    GROUP BY ALL
)
SELECT * FROM per_step WHERE retried_instances >= ? ORDER BY service, retried_instances DESC, step_id
"""

# Status messages with ids templated away, so one cause is one entry: the three most frequent per
# (step, workflow).
ERRORS_SQL = f"""
SELECT step_id, workflow_id, message, n FROM (
    SELECT s.step_id, s.workflow_id,
           coalesce(nullif({templated("sp.status_message")}, ''), 'error') AS message, count(*) AS n
    FROM span_steps s JOIN spans sp USING (trace_id, span_id)
    WHERE s.is_error
    GROUP BY ALL
)
QUALIFY row_number() OVER (PARTITION BY step_id, workflow_id ORDER BY n DESC, message) <= 3
ORDER BY step_id, workflow_id, n DESC, message
"""

_ENDED = {"error": "error status", "retry": "RETRY state", "unfinished": "consumer span never exported",
          "redelivered": "stopped short of the final attempt's work"}


def _loops(extra: float, looped: float) -> bool:
    return extra >= MIN_EXTRA_PER_RETRIED or looped >= MIN_LOOPED_SHARE


def _grouped(con, sql: str, *key: str) -> dict[tuple, list[dict]]:
    """The rows of `sql` grouped by the `key` columns, in the query's order."""
    out: dict[tuple, list[dict]] = {}
    for r in rows(con, sql):
        out.setdefault(tuple(r[k] for k in key), []).append(r)
    return out


def detect(con) -> list[Finding]:
    best: dict[str, Finding] = {}

    def keep(finding: Finding) -> None:
        service = finding.services[0]
        if service not in best or best[service].confidence < finding.confidence:
            best[service] = finding

    consumer_steps = rows(con, DELIVERIES_SQL, [MIN_RETRIED_INSTANCES])
    client_steps = rows(con, CLIENT_SQL, [MIN_RETRIED_INSTANCES])
    if not consumer_steps and not client_steps:
        return []
    step_errors = _grouped(con, ERRORS_SQL, "step_id", "workflow_id")

    def errors_of(r: dict) -> dict:
        return {e["message"]: e["n"] for e in step_errors.get((r["step_id"], r["workflow_id"]), ())}

    gave_up_by_step = _grouped(con, GAVE_UP_SQL, "step_id", "service") if consumer_steps else {}
    unattributed_by_service = {r["service"]: r["spans"] for r in rows(con, UNATTRIBUTED_SQL)} if consumer_steps else {}
    for r in consumer_steps:
        retried = r["retried_messages"]
        extra, looped = ratio(r["extra_attempts"] or 0, retried), ratio(r["looped"], retried)
        waited = ratio(r["waited"], retried)
        if not _loops(extra, looped) and waited < MIN_WAITED_SHARE:
            continue
        gave_up = gave_up_by_step.get((r["step_id"], r["service"]), [])
        failed = {_ENDED.get(g["ended"], g["ended"]): g["n"] for g in gave_up}
        missing = sorted({m for g in gave_up for m in (g["missing_steps"] or [])})
        orphaned = int(sum(g["orphaned_spans"] or 0 for g in gave_up))
        unattributed = unattributed_by_service.get(r["service"])
        errors = errors_of(r)
        keep(_finding(r, retried, extra, looped, errors, extra_evidence={
            "messages": r["messages"], "retried_messages": retried, "looped_messages": r["looped"],
            "recovered_messages": r["recovered"], "waited_messages": r["waited"],
            "failed_attempts": failed, "missing_steps": missing, "orphaned_spans": orphaned,
            "unattributed_orphaned_spans": int(unattributed or 0)},
            loops=_loops(extra, looped), how=(
            f"{retried} of {r['messages']} messages were handled again after an attempt gave up"
            + (f" ({', '.join(f'{n} {k}' for k, n in failed.items())})" if failed else "")
            + f", {extra:.1f} extra attempts per retried message on average (up to {r['max_attempts']} attempts)")))

    for r in client_steps:
        retried = r["retried_instances"]
        extra, looped = ratio(r["extra_attempts"] or 0, retried), ratio(r["looped"], retried)
        if not _loops(extra, looped):
            continue
        errors = errors_of(r)
        keep(_finding(r, retried, extra, looped, errors, extra_evidence={}, loops=True,
                      how=(f"{retried} of {r['instances']} instances needed {extra:.1f} extra attempts on average"
                           f" (up to {r['max_attempts']} attempts)")))
    return list(best.values())


def _finding(r: dict, retried: int, extra: float, looped: float, errors: dict, extra_evidence: dict,
             loops: bool, how: str) -> Finding:
    service = r["service"]
    confidence = 0.5 + 0.25 * min(1.0, looped / 0.5) + 0.2 * ratio(r["recovered"], retried)
    waits = f" (failed with: {', '.join(errors)})" if errors else ""
    return Finding(
        kind="retry_loop", services=[service], workflow=r["workflow_id"], confidence=confidence,
        severity="warning",
        summary=(f"{service} retries '{r['step_id'].split(' ', 2)[2]}'{' in a loop' if loops else ''}: {how}{waits},"
                 f" so it is waiting for something it is not told about."),
        recommendation=(
            f"Find what {service} waits for (often another service's step finishing) and make it an"
            f" explicit trigger: an event that says the condition holds, or an orchestrator that calls"
            f" {service} once it does. Retries should absorb transient faults, not sequence a workflow."
        ),
        evidence={"step": r["step_id"], "instances": r["instances"], "retried_instances": r["retried_instances"],
                  "extra_attempts": int(r["extra_attempts"] or 0), "max_attempts": r["max_attempts"],
                  "p50_attempts": float(r["p50_attempts"] or 0), "looped_instances": r["looped_instances"],
                  "recovered_instances": r["recovered_instances"], "errors": errors, **extra_evidence},
        trace_ids=list(r["trace_ids"] or []),
    )
