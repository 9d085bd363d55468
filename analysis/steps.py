"""Stage 1, steps: give every span an operation label and a step = (service, role, operation).

Assumption: the operation a team thinks in is the messaging destination for producer and
consumer spans, the route for HTTP servers, service/method for RPC, operation + table for database
calls, and otherwise the span name with ids, numbers and UUIDs templated away.
Writes `span_labels` (one row per span, raw times); the `span_steps` stage adds corrected times and
the instance and workflow of each span once those are known.

HTTP spans without `http.route` are labelled `METHOD path`, the URL path with UUIDs, long hex ids
and numbers templated to `{id}` (`templated`), then with path variables found by cardinality across
spans, the way log-template miners such as Drain do (group by token count, then by leading tokens):
paths of one service, role, method and segment count are compared segment by segment, left to
right, and at one position under one prefix (the segments before it, already templated) the values
are told apart from a route's fixed vocabulary like this:

- identifier-shaped values (letters and digits mixed, only `[A-Za-z0-9_-]`, e.g. `1YMWWN1N4O`,
  `ord_8xK2`) become `{id}` when the position holds at least MIN_ID_VALUES (5) distinct such values.
  Fewer cannot be told from a small vocabulary that happens to contain digits (`/oauth2`, `/s3`),
  so two or three products seen stay distinct; five distinct codes at one prefix are a variable.
- any other word-shaped value (`[A-Za-z0-9_-]`, e.g. user names `alice`) becomes `{id}` only when
  the position holds at least MIN_WORD_VALUES (50) distinct values each seen in at most
  1/MIN_WORD_VALUES (2 %) of the position's spans. A route's vocabulary at one prefix, method and
  segment count is far smaller than that and each of its words is used often, while a path variable
  spreads its spans thinly; a value used often at such a position (`/users/settings` among many
  users) keeps its literal.

Only those values are replaced, others at the same position keep theirs (`/api/products/featured`
beside `/api/products/{id}`). Never templated: version segments (`v1`, `v2beta1`), locale-shaped
segments (`en`, `en-US`, `zh-Hant`, so also any two- or three-letter lower-case word), values with a
dot (files like `app.js`, hosts, e-mail addresses) and empty segments. The segment count is part
of the key, so `/users/settings` is never compared with the `alice` in `/users/alice/settings`.
The counting runs in SQL over the distinct labels with their span counts, one statement per segment
position; scratch tables are TEMP with a leading underscore and are dropped before the stage ends.
"""

from __future__ import annotations

import duckdb

# A position under one prefix is a path variable for identifier-shaped values with at least this
# many distinct ones; for other words with at least MIN_WORD_VALUES values each in at most
# 1 / MIN_WORD_VALUES of its spans (see the module docstring for why).
MIN_ID_VALUES = 5
MIN_WORD_VALUES = 50


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

_IS_RPC = "(rpc_service IS NOT NULL AND rpc_method IS NOT NULL)"
_IS_DB = "(db_system IS NOT NULL AND (db_operation IS NOT NULL OR db_collection IS NOT NULL))"

# Every span's label; `path` is the {id}-templated URL path of an HTTP span labelled by its path
# (no route, not messaging, RPC or database), NULL otherwise. The path labels get their cardinality
# templating before `span_labels` is written. A view, not a table: its two readers are the path
# counting (which computes only `path`, over HTTP spans) and `span_labels`; a copy of every span
# cost more than computing `path` twice (the bench's 1M-span dump, the stage three times each,
# alternating: 0.53-0.58 s with the copy, 0.40-0.42 s without).
_BASE_SQL = f"""
CREATE OR REPLACE TEMP VIEW _span_labels_base AS
WITH pathed AS (
    SELECT *,
        CASE
            WHEN {_IS_MESSAGING} OR {_IS_RPC} OR http_route IS NOT NULL OR {_IS_DB} THEN NULL
            WHEN http_method IS NOT NULL AND {_URL_PATH} <> '' THEN {templated(_URL_PATH)}
        END AS path
    FROM spans
)
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
        WHEN {_IS_RPC} THEN rpc_service || '/' || rpc_method
        WHEN http_route IS NOT NULL THEN coalesce(http_method || ' ', '') || http_route
        WHEN {_IS_DB} THEN coalesce(upper(db_operation), 'QUERY') || coalesce(' ' || db_collection, '')
        WHEN path IS NOT NULL THEN http_method || ' ' || path
        ELSE {templated("name")}
    END AS operation,
    CASE WHEN path IS NOT NULL THEN http_method END AS path_method,
    path
FROM pathed
"""

