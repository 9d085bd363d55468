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

A table more than MAX_PAIRED_SERVICES (3) services touch is reported once, naming them all (its
writers first, the most active first): that is one problem, a table without an owner, and as
pairs it would be up to n(n-1) findings (bench/gen_dump.py's 1M spans gave 870 for three tables,
burying everything else). Three services still read as pairs: at most six. Its evidence totals
the pairs' accesses before a write and their failures, with the five pairs with most early accesses.
"""

from __future__ import annotations

from choreoscope.analysis.data_access import WRITE_VERBS
from choreoscope.analysis.detectors.query_helpers import ratio, rows
from choreoscope.analysis.findings import Finding


def shared_resources(con) -> list[dict]:
    """One row per (db system, collection, writer, reader), from the data-access stage."""
    return rows(con, "SELECT * FROM shared_resources ORDER BY resource, writer, reader")


MAX_PAIRED_SERVICES = 3   # more services on one table: one finding for the table (see above)


def detect(con) -> list[Finding]:
    findings = []
    by_table: dict[tuple, list[dict]] = {}
    for r in shared_resources(con):
        by_table.setdefault((r["db_system"], r["resource"]), []).append(r)
    for pairs in by_table.values():
        services = {r["writer"] for r in pairs} | {r["reader"] for r in pairs}
        if len(services) > MAX_PAIRED_SERVICES:
            findings.append(_ownerless_table(pairs))
        else:
            findings.extend(_pair(r) for r in pairs)
    return findings


def _confidence(r: dict) -> float:
    """0.6, up to 0.2 more the more of the writer's instances the other service shares, up to 0.15
    more the more of its accesses before the write failed."""
    return (0.6 + 0.2 * min(1.0, ratio(r["shared_instances"], r["writer_instances"]))
            + 0.15 * ratio(r["failed_before_write"], r["accesses_before_write"]))


def _pair(r: dict) -> Finding:
    """The finding of one writer and one other service of a table."""
    writer, reader, resource = r["writer"], r["reader"], r["resource"]
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
    return Finding(
        kind="shared_data_coupling", services=[writer, reader], resource=resource,
        confidence=_confidence(r), severity="warning", summary=summary, recommendation=recommendation,
        evidence={"db_system": r["db_system"], "writer_operations": r["writer_ops"],
                  "writer_accesses": r["writer_accesses"], "reader_operations": r["reader_ops"],
                  "reader_accesses": r["reader_accesses"], "instances_both": r["shared_instances"],
                  "accesses_before_write": r["accesses_before_write"],
                  "failed_before_write": r["failed_before_write"]},
        trace_ids=list(r["trace_ids"] or []),
    )


def _ownerless_table(pairs: list[dict]) -> Finding:
    """One finding for a table many services share (see the module docstring)."""
    resource, db_system = pairs[0]["resource"], pairs[0]["db_system"]
    accesses: dict[str, int] = {}
    for r in pairs:
        accesses[r["writer"]] = max(accesses.get(r["writer"], 0), r["writer_accesses"])
        accesses[r["reader"]] = max(accesses.get(r["reader"], 0), r["reader_accesses"])
    writers = sorted({r["writer"] for r in pairs}, key=lambda s: (-accesses[s], s))
    readers = sorted({r["reader"] for r in pairs} - set(writers), key=lambda s: (-accesses[s], s))
    early = sum(r["accesses_before_write"] for r in pairs)
    failed = sum(r["failed_before_write"] for r in pairs)
    top = sorted(pairs, key=lambda r: (-r["accesses_before_write"], r["writer"], r["reader"]))[:5]
    confidence = max(_confidence(r) for r in pairs)
    services = writers + readers
    return Finding(
        kind="shared_data_coupling", services=services, resource=resource, confidence=confidence,
        severity="warning",
        summary=(f"{len(services)} services share {resource}: {len(writers)} write it"
                 f" ({', '.join(writers[:5])}{', ...' if len(writers) > 5 else ''})"
                 + (f" and {len(readers)} only read it" if readers else "")
                 + f". The table has no owner: every one of them is coupled to its schema and to when the others"
                 f" write it. In {early} accesses a service came before another's write ({failed} of them failed)."),
        recommendation=(f"Give {resource} one owner service; the others get what they need from it (events"
                        f" carrying the data, or a query API) instead of reading and writing the table themselves."),
        evidence={"db_system": db_system, "writers": writers, "readers": readers, "pairs": len(pairs),
                  "accesses_before_write": early, "failed_before_write": failed,
                  "top_pairs": [{"writer": r["writer"], "reader": r["reader"],
                                 "accesses_before_write": r["accesses_before_write"],
                                 "failed_before_write": r["failed_before_write"]} for r in top]},
        trace_ids=list(top[0]["trace_ids"] or []),
    )
