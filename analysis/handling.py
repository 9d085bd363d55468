"""Stage: what each consumer did while it handled a message, and which events it relayed.

- `handled_spans`: every span run while a consumer handled a message: the consumer span itself
  (depth 0) and its descendants in the same service and trace, stopping at nested consumer spans
  (they start their own handling). Columns: trace_id, span_id, handler_span_id, service, depth.
- `event_relays`: a consumer of event_in that, while handling it, produced event_out (one row per
  produced message). The building block of implicit orchestrators and event cycles; callbacks
  (calls made while handling) start from `handled_spans`. A produced message that is the consumed
  message itself (same message id, same destination: Celery's `self.retry` republishing its task
  id from inside the failing run) is a retry, not a hand-off, and is no relay; the `deliveries`
  stage counts it as the next attempt of that message.
Reads `span_steps`; writes `handled_spans`, `event_relays`.
"""

from __future__ import annotations

import duckdb

MAX_DEPTH = 64  # guards the recursive walk against parent cycles in broken data

HANDLED_CTE = f"""
handled(trace_id, span_id, handler_span_id, service, depth) AS (
    SELECT c.trace_id, c.span_id, c.span_id, c.service, 0
    FROM span_steps c
    LEFT JOIN span_steps cp ON cp.trace_id = c.trace_id AND cp.span_id = c.parent_span_id
    WHERE c.role = 'consumer' AND NOT (coalesce(cp.role, '') = 'consumer' AND cp.service = c.service)
    UNION ALL
    SELECT s.trace_id, s.span_id, h.handler_span_id, h.service, h.depth + 1
    FROM handled h
    JOIN span_steps s ON s.trace_id = h.trace_id AND s.parent_span_id = h.span_id
    WHERE s.service = h.service AND h.depth < {MAX_DEPTH}
      AND NOT (s.role = 'consumer' AND h.depth > 0)
)
"""

RELAYS_SQL = """
SELECT c.workflow_id, c.instance_id, c.service, c.step_id AS consumer_step, c.operation AS event_in,
       p.step_id AS producer_step, p.messaging_destination AS event_out, c.trace_id
FROM handled_spans h
JOIN span_steps c ON c.trace_id = h.trace_id AND c.span_id = h.handler_span_id
JOIN span_steps p ON p.trace_id = h.trace_id AND p.span_id = h.span_id
WHERE p.role = 'producer' AND p.messaging_destination IS NOT NULL AND h.depth > 0
  -- the consumed message published again (same id, same destination) is a retry, not a hand-off
  AND NOT (p.messaging_message_id IS NOT NULL AND p.messaging_message_id = c.messaging_message_id
           AND p.messaging_destination = c.messaging_destination)
"""


def build_handling(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"CREATE OR REPLACE TABLE handled_spans AS WITH RECURSIVE {HANDLED_CTE} SELECT * FROM handled")
    con.execute(f"CREATE OR REPLACE TABLE event_relays AS {RELAYS_SQL}")