# The distinct path labels with their span counts: `segs` the path's segments, `tsegs` the same
# with the path variables found so far replaced by {id}.
_PATHS_SQL = """
CREATE OR REPLACE TEMP TABLE _path_labels AS
SELECT service, role, path_method AS method, path, count(*) AS spans,
       string_split(path, '/') AS segs, string_split(path, '/') AS tsegs
FROM _span_labels_base
WHERE path IS NOT NULL
GROUP BY service, role, path_method, path
"""

_NOT_VOCABULARY = (
    "regexp_full_match(value, '[A-Za-z0-9_-]+') "
    "AND NOT regexp_full_match(value, '[vV][0-9]+([a-z]+[0-9]*)?') "
    "AND NOT regexp_full_match(value, '[a-z]{2,3}([-_][A-Za-z]{2,4})?')"
)


def _position_sql(pos: int) -> str:
    """Replace path variables at segment `pos` (1-based) of `_path_labels.tsegs` (a CREATE ... AS,
    not an UPDATE, so the same statement runs on Spark, whose temp views cannot be updated)."""
    prefix = f"array_to_string(tsegs[1:{pos - 1}], '/')"
    return f"""
    CREATE OR REPLACE TEMP TABLE _path_labels AS
    SELECT p.service, p.role, p.method, p.path, p.spans, p.segs,
           CASE WHEN v.value IS NULL THEN p.tsegs
                ELSE list_concat(p.tsegs[1:{pos - 1}], ['{{id}}'], p.tsegs[{pos + 1}:]) END AS tsegs
    FROM _path_labels p
    LEFT JOIN (
        SELECT service, role, method, depth, prefix, value FROM (
            SELECT *,
                sum(CASE WHEN id_like THEN 1 ELSE 0 END) OVER slot AS id_values,
                sum(CASE WHEN thin THEN 1 ELSE 0 END) OVER slot AS thin_values
            FROM (
                SELECT *,
                    word AND regexp_matches(value, '[0-9]') AND regexp_matches(value, '[A-Za-z]') AS id_like,
                    word AND n * {MIN_WORD_VALUES} <= sum(n) OVER slot AS thin
                FROM (
                    SELECT *, {_NOT_VOCABULARY} AS word
                    FROM (
                        SELECT service, role, method, array_length(segs) AS depth, {prefix} AS prefix,
                               segs[{pos}] AS value, sum(spans) AS n
                        FROM _path_labels
                        WHERE array_length(segs) >= {pos}
                        GROUP BY service, role, method, array_length(segs), {prefix}, segs[{pos}]
                    )
                )
                WINDOW slot AS (PARTITION BY service, role, method, depth, prefix)
            )
            WINDOW slot AS (PARTITION BY service, role, method, depth, prefix)
        )
        WHERE (id_like AND id_values >= {MIN_ID_VALUES}) OR (thin AND thin_values >= {MIN_WORD_VALUES})
    ) v
      ON p.service IS NOT DISTINCT FROM v.service AND p.role = v.role AND p.method = v.method
         AND array_length(p.segs) = v.depth AND array_to_string(p.tsegs[1:{pos - 1}], '/') = v.prefix
         AND p.segs[{pos}] = v.value
    """


_LABELS_SQL = """
CREATE OR REPLACE TABLE span_labels AS
SELECT *, service || ' ' || role || ' ' || operation AS step_id
FROM (
    SELECT b.* EXCLUDE (operation, path_method, path),
           coalesce(p.method || ' ' || array_to_string(p.tsegs, '/'), b.operation) AS operation
    FROM _span_labels_base b
    LEFT JOIN _path_labels p
      ON p.service IS NOT DISTINCT FROM b.service AND p.role = b.role AND p.method = b.path_method
         AND p.path = b.path
)
"""


def build_steps(con: duckdb.DuckDBPyConnection) -> None:
    """Create `span_labels` from `spans`."""
    con.execute(_BASE_SQL)
    con.execute(_PATHS_SQL)
    depth = con.execute("SELECT coalesce(max(array_length(segs)), 0) FROM _path_labels").fetchone()[0]
    for pos in range(1, depth + 1):
        con.execute(_position_sql(pos))
    con.execute(_LABELS_SQL)
    con.execute("DROP TABLE _path_labels")
    con.execute("DROP VIEW _span_labels_base")
