"""shared_data_coupling: two services coupled through one table or collection.

Detects: a database collection (same db system and collection name) that one service writes and
another service reads or writes. The services then share a schema and a hidden ordering: the
reader sees whatever the writer has (or has not yet) written.

Assumption: `db.collection.name` (or its older names) identifies the table across services, and
the db system disambiguates equal names in different stores. Operations that write are
INSERT/UPDATE/DELETE/UPSERT/MERGE/SET/PUT/REPLACE; everything else reads.

Evidence: the writer's and reader's operations and counts, the instances where both touched the
table, how often the reader came before the write in an instance, and how often such an early
read ended in an error of the reading handler.
"""

from __future__ import annotations

from choreoscope.analysis.detectors.query_helpers import ratio, rows
from choreoscope.analysis.findings import Finding

WRITES = ("INSERT", "UPDATE", "DELETE", "UPSERT", "MERGE", "SET", "PUT", "REPLACE")

_ACCESS = f"""
SELECT s.trace_id, s.span_id, s.service, s.instance_id, s.db_system,
       s.db_collection AS resource, upper(coalesce(s.db_operation, 'QUERY')) AS op,
       upper(coalesce(s.db_operation, '')) IN {WRITES} AS writes, s.start_adj, s.end_adj,
       coalesce(p.is_error, s.is_error) AS handler_error
FROM span_steps s
LEFT JOIN span_steps p ON p.trace_id = s.trace_id AND p.span_id = s.parent_span_id
WHERE s.db_system IS NOT NULL AND s.db_collection IS NOT NULL
"""

SHARED_SQL = f"""
WITH access AS ({_ACCESS}),
pairs AS (
    SELECT w.db_system, w.resource, w.service AS writer, r.service AS reader
    FROM (SELECT DISTINCT db_system, resource, service FROM access WHERE writes) w
    JOIN (SELECT DISTINCT db_system, resource, service, bool_or(writes) AS also_writes
          FROM access GROUP BY ALL) r
      ON r.db_system = w.db_system AND r.resource = w.resource AND r.service <> w.service
    -- when both write, report the pair once (alphabetical writer first)
    WHERE NOT (r.also_writes AND r.service < w.service)
),
writes AS (SELECT instance_id, db_system, resource, service, min(end_adj) AS first_write_end
           FROM access WHERE writes GROUP BY ALL),
per_pair AS (
    SELECT p.db_system, p.resource, p.writer, p.reader,
           list(DISTINCT a.op ORDER BY a.op) AS reader_ops, count(a.span_id) AS reader_accesses,
           count(DISTINCT a.instance_id) FILTER (WHERE w.instance_id IS NOT NULL) AS shared_instances,
           count(*) FILTER (WHERE w.instance_id IS NOT NULL AND a.start_adj < w.first_write_end)
               AS accesses_before_write,
           count(*) FILTER (WHERE w.instance_id IS NOT NULL AND a.start_adj < w.first_write_end
                            AND a.handler_error) AS failed_before_write,
           list(DISTINCT a.trace_id ORDER BY a.trace_id)[1:5] AS trace_ids
    FROM pairs p
    JOIN access a ON a.db_system = p.db_system AND a.resource = p.resource AND a.service = p.reader
    LEFT JOIN writes w ON w.instance_id = a.instance_id AND w.db_system = p.db_system
                      AND w.resource = p.resource AND w.service = p.writer
    GROUP BY ALL
)
SELECT pp.*, wo.writer_ops, wo.writer_accesses, wo.writer_instances
FROM per_pair pp
JOIN (SELECT db_system, resource, service, list(DISTINCT op ORDER BY op) AS writer_ops,
             count(*) AS writer_accesses, count(DISTINCT instance_id) AS writer_instances
      FROM access WHERE writes GROUP BY ALL) wo
  ON wo.db_system = pp.db_system AND wo.resource = pp.resource AND wo.service = pp.writer
ORDER BY pp.resource, pp.writer, pp.reader
"""


def shared_resources(con) -> list[dict]:
    """One row per (db system, collection, writer, reader) with the counts above."""
    return rows(con, SHARED_SQL)


def detect(con) -> list[Finding]:
    findings = []
    for r in shared_resources(con):
        writer, reader, resource = r["writer"], r["reader"], r["resource"]
        together = ratio(r["shared_instances"], r["writer_instances"])
        failed_early = ratio(r["failed_before_write"], r["accesses_before_write"])
        confidence = 0.6 + 0.2 * min(1.0, together) + 0.15 * failed_early
        early = (f" In {r['accesses_before_write']} accesses {reader} came before the write"
                 f" ({r['failed_before_write']} of them failed)." if r["accesses_before_write"] else "")
        summary = (f"{writer} writes {resource} ({', '.join(r['writer_ops'])}) and {reader} "
                   f"{'reads' if not set(r['reader_ops']) & set(WRITES) else 'also changes'} it "
                   f"({', '.join(r['reader_ops'])}): the two services are coupled through the table's "
                   f"schema and through when it is written.{early}")
        recommendation = (
            f"Give {resource} one owner: let {writer} publish what {reader} needs (an event carrying the"
            f" data, or a query API) so {reader} stops reading another service's table; in a choreography"
            f" the event keeps both independent, in an orchestration the orchestrator can pass the data along."
        )
        findings.append(Finding(
            kind="shared_data_coupling", services=[writer, reader], resource=resource,
            confidence=confidence, severity="warning", summary=summary, recommendation=recommendation,
            evidence={"db_system": r["db_system"], "writer_operations": r["writer_ops"],
                      "writer_accesses": r["writer_accesses"], "reader_operations": r["reader_ops"],
                      "reader_accesses": r["reader_accesses"], "instances_both": r["shared_instances"],
                      "accesses_before_write": r["accesses_before_write"],
                      "failed_before_write": r["failed_before_write"]},
            trace_ids=list(r["trace_ids"] or []),
        ))
    return findings
