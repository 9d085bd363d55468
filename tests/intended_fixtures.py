"""Analysed in-memory stores for the conformance, intended-import and export tests.

Each dump is loaded and analysed once per test session (module-level cache); `conform` restores
the detectors' findings before each conformance run, so tests can share one store in any order."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import duckdb
import yaml

from choreoscope.analysis import conformance
from choreoscope.analysis.findings import Finding, load_findings, merge_findings
from choreoscope.analysis.pipeline import run_pipeline
from choreoscope.collector import store
from choreoscope.collector.loaders import load_paths
from choreoscope.sample_traces.generate import DUMPS_DIR, scenario_dir
from tests.paths import REAL_TRACES

CONFORMANCE_SCENARIOS = ("ecommerce", "event_router", "hybrid_billing", "loan_saga", "notification_fanout")
ASYNCAPI_SCENARIOS = ("ecommerce", "event_router", "hybrid_billing")


def real_trace_files() -> list[Path]:
    if not REAL_TRACES.is_dir():
        return []
    return sorted(p for p in REAL_TRACES.rglob("*.json") if not p.name.endswith(".manifest.json"))


def truth(scenario: str) -> dict:
    return yaml.safe_load((scenario_dir(scenario) / "truth.yaml").read_text())


def intended_path(scenario: str) -> str:
    return str(scenario_dir(scenario) / "intended.yaml")


def asyncapi_dir(scenario: str) -> str:
    return str(scenario_dir(scenario) / "asyncapi")


@dataclass
class Analysed:
    con: duckdb.DuckDBPyConnection
    base_findings: list[Finding]

    def conform(self, intended) -> list[Finding]:
        """Run conformance against `intended` (paths or model); return the conformance findings."""
        conformance.run(self.con, intended)
        merge_findings(self.con)
        return [f for f in load_findings(self.con) if f.kind in conformance.CONFORMANCE_KINDS]

    def findings(self) -> list[Finding]:
        return load_findings(self.con)


@functools.cache
def analysed(path: str) -> Analysed:
    con = duckdb.connect(":memory:")
    store.ensure_schema(con)
    result = load_paths(con, [path])
    assert store.scalar(con, "SELECT count(*) FROM spans") > 0, result.errors
    run_pipeline(con)
    return Analysed(con, load_findings(con))


def analysed_scenario(scenario: str) -> Analysed:
    return analysed(str(DUMPS_DIR / f"{scenario}.otlp.jsonl"))


def triples(findings: list[Finding]) -> set[tuple]:
    """(kind, services, event) — what truth.yaml's `conformance:` lists."""
    return {(f.kind, tuple(f.services), f.event) for f in findings}


def truth_triples(scenario: str, kinds=None) -> set[tuple]:
    return {(c["kind"], tuple(c["services"]), c.get("event")) for c in truth(scenario).get("conformance") or []
            if kinds is None or c["kind"] in kinds}
