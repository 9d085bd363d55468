"""The detectors: a visible list of small modules, each with one entry `detect(con) -> list[Finding]`.

Each reads the analysis tables (`span_steps`, `causal_edges`, `workflow_edges`, `step_orderings`, ...)
and returns findings of one concern. `run_all` calls them in turn (several at once on a small
store); a detector that fails is reported (in `errors`, and on stderr when no list is given) and
the others still run (like Jaeger's adjuster `Sequence`, which collects errors instead of stopping).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import duckdb

from choreoscope.analysis.detectors import (
    callback_coupling,
    event_catalog,
    event_cycle,
    god_coordinator,
    implicit_orchestrator,
    implicit_ordering,
    missing_compensation,
    retry_loop,
    shared_data_coupling,
)
from choreoscope.analysis.findings import Finding

DETECTORS: list[tuple[str, Callable[[duckdb.DuckDBPyConnection], list[Finding]]]] = [
    ("implicit_ordering", implicit_ordering.detect),
    ("implicit_orchestrator", implicit_orchestrator.detect),
    ("god_coordinator", god_coordinator.detect),
    ("shared_data_coupling", shared_data_coupling.detect),
    ("callback_coupling", callback_coupling.detect),
    ("retry_loop", retry_loop.detect),
    ("event_catalog", event_catalog.detect),
    ("missing_compensation", missing_compensation.detect),
    ("event_cycle", event_cycle.detect),
]


def run_all(con: duckdb.DuckDBPyConnection, errors: list[str] | None = None,
            timings: dict[str, float] | None = None, workers: int = 1) -> list[Finding]:
    """Every detector's findings, most confident first within a kind, in the order of DETECTORS.

    errors: failures are appended here as "detector <name>: <error>" (else printed to stderr);
    timings: seconds per detector, keyed "detector <name>";
    workers: more than one runs that many detectors at once, each on a cursor of `con` (only
    outside a transaction: see analysis/stage_graph.py); findings and errors keep the order.
    """
    if workers > 1:
        with ThreadPoolExecutor(workers, thread_name_prefix="choreoscope-detector") as pool:
            outcomes = list(pool.map(lambda entry: _on_cursor(con, *entry), DETECTORS))
    else:
        outcomes = [_run_one(con, name, detect) for name, detect in DETECTORS]
    findings: list[Finding] = []
    for (name, _), (found, message, seconds) in zip(DETECTORS, outcomes):
        if message is not None:
            if errors is None:
                print(f"choreoscope: {message}", file=sys.stderr)
            else:
                errors.append(message)
        if timings is not None:
            timings[f"detector {name}"] = seconds
        findings.extend(sorted(found, key=lambda f: (-f.confidence, f.services, f.event or "")))
    return findings


def _on_cursor(con: duckdb.DuckDBPyConnection, name: str, detect) -> tuple[list[Finding], str | None, float]:
    cur = con.cursor()
    try:
        return _run_one(cur, name, detect)
    finally:
        cur.close()


def _run_one(con: duckdb.DuckDBPyConnection, name: str, detect) -> tuple[list[Finding], str | None, float]:
    """(findings, the failure's message or None, seconds)."""
    started = time.perf_counter()
    try:
        return detect(con), None, time.perf_counter() - started
    except Exception as exc:  # noqa: BLE001 - one broken detector must not hide the others
        message = f"detector {name}: {type(exc).__name__}: {exc} (its findings are missing from this report)"
        return [], message, time.perf_counter() - started
