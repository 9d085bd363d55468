"""Real stores for the detector tests: each sample scenario loaded from its committed dump (and once
more, regenerated with the real SDK and an extra clock offset on one service) into a DuckDB file,
analysed once per session by the real pipeline; plus matching of findings against truth.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import yaml

from choreoscope.analysis.findings import Finding, load_findings
from choreoscope.analysis.pipeline import run_pipeline
from choreoscope.collector import store
from choreoscope.collector.loaders import load_paths
from choreoscope.sample_traces.generate import (
    scenario_dir,
)

# One service per scenario whose clock is moved by tens of milliseconds on top of the scenario's
# own skews. Chosen where the offset is observable (a synchronous call or a reply event ties the
# service to the others); see the report for consumer-only services.
EXTRA_OFFSETS_MS = {
    "ecommerce": {"shipping-service": -40.0},
    "event_router": {"workflow-router": 40.0},
    "hybrid_billing": {"tax-service": 30.0},
    "loan_saga": {"credit-service": 40.0},
    "notification_fanout": {"email-sender": 50.0},
}


@dataclass
class Analysed:
    scenario: str
    db_path: Path
    findings: list[Finding]
    workflows: dict[tuple[str, str], str] = field(default_factory=dict)  # (entry service, operation) -> id
    errors: list[str] = field(default_factory=list)

    def connect(self) -> duckdb.DuckDBPyConnection:
        return duckdb.connect(str(self.db_path), read_only=True)


def analyse_paths(db_path: Path, paths: list[Path], scenario: str) -> Analysed:
    con = store.connect(db_path)
    try:
        result = load_paths(con, paths)
        assert result.ok, result.errors
        ctx = run_pipeline(con)
        workflows = {(s, o): w for w, s, o in con.execute(
            "SELECT workflow_id, entry_service, entry_operation FROM workflows").fetchall()}
        return Analysed(scenario, db_path, load_findings(con), workflows, list(ctx.errors))
    finally:
        con.close()


OTHER_SEED = 11


def truth(scenario: str) -> dict:
    return yaml.safe_load((scenario_dir(scenario) / "truth.yaml").read_text())


def matches(finding: Finding, expected: dict, workflows: dict[tuple[str, str], str]) -> bool:
    """kind + services (+ event / resource / workflow when the truth gives them).
    A cycle has no natural first service, so event_cycle services compare as sets."""
    if finding.kind != expected["kind"]:
        return False
    if finding.kind == "event_cycle":
        if set(finding.services) != set(expected["services"]):
            return False
    elif finding.services != expected["services"]:
        return False
    if "event" in expected and finding.event != expected["event"]:
        return False
    if "resource" in expected and finding.resource != expected["resource"]:
        return False
    if "workflow" in expected:
        wf = expected["workflow"]
        if finding.workflow != workflows.get((wf["service"], wf["operation"])):
            return False
    return True


@dataclass
class Score:
    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0

    @property
    def precision(self) -> float:
        reported = self.true_positives + self.false_positives
        return self.true_positives / reported if reported else 1.0

    @property
    def recall(self) -> float:
        expected = self.true_positives + self.false_negatives
        return self.true_positives / expected if expected else 1.0


def score(result: Analysed, by_kind: dict[str, Score]) -> tuple[list[str], list[str], list[str]]:
    """Add one scenario's outcome to `by_kind`; returns (missed, unexpected, must_not fired) descriptions.

    A finding matching a truth finding is a true positive; any other finding (a `must_not`
    look-alike or anything not in the truth) is a false positive; a truth finding never reported is
    a false negative. Detector kinds only: conformance findings are not the detectors' business."""
    t = truth(result.scenario)
    expected = [f for f in t.get("findings") or []]
    must_not = [f for f in t.get("must_not") or []]
    conformance_kinds = {"undeclared_edge", "missing_edge", "ordering_violation"}
    reported = [f for f in result.findings if f.kind not in conformance_kinds]
    missed, unexpected, forbidden = [], [], []
    for e in expected:
        hit = any(matches(f, e, result.workflows) for f in reported)
        s = by_kind.setdefault(e["kind"], Score())
        if hit:
            s.true_positives += 1
        else:
            s.false_negatives += 1
            missed.append(f"{result.scenario}: {e['kind']} {e['services']}")
    for f in reported:
        if any(matches(f, e, result.workflows) for e in expected):
            continue
        by_kind.setdefault(f.kind, Score()).false_positives += 1
        unexpected.append(f"{result.scenario}: {f.kind} {f.services} {f.event or ''} ({f.confidence})")
        if any(matches(f, m, result.workflows) for m in must_not):
            forbidden.append(unexpected[-1])
    return missed, unexpected, forbidden


def finding(result: Analysed, kind: str, services: list[str] | None = None) -> Finding:
    found = [f for f in result.findings if f.kind == kind and (services is None or f.services == services)]
    assert len(found) == 1, f"expected one {kind} {services or ''} in {result.scenario}, got {found}"
    return found[0]
