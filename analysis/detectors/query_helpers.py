"""Small helpers the detectors share: query rows as dicts, the spans a handler ran, the event relays.

Everything per span stays in SQL; Python only sees aggregated rows (tens to hundreds).
"""

from __future__ import annotations

import duckdb

MAX_DEPTH = 64  # guards the recursive walk against parent cycles in broken data

# Every span run while a consumer handled a message: the consumer span itself (depth 0) and its
# descendants in the same service and trace, stopping at nested consumer spans (they start their
# own handling). Columns: trace_id, span_id, handler_span_id, depth.
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

# Event relays: a consumer of event_in that, while handling it, produced event_out (one row per
# produced message). The building block of implicit orchestrators and event cycles.
RELAYS_SQL = f"""
WITH RECURSIVE {HANDLED_CTE}
SELECT c.workflow_id, c.instance_id, c.service, c.step_id AS consumer_step, c.operation AS event_in,
       p.step_id AS producer_step, p.messaging_destination AS event_out, c.trace_id
FROM handled h
JOIN span_steps c ON c.trace_id = h.trace_id AND c.span_id = h.handler_span_id
JOIN span_steps p ON p.trace_id = h.trace_id AND p.span_id = h.span_id
WHERE p.role = 'producer' AND p.messaging_destination IS NOT NULL AND h.depth > 0
"""


def rows(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> list[dict]:
    """The result of `sql` as a list of dicts (fully fetched, so the connection is free again)."""
    result = con.execute(sql, params or [])
    names = [d[0] for d in result.description]
    return [dict(zip(names, row)) for row in result.fetchall()]


def workflow_entries(con: duckdb.DuckDBPyConnection) -> dict[str, dict]:
    """workflow_id -> {name, entry_service, entry_operation, pattern, instances}."""
    return {
        r["workflow_id"]: r
        for r in rows(con, "SELECT workflow_id, name, entry_service, entry_operation, pattern, instances "
                           "FROM workflows")
    }


def ratio(part: float, whole: float) -> float:
    return float(part) / float(whole) if whole else 0.0
