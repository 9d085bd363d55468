"""The finding record every detector returns, and the `findings` table that stores them.

Kinds and the order of `services` follow the report contract (docs/report.md): e.g. an
implicit_ordering is [earlier, later]. `confidence` is in [0, 1]; below 0.5 a finding is a hint.
SEVERITIES is the one order of severities, lowest first.

The findings stage (`merge_findings`) reads `detector_findings`, `conformance_findings` and
`declared_orderings` and writes `findings`, the table reports and the dashboard read.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import duckdb
import pyarrow as pa

KINDS = (
    "implicit_ordering", "implicit_orchestrator", "god_coordinator", "shared_data_coupling",
    "callback_coupling", "retry_loop", "dead_event", "orphan_event", "schema_drift",
    "missing_compensation", "event_cycle", "undeclared_edge", "missing_edge", "ordering_violation",
)
SEVERITIES = ("info", "warning", "critical")


@dataclass
class Finding:
    kind: str
    services: list[str]
    summary: str
    recommendation: str
    confidence: float
    severity: str = "warning"
    event: str | None = None
    resource: str | None = None
    workflow: str | None = None
    evidence: dict = field(default_factory=dict)
    trace_ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown finding kind {self.kind!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}")
        self.confidence = round(min(1.0, max(0.0, float(self.confidence))), 3)

    @property
    def key(self) -> str:
        """Stable identity across runs (kind, services, event, resource, workflow): baselines use it."""
        raw = json.dumps([self.kind, self.services, self.event, self.resource, self.workflow])
        return hashlib.sha1(raw.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return asdict(self)


FINDINGS_DDL = """
CREATE OR REPLACE TABLE {table} (
    finding_id VARCHAR, kind VARCHAR, services VARCHAR[], event VARCHAR, resource VARCHAR,
    workflow_id VARCHAR, confidence DOUBLE, severity VARCHAR, summary VARCHAR, recommendation VARCHAR,
    evidence JSON, trace_ids VARCHAR[])
"""


def store_findings(con: duckdb.DuckDBPyConnection, findings: list[Finding], table: str = "findings") -> None:
    con.execute(FINDINGS_DDL.format(table=table))
    if findings:  # usually tens, but a large store can have thousands: Arrow, not executemany
        strings = pa.string()
        rows = pa.table({
            "finding_id": pa.array([f.key for f in findings], strings),
            "kind": pa.array([f.kind for f in findings], strings),
            "services": pa.array([list(f.services) for f in findings], pa.list_(strings)),
            "event": pa.array([f.event for f in findings], strings),
            "resource": pa.array([f.resource for f in findings], strings),
            "workflow_id": pa.array([f.workflow for f in findings], strings),
            "confidence": pa.array([f.confidence for f in findings], pa.float64()),
            "severity": pa.array([f.severity for f in findings], strings),
            "summary": pa.array([f.summary for f in findings], strings),
            "recommendation": pa.array([f.recommendation for f in findings], strings),
            "evidence": pa.array([json.dumps(f.evidence, default=str) for f in findings], strings),
            "trace_ids": pa.array([list(f.trace_ids) for f in findings], pa.list_(strings)),
        })
        con.register("_finding_rows", rows)
        try:
            con.execute(f"INSERT INTO {table} SELECT * FROM _finding_rows")
        finally:
            con.unregister("_finding_rows")


def load_findings(con: duckdb.DuckDBPyConnection, table: str = "findings", order: str = "finding_id") -> list[Finding]:
    rows = con.execute(
        "SELECT kind, services, summary, recommendation, confidence, severity, event, resource, "
        f"workflow_id, evidence, trace_ids FROM {table} ORDER BY {order}"
    ).fetchall()
    return [
        Finding(kind=r[0], services=list(r[1]), summary=r[2], recommendation=r[3], confidence=r[4],
                severity=r[5], event=r[6], resource=r[7], workflow=r[8], evidence=json.loads(r[9] or "{}"),
                trace_ids=list(r[10] or []))
        for r in rows
    ]


def merge_findings(con: duckdb.DuckDBPyConnection) -> None:
    """The findings stage: the detectors' findings less the implicit orderings a team declared,
    then conformance's findings, into `findings`."""
    declared = con.execute("SELECT before, after, event FROM declared_orderings").fetchall()
    kept = [
        f for f in load_findings(con, "detector_findings", order="rowid")
        if not (f.kind == "implicit_ordering" and len(f.services) == 2 and any(
            b == f.services[0] and a == f.services[1] and (ev is None or f.event is None or ev == f.event)
            for b, a, ev in declared))
    ]
    store_findings(con, kept + load_findings(con, "conformance_findings", order="rowid"))
