"""Stage: who reads and writes which table or collection, and which pairs of services share one.

A database span writes when its operation is one of WRITE_VERBS (INSERT/UPDATE/DELETE/UPSERT/MERGE,
and the key-value SET/PUT/REPLACE); everything else reads. The pattern stage asks who writes (where
state lives); shared_data_coupling and implicit_ordering ask which tables two services share.
Reads `span_steps`; writes `data_access` (one row per database span: service, instance, workflow,
`resource` = the collection or table, `op`, `writes`, corrected times, whether the handling span
erred) and `shared_resources` (one row per db system, resource, writer and reader, with how often the
reader came before the writer's first write in an instance).

A table is its db system, its server (`server`: the span's peer, `server.address` or
`peer.service`), its database (`namespace`: `db.namespace`, older `db.name`) and its name. Two
services' tables of one name in two databases, or in same-named databases on two servers, are two
tables (each service's own `outbox`); where a span records no server or database (the sqlite3 and
pika captures' instrumentations never do) the rest decides, as nothing says they differ. (One
server reached under two names, `localhost` and `127.0.0.1`, reads as two.) Reads `spans` for the
database name only.
"""

from __future__ import annotations

import duckdb

from choreoscope.collector import semconv as sc

WRITE_VERBS = ("INSERT", "UPDATE", "DELETE", "UPSERT", "MERGE", "SET", "PUT", "REPLACE")
# The database a span names, under its attribute names newest first (semconv DB_NAMESPACE). The
# JSON is parsed only where its text holds a name, or a \\u escape that could spell one: most
# database spans name none, and parsing theirs was half the stage.
_NAMESPACE_SQL = (
    "CASE WHEN " + " OR ".join(f"contains(attributes::VARCHAR, '{text}')"
                               for text in sorted({*sc.DB_NAMESPACE, "\\u"}))
    + " THEN coalesce(" + ", ".join(f"json_extract_string(attributes, '$.\"{name}\"')" for name in sc.DB_NAMESPACE)
    + ") END")

ACCESS_SQL = f"""
CREATE OR REPLACE TABLE data_access AS
SELECT s.trace_id, s.span_id, s.service, s.instance_id, s.workflow_id, s.db_system,
       s.db_collection AS resource, upper(coalesce(s.db_operation, 'QUERY')) AS op,
       upper(coalesce(s.db_operation, '')) IN {WRITE_VERBS} AS writes, s.start_adj, s.end_adj,
       coalesce(p.is_error, s.is_error) AS handler_error, n.namespace, s.peer AS server
FROM span_steps s
LEFT JOIN span_steps p ON p.trace_id = s.trace_id AND p.span_id = s.parent_span_id
LEFT JOIN (SELECT trace_id, span_id, {_NAMESPACE_SQL} AS namespace FROM spans WHERE db_system IS NOT NULL) n
  ON n.trace_id = s.trace_id AND n.span_id = s.span_id
WHERE s.db_system IS NOT NULL
"""


SHARED_SQL = """
WITH access AS (SELECT * FROM data_access WHERE resource IS NOT NULL),
tables AS (  -- each service's tables; the ones it writes to are those it ever writes
    SELECT db_system, resource, service, namespace, server, bool_or(writes) AS also_writes FROM access GROUP BY ALL
),
pairs AS (
    SELECT DISTINCT w.db_system, w.resource, w.service AS writer, r.service AS reader
    FROM (SELECT * FROM tables WHERE also_writes) w
    JOIN tables r
      ON r.db_system = w.db_system AND r.resource = w.resource AND r.service <> w.service
     AND (r.namespace IS NULL OR w.namespace IS NULL OR r.namespace = w.namespace)
     AND (r.server IS NULL OR w.server IS NULL OR r.server = w.server)
    -- when both write, report the pair once (alphabetical writer first)
    WHERE NOT (r.also_writes AND r.service < w.service)
),
writes AS (SELECT instance_id, db_system, resource, service, min(end_adj) AS first_write_end
           FROM access WHERE writes GROUP BY ALL),
readers AS (  -- what a reader does with the table, whoever writes it: once, not once per writer
    SELECT a.db_system, a.resource, a.service, list(DISTINCT a.op ORDER BY a.op) AS reader_ops,
           count(a.span_id) AS reader_accesses, list(DISTINCT a.trace_id ORDER BY a.trace_id)[1:5] AS trace_ids
    FROM access a
    JOIN (SELECT DISTINCT db_system, resource, reader FROM pairs) p
      ON p.db_system = a.db_system AND p.resource = a.resource AND p.reader = a.service
    GROUP BY a.db_system, a.resource, a.service
),
shared AS (  -- the reader's accesses in instances where the writer wrote
    SELECT p.db_system, p.resource, p.writer, p.reader, count(DISTINCT a.instance_id) AS shared_instances,
           count(*) FILTER (WHERE a.start_adj < w.first_write_end) AS accesses_before_write,
           count(*) FILTER (WHERE a.start_adj < w.first_write_end AND a.handler_error) AS failed_before_write
    FROM pairs p
    JOIN access a ON a.db_system = p.db_system AND a.resource = p.resource AND a.service = p.reader
    JOIN writes w ON w.instance_id = a.instance_id AND w.db_system = p.db_system
                 AND w.resource = p.resource AND w.service = p.writer
    GROUP BY ALL
),
per_pair AS (
    SELECT p.db_system, p.resource, p.writer, p.reader, r.reader_ops, r.reader_accesses,
           coalesce(s.shared_instances, 0) AS shared_instances,
           coalesce(s.accesses_before_write, 0) AS accesses_before_write,
           coalesce(s.failed_before_write, 0) AS failed_before_write, r.trace_ids
    FROM pairs p
    JOIN readers r ON r.db_system = p.db_system AND r.resource = p.resource AND r.service = p.reader
    LEFT JOIN shared s ON s.db_system = p.db_system AND s.resource = p.resource AND s.writer = p.writer
                      AND s.reader = p.reader
)
SELECT pp.*, wo.writer_ops, wo.writer_accesses, wo.writer_instances
FROM per_pair pp
JOIN (SELECT db_system, resource, service, list(DISTINCT op ORDER BY op) AS writer_ops,
             count(*) AS writer_accesses, count(DISTINCT instance_id) AS writer_instances
      FROM access WHERE writes GROUP BY ALL) wo
  ON wo.db_system = pp.db_system AND wo.resource = pp.resource AND wo.service = pp.writer
ORDER BY pp.resource, pp.writer, pp.reader
"""


def build_data_access(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(ACCESS_SQL)
    con.execute(f"CREATE OR REPLACE TABLE shared_resources AS {SHARED_SQL}")
