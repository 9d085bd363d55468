"""callback_coupling: a consumer that calls the event's producer back while handling the event.

Detects: a synchronous call (client span -> server span of another service) made while a
consumer handled a message (a descendant of the consumer span in the same service and trace),
where the called service is the one that produced the message. The event then does not carry
what the consumer needs, and the consumer is temporally coupled to the producer again: if the
producer is down or slow, the "asynchronous" consumer fails or stalls.

Assumption: the producer of a message is the service of the producer span its consumer is tied
to by a causal event edge (parent, link, message id or time window). Calls to other services or to
uninstrumented peers while handling are not callbacks and are not reported.

Evidence: workflow instances with the consumer, instances where it called back, calls, the operations called, the median
duration of the calls.
"""

from __future__ import annotations

from choreoscope.analysis.detectors.query_helpers import ratio, rows
from choreoscope.analysis.findings import Finding

# Calls to another service made while handling a message (candidates: a callback is one to the producer).
CALLS_SQL = """
    SELECT h.handler_span_id, h.trace_id, e.dst_service AS called, e.dst_operation AS operation,
           (e.dst_end_adj - e.dst_start_adj) / 1e6 AS call_ms
    FROM handled_spans h
    JOIN span_edges e ON e.src_trace_id = h.trace_id AND e.src_span_id = h.span_id
                     AND e.src_role = 'client' AND e.via = 'call'
    WHERE e.dst_service <> h.service
"""

SQL = f"""
WITH producer_of AS (   -- the service (and event) that produced each consumed message
    SELECT dst_trace_id AS trace_id, dst_span_id AS span_id, any_value(src_service) AS producer,
           any_value(event) AS event
    FROM span_edges WHERE via = 'event' AND src_role = 'producer'
    GROUP BY ALL
),
handlers AS (   -- keyed by the handling's root: a `process` span handled under its `receive` span
    SELECT c.trace_id, hh.handler_span_id AS span_id, c.instance_id, c.service AS consumer,
           coalesce(po.event, c.operation) AS event, po.producer
    FROM span_steps c JOIN producer_of po USING (trace_id, span_id)
    JOIN handled_spans hh ON hh.trace_id = c.trace_id AND hh.span_id = c.span_id
    WHERE c.role = 'consumer'
),
callbacks AS ({CALLS_SQL})
SELECT hd.consumer, hd.event, hd.producer,
       count(DISTINCT hd.instance_id) AS handled,
       count(DISTINCT hd.instance_id) FILTER (WHERE cb.operation IS NOT NULL) AS called_back,
       count(cb.operation) AS calls,
       list(DISTINCT cb.operation ORDER BY cb.operation) FILTER (WHERE cb.operation IS NOT NULL) AS operations,
       quantile_cont(cb.call_ms, 0.5) AS call_p50_ms,
       list(DISTINCT hd.trace_id ORDER BY hd.trace_id) FILTER (WHERE cb.operation IS NOT NULL) AS trace_ids
FROM handlers hd
LEFT JOIN callbacks cb ON cb.trace_id = hd.trace_id AND cb.handler_span_id = hd.span_id
                      AND cb.called = hd.producer
WHERE hd.producer <> hd.consumer
GROUP BY ALL
HAVING count(cb.operation) > 0
ORDER BY hd.consumer, hd.event
"""


def detect(con) -> list[Finding]:
    # no call out of a handler, no callback: the per-consumer joins of SQL are the cost, skipped
    if not con.execute(f"SELECT EXISTS ({CALLS_SQL})").fetchall()[0][0]:
        return []
    findings = []
    for r in rows(con, SQL):
        share = ratio(r["called_back"], r["handled"])
        confidence = 0.55 + 0.4 * share
        ops = list(r["operations"] or [])
        findings.append(Finding(
            kind="callback_coupling", services=[r["consumer"], r["producer"]], event=r["event"],
            confidence=confidence, severity="warning",
            summary=(f"While handling {r['event']}, {r['consumer']} calls {r['producer']} back synchronously "
                     f"({', '.join(ops)}) in {r['called_back']} of {r['handled']} workflow instances: the event does not "
                     f"carry what it needs, and the consumer fails or stalls whenever {r['producer']} does."),
            recommendation=(
                f"Carry the data {r['consumer']} needs in {r['event']} (event-carried state transfer) or keep"
                f" a local copy fed by {r['producer']}'s events; if the consumer truly needs the producer's"
                f" answer, the step is request/response and an orchestrator calling both is the honest model."
            ),
            evidence={"instances_handled": r["handled"], "instances_with_callback": r["called_back"],
                      "calls": r["calls"], "operations": ops, "call_p50_ms": r["call_p50_ms"]},
            trace_ids=list(r["trace_ids"] or [])[:5],
        ))
    return findings
