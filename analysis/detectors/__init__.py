"""The detectors: a visible list of small modules, each with one entry `detect(con) -> list[Finding]`.

Each reads the analysis tables (`span_steps`, `causal_edges`, `workflow_edges`, `step_orderings`, ...)
and returns findings of one concern. `run_all` calls them in turn; a detector that fails is
reported (in `errors`, and on stderr when no list is given) and the others still run
(like Jaeger's adjuster `Sequence`, which collects errors instead of stopping).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

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
            timings: dict[str, float] | None = None) -> list[Finding]:
    """Every detector's findings, most confident first within a kind, in the order of DETECTORS.

    errors: failures are appended here as "detector <name>: <error>" (else printed to stderr);
    timings: seconds per detector, keyed "detector <name>".
    """
    findings: list[Finding] = []
    for name, detect in DETECTORS:
        started = time.perf_counter()
        try:
            found = detect(con)
        except Exception as exc:  # noqa: BLE001 - one broken detector must not hide the others
            message = f"detector {name}: {type(exc).__name__}: {exc} (its findings are missing from this report)"
            if errors is None:
                print(f"choreoscope: {message}", file=sys.stderr)
            else:
                errors.append(message)
            found = []
        if timings is not None:
            timings[f"detector {name}"] = time.perf_counter() - started
        findings.extend(sorted(found, key=lambda f: (-f.confidence, f.services, f.event or "")))
    return findings
