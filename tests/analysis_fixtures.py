"""Analysed stores built from the SDK-generated sample dumps, shared by the analysis tests.

Each scenario is loaded and analysed once per test session (module-level cache)."""

from __future__ import annotations

import functools
from pathlib import Path

import duckdb
import yaml

from choreoscope.analysis.pipeline import run_pipeline
from choreoscope.analysis.report import build_report
from choreoscope.collector import store
from choreoscope.collector.loaders import load_paths
from choreoscope.sample_traces import SCENARIOS
from choreoscope.sample_traces.generate import DUMPS_DIR, scenario_dir
from tests.paths import REAL_TRACES


def truth(scenario: str) -> dict:
    return yaml.safe_load((scenario_dir(scenario) / "truth.yaml").read_text())


def analysed_store(paths: list[Path], db_path: Path) -> duckdb.DuckDBPyConnection:
    con = store.connect(db_path)
    result = load_paths(con, [str(p) for p in paths])
    assert result.ok, result.errors
    run_pipeline(con)
    return con


@functools.cache
def scenario_report(scenario: str, tmp_root: str) -> dict:
    con = analysed_store([DUMPS_DIR / f"{scenario}.otlp.jsonl"], Path(tmp_root) / f"{scenario}.duckdb")
    try:
        return build_report(con)
    finally:
        con.close()


def service_edges(report: dict) -> set[tuple]:
    """Cross-service edges of a report as (source service, target service, via, event).

    Sends nobody received (virtual topic nodes) are left out: the catalog detectors report them.
    """
    out = set()
    for wf in report["workflows"]:
        service_of = {s["id"]: s["service"] for s in wf["steps"]}
        for e in wf["edges"]:
            src, dst = service_of[e["source"]], service_of[e["target"]]
            if src == dst or ("unanswered" in e.get("evidence", []) and e["via"] == "event"):
                continue
            out.add((src, dst, e["via"], e["event"] if e["via"] == "event" else None))
    return out


__all__ = ["REAL_TRACES", "SCENARIOS", "analysed_store", "scenario_report", "service_edges", "truth"]
