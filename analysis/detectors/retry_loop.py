"""retry_loop: a service that retries (redelivery, resends, polling) to wait for something.

Detects: a consumer or client step repeated within one workflow instance, its earlier attempts
failing and a later one succeeding, or marked with a retry attribute (`messaging.retry.attempt`,
`http.request.resend_count`, ...) — and repeated *in a loop*: several retries per instance, not a
single resend of a transient error. Looping until it works means the service is waiting for a
condition nobody tells it about (often an implicit ordering).

Assumption: consumer spans are where redelivery shows, client spans where resends show; a
server span repeated because its client resent is the client's retry. One resend per instance is
ordinary fault tolerance and is not reported.

Evidence: instances with the step, instances that retried, extra attempts, the largest number of
attempts, instances that looped (three attempts or more), the errors the failed attempts gave.
"""

from __future__ import annotations

from choreoscope.analysis.detectors.query_helpers import ratio, rows
from choreoscope.analysis.findings import Finding

MIN_RETRIED_INSTANCES = 2
MIN_EXTRA_PER_RETRIED = 1.5   # mean extra attempts per retried instance ...
MIN_LOOPED_SHARE = 0.3        # ... or share of retried instances with three attempts or more

SQL = """
WITH attempts AS (
    SELECT s.workflow_id, s.instance_id, s.service, s.step_id, count(*) AS attempts,
           count(*) FILTER (WHERE s.is_error) AS errors,
           arg_max(s.is_error, s.start_adj) AS last_failed,
           max(coalesce(s.retry_attempt, 0)) AS max_retry_attr,
           any_value(i.entry_trace_id) AS trace_id
    FROM span_steps s JOIN instances i USING (instance_id)
    WHERE s.role IN ('consumer', 'client')
    GROUP BY s.workflow_id, s.instance_id, s.service, s.step_id
),
per_step AS (
    SELECT workflow_id, service, step_id, count(*) AS instances,
           count(*) FILTER (WHERE retried) AS retried_instances,
           sum(attempts - 1) FILTER (WHERE retried) AS extra_attempts,
           max(attempts) AS max_attempts,
           count(*) FILTER (WHERE retried AND attempts >= 3) AS looped_instances,
           count(*) FILTER (WHERE retried AND NOT last_failed) AS recovered_instances,
           list(trace_id ORDER BY attempts DESC, trace_id) FILTER (WHERE retried)[1:5] AS trace_ids
    FROM (SELECT *, (attempts > 1 AND (errors > 0 OR max_retry_attr > 0)) OR max_retry_attr > 0 AS retried
          FROM attempts)
    GROUP BY ALL
)
SELECT * FROM per_step WHERE retried_instances >= ? ORDER BY service, retried_instances DESC, step_id
"""

ERRORS_SQL = """
SELECT coalesce(nullif(sp.status_message, ''), 'error') AS message, count(*) AS n
FROM span_steps s JOIN spans sp USING (trace_id, span_id)
WHERE s.step_id = ? AND s.workflow_id = ? AND s.is_error
GROUP BY ALL ORDER BY n DESC, message LIMIT 3
"""


def detect(con) -> list[Finding]:
    best: dict[str, Finding] = {}
    for r in rows(con, SQL, [MIN_RETRIED_INSTANCES]):
        retried = r["retried_instances"]
        extra = ratio(r["extra_attempts"] or 0, retried)
        looped = ratio(r["looped_instances"], retried)
        if extra < MIN_EXTRA_PER_RETRIED and looped < MIN_LOOPED_SHARE:
            continue
        errors = {e["message"]: e["n"] for e in rows(con, ERRORS_SQL, [r["step_id"], r["workflow_id"]])}
        confidence = 0.5 + 0.25 * min(1.0, looped / 0.5) + 0.2 * ratio(r["recovered_instances"], retried)
        service = r["service"]
        if service in best and best[service].confidence >= confidence:
            continue
        waits = f" (failed with: {', '.join(errors)})" if errors else ""
        best[service] = Finding(
            kind="retry_loop", services=[service], workflow=r["workflow_id"], confidence=confidence,
            severity="warning",
            summary=(f"{service} retries '{r['step_id'].split(' ', 2)[2]}' in a loop: {retried} of "
                     f"{r['instances']} instances needed {extra:.1f} extra attempts on average (up to "
                     f"{r['max_attempts']} attempts){waits}, so it is waiting for something it is not told about."),
            recommendation=(
                f"Find what {service} waits for (often another service's step finishing) and make it an"
                f" explicit trigger: an event that says the condition holds, or an orchestrator that calls"
                f" {service} once it does. Retries should absorb transient faults, not sequence a workflow."
            ),
            evidence={"step": r["step_id"], "instances": r["instances"], "retried_instances": retried,
                      "extra_attempts": int(r["extra_attempts"] or 0), "max_attempts": r["max_attempts"],
                      "looped_instances": r["looped_instances"],
                      "recovered_instances": r["recovered_instances"], "errors": errors},
            trace_ids=list(r["trace_ids"] or []),
        )
    return list(best.values())
