"""Stage 1, steps: give every span an operation label and a step = (service, role, operation).

Assumption: the operation a team thinks in is the messaging destination for producer and
consumer spans, the route for HTTP servers, service/method for RPC, operation + table for database
calls, and otherwise the span name with ids, numbers and UUIDs templated away.
Writes `span_labels` (one row per span, raw times); the `span_steps` stage adds corrected times and
the instance and workflow of each span once those are known.
"""

from __future__ import annotations

import duckdb


# SQL that replaces UUIDs, long hex ids and numbers in a text with {id}. Plain regexp_replace
# so it also runs on other SQL engines.
def templated(expr: str) -> str:
    uuid = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    return (
        f"regexp_replace(regexp_replace(regexp_replace({expr}, '{uuid}', '{{id}}', 'g'), "
        f"'[0-9a-fA-F]{{16,}}', '{{id}}', 'g'), '(^|[^A-Za-z0-9_])[0-9]+([^A-Za-z0-9_]|$)', '\\1{{id}}\\2', 'g')"
    )


_IS_MESSAGING = (
    "(messaging_destination IS NOT NULL AND (kind IN ('PRODUCER', 'CONSUMER') "
    "OR messaging_operation IS NOT NULL))"
)

_URL_PATH = (
    "regexp_extract(coalesce(json_extract_string(attributes, '$.\"url.full\"'), "
    "json_extract_string(attributes, '$.\"http.url\"'), json_extract_string(attributes, '$.\"http.target\"'), "
    "json_extract_string(attributes, '$.\"url.path\"'), ''), '^(?:[a-z]+://[^/]+)?([^?#]*)', 1)"
)

SPAN_STEPS_SQL = f"""
CREATE OR REPLACE TABLE span_labels AS
WITH labelled AS (
    SELECT
        trace_id, span_id, parent_span_id, service_name AS service, kind, start_ns, end_ns,
        status_code = 'ERROR' AS is_error, retry_attempt, messaging_destination, messaging_message_id,
        db_system, db_collection, db_operation, coalesce(peer_service, server_address) AS peer,
        CASE
            WHEN {_IS_MESSAGING} THEN
                CASE WHEN kind = 'PRODUCER' OR messaging_operation IN ('send', 'create')
                     THEN 'producer' ELSE 'consumer' END
            WHEN kind = 'SERVER' THEN 'server'
            WHEN kind = 'CLIENT' THEN 'client'
            WHEN kind = 'PRODUCER' THEN 'producer'
            WHEN kind = 'CONSUMER' THEN 'consumer'
            ELSE 'internal'
        END AS role,
        CASE
            WHEN {_IS_MESSAGING} THEN messaging_destination
            WHEN rpc_service IS NOT NULL AND rpc_method IS NOT NULL THEN rpc_service || '/' || rpc_method
            WHEN http_route IS NOT NULL THEN coalesce(http_method || ' ', '') || http_route
            WHEN db_system IS NOT NULL AND (db_operation IS NOT NULL OR db_collection IS NOT NULL)
                THEN coalesce(upper(db_operation), 'QUERY') || coalesce(' ' || db_collection, '')
            WHEN http_method IS NOT NULL AND {_URL_PATH} <> ''
                THEN http_method || ' ' || {templated(_URL_PATH)}
            ELSE {templated("name")}
        END AS operation
    FROM spans
)
SELECT *, service || ' ' || role || ' ' || operation AS step_id
FROM labelled
"""


def build_steps(con: duckdb.DuckDBPyConnection) -> None:
    """Create `span_labels` from `spans`."""
    con.execute(SPAN_STEPS_SQL)
