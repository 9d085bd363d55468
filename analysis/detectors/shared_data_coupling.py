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

from choreoscope.analysis.data_access import WRITE_VERBS
from choreoscope.analysis.detectors.query_helpers import ratio, rows
from choreoscope.analysis.findings import Finding


def shared_resources(con) -> list[dict]:
    """One row per (db system, collection, writer, reader), from the data-access stage."""
    return rows(con, "SELECT * FROM shared_resources ORDER BY resource, writer, reader")


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
                   f"{'reads' if not set(r['reader_ops']) & set(WRITE_VERBS) else 'also changes'} it "
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
