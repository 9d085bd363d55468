"""The analysis pipeline: a visible list of stages, each a small module over the store's tables.

Stages run in order, each timed. A stage that fails is recorded with its error, the stages after
it (which read its tables) are listed as skipped, and the caller gets every message at once.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import duckdb

from choreoscope.analysis import clock_skew, edges, instances, orderings, patterns, steps, workflows


@dataclass
class AnalysisContext:
    """What stages share besides the tables: options in, diagnostics out."""

    intended_paths: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    clock_offsets_ns: dict[str, float] = field(default_factory=dict)


def _detectors(con: duckdb.DuckDBPyConnection, ctx: AnalysisContext) -> None:
    from choreoscope.analysis.findings import store_findings

    try:
        detectors = importlib.import_module("choreoscope.analysis.detectors")
    except ModuleNotFoundError:
        store_findings(con, [])
        return
    store_findings(con, detectors.run_all(con, errors=ctx.errors, timings=ctx.timings))


def _conformance(con: duckdb.DuckDBPyConnection, ctx: AnalysisContext) -> None:
    if not ctx.intended_paths:
        # No declaration this run: results of an earlier run with one would no longer be true.
        con.execute("DROP TABLE IF EXISTS conformance_edges")
        con.execute("DROP TABLE IF EXISTS conformance_workflows")
        return
    conformance = importlib.import_module("choreoscope.analysis.conformance")
    conformance.run(con, ctx.intended_paths)


def _skew(con: duckdb.DuckDBPyConnection, ctx: AnalysisContext) -> None:
    ctx.clock_offsets_ns = clock_skew.correct_clock_skew(con)


STAGES: list[tuple[str, Callable[[duckdb.DuckDBPyConnection, AnalysisContext], None]]] = [
    ("steps", lambda con, ctx: steps.build_steps(con)),
    ("parent edges", lambda con, ctx: edges.build_parent_edges(con)),
    ("clock skew", _skew),
    ("links and inferred edges", lambda con, ctx: edges.add_link_and_inferred_edges(con)),
    ("instances", lambda con, ctx: instances.build_instances(con)),
    ("workflows", lambda con, ctx: workflows.build_instances_and_workflows(con)),
    ("patterns", lambda con, ctx: patterns.classify_workflows(con)),
    ("orderings", lambda con, ctx: orderings.build_orderings(con)),
    ("detectors", _detectors),
    ("conformance", _conformance),
]


class AnalysisError(RuntimeError):
    """A stage failed; the message lists which and why."""


def run_pipeline(con: duckdb.DuckDBPyConnection, intended_paths: list[str] | None = None) -> AnalysisContext:
    """Run every stage over the store behind `con`; results are tables in the same store.

    Raises AnalysisError if a stage failed (after running the rest that could run).
    """
    ctx = AnalysisContext(intended_paths=list(intended_paths or []))
    failed = False
    for name, stage in STAGES:
        if failed:
            ctx.errors.append(f"{name}: skipped, an earlier stage failed")
            continue
        started = time.perf_counter()
        try:
            stage(con, ctx)
        except Exception as exc:  # noqa: BLE001 - collected, reported together
            ctx.errors.append(f"{name}: {type(exc).__name__}: {exc}")
            failed = True
        ctx.timings[name] = time.perf_counter() - started
    if failed:
        raise AnalysisError("analysis failed:\n  " + "\n  ".join(ctx.errors))
    # What the results describe, so a reader can tell they are stale (`choreoscope dashboard`).
    con.execute(
        "CREATE OR REPLACE TABLE analysis_run AS SELECT now() AS finished_at, "
        "(SELECT count(*) FROM spans) AS spans, ? AS seconds",
        [round(sum(ctx.timings.values()), 3)],
    )
    return ctx
