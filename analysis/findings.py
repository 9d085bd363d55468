"""The finding record every detector returns, and the `findings` table that stores them.

Kinds and the order of `services` follow the report contract (docs/report.md): e.g. an
implicit_ordering is [earlier, later]. `confidence` is in [0, 1]; below 0.5 a finding is a hint.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import duckdb

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
CREATE OR REPLACE TABLE findings (
    finding_id VARCHAR, kind VARCHAR, services VARCHAR[], event VARCHAR, resource VARCHAR,
    workflow_id VARCHAR, confidence DOUBLE, severity VARCHAR, summary VARCHAR, recommendation VARCHAR,
    evidence JSON, trace_ids VARCHAR[])
"""


def store_findings(con: duckdb.DuckDBPyConnection, findings: list[Finding]) -> None:
    con.execute(FINDINGS_DDL)
    if findings:
        con.executemany(  # one row per finding: tens, not spans
            "INSERT INTO findings VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            [
                (f.key, f.kind, f.services, f.event, f.resource, f.workflow, f.confidence, f.severity,
                 f.summary, f.recommendation, json.dumps(f.evidence, default=str), f.trace_ids)
                for f in findings
            ],
        )


def load_findings(con: duckdb.DuckDBPyConnection) -> list[Finding]:
    rows = con.execute(
        "SELECT kind, services, summary, recommendation, confidence, severity, event, resource, "
        "workflow_id, evidence, trace_ids FROM findings ORDER BY finding_id"
    ).fetchall()
    return [
        Finding(kind=r[0], services=list(r[1]), summary=r[2], recommendation=r[3], confidence=r[4],
                severity=r[5], event=r[6], resource=r[7], workflow=r[8], evidence=json.loads(r[9] or "{}"),
                trace_ids=list(r[10] or []))
        for r in rows
    ]
