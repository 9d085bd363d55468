"""The analysis pipeline: a visible list of stages, each a small module over the store's tables.

Each stage declares the tables it reads and the tables it writes, and owns what it writes: no other
stage creates, replaces or fills them (the runner checks it after every stage). A stage's scratch
tables are TEMP and named with a leading underscore. `docs/architecture.md` has the same table, kept
equal to STAGES by a test.

Stages run in order, each timed; on a small store, stages that do not read each other's tables run
side by side (`stage_graph`), which is why the reads must be complete. A stage that fails is
recorded with its error, the stages not started yet are listed as skipped, and the caller gets
every message at once.
"""

from __future__ import annotations

import datetime
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import duckdb

from choreoscope.analysis import (
    clock_skew,
    conformance,
    critical_path,
    data_access,
    deliveries,
    detectors,
    edges,
    findings,
    handling,
    instances,
    orderings,
    patterns,
    span_edges,
    span_steps,
    stage_graph,
    steps,
    workflows,
)
from choreoscope.collector import store

# What ingest writes (collector.store); every stage reads from these or from earlier stages.
INPUT_TABLES = ("spans", "span_links")
# Written by the runner itself once every stage succeeded.
RUN_TABLE = "analysis_run"
# Tables only later stages read: nothing after the pipeline does (the report, verdicts, the
# dashboard, the exports). In the temporary in-memory store of `analyze DUMP` (`release_
# intermediates`) the runner drops each once the last stage that declares it among its reads has
# run: they are a fifth of what the stages' tables hold at 1M spans (292 and 131 MB), and under
# the memory bound the later stages spilled that much more (the bench's 1M-span dump, the
# pipeline alone, five times each, alternating: 23.0 s on average dropped, 25.0 s kept, the runs
# varying by +-10%; 0.3-0.4 GB spilled instead of 0.9, the same peak RSS).
INTERMEDIATE_TABLES = ("span_labels", "parent_edges")

# DuckDB's default memory limit is 80% of RAM, and it caches what it reads up to it: the 1M-span
# bench store's analysis and report peaked at 2.3 GB RSS. With 1 GiB it spills a little, peaked at
# 1.2 GB and took no longer (51.9 s against 83.6 s in the same session). The limit belongs to the
# whole DuckDB instance (in `serve` the receiver's group commits share it; they need little) and a
# lower one already set is kept.
ANALYSIS_MEMORY_LIMIT = 1 << 30
# ... for each this many spans: the stages' working sets (step pairs, joins over spans) grow with the
# spans, so under one fixed limit a larger store spills more and its time grows faster than its size.
# The bench's 3M-span dump (bench/analyze.py, one run each): 112.8 s under 1 GiB (orderings ran out
# of it and ran again), 75.0 s under 3 GiB, at the same peak RSS (3.7 GB, the load's). A one-shot
# command gets this; the long-running processes (`serve`'s live analysis, the dashboard's Load page)
# keep the one limit: they share their memory with ingest or the page.
SPANS_PER_LIMIT = 1_000_000


# A stage that runs out of the limit is run again with the limit doubled, up to this share of the
# machine's memory: the 1 GiB suits a million spans, but the orderings of 3M spans (tens of millions
# of step pairs, their gap quantiles held in memory) need more, and failing there is worse than a
# larger footprint for the inputs that need it. Each raise is said on stderr.
MAX_MEMORY_SHARE = 0.5


def bound_memory(con: duckdb.DuckDBPyConnection, *, per_span: bool = True) -> None:
    """Lower DuckDB's memory limit to the analysis's (`working_memory`; with `per_span` False,
    ANALYSIS_MEMORY_LIMIT whatever the store's size) unless it is lower already. An in-memory store
    (`analyze DUMP`) gets the limit on top of what its tables hold already: they live in the
    buffer pool, so under the bare limit the stages spill their inputs and read them back. The
    bench's 1M-span store, back to back: 31.4 s, 1.7 GB spilled, peak RSS 1.3 GB under 1 GiB;
    27.8 s, 1.1 GB spilled, 1.8 GB under this; 24.4 s, none, 3.1 GB with no bound."""
    working = ANALYSIS_MEMORY_LIMIT
    if per_span:
        working = working_memory(int(store.scalar(con, "SELECT count(*) FROM spans") or 0), store.machine_memory())
    limit = working + _in_memory_bytes(con)
    if store.memory_limit(con) > limit:
        con.execute(f"SET memory_limit = '{limit}B'")


def working_memory(spans: int, ram: int) -> int:
    """ANALYSIS_MEMORY_LIMIT for each SPANS_PER_LIMIT spans (once at least), at most
    MAX_MEMORY_SHARE of the machine's memory."""
    scaled = ANALYSIS_MEMORY_LIMIT * max(1.0, spans / SPANS_PER_LIMIT)
    return int(max(ANALYSIS_MEMORY_LIMIT, min(scaled, ram * MAX_MEMORY_SHARE)))


def _in_memory_bytes(con: duckdb.DuckDBPyConnection) -> int:
    """What the tables of an in-memory store hold (0 for a store file: its tables can be evicted)."""
    return store.memory_held(con) if store.is_in_memory(con) else 0


def _raise_memory_limit(con: duckdb.DuckDBPyConnection, stage: str) -> bool:
    """Double the memory limit (capped at MAX_MEMORY_SHARE of RAM); False when at the cap already."""
    current, cap = store.memory_limit(con), int(store.machine_memory() * MAX_MEMORY_SHARE)
    if current >= cap:
        return False
    new = int(min(cap, current * 2))
    con.execute(f"SET memory_limit = '{new}B'")
    print(f"analysis: {stage} ran out of its memory limit ({_size(current)}); running it again "
          f"with {_size(new)}", file=sys.stderr, flush=True)
    return True


def _size(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _run_stage(con: duckdb.DuckDBPyConnection, stage: Stage, ctx: AnalysisContext) -> None:
    """stage.run, again with more memory while it runs out (stages replace what they write, so a
    second run starts clean). Inside a transaction the first failure aborts it: raised as it is."""
    while True:
        try:
            stage.run(con, ctx)
            return
        except duckdb.OutOfMemoryException as exc:
            try:
                con.execute("SELECT 1")  # an aborted transaction refuses even this: give up
            except duckdb.Error:
                raise exc from None
            if not _raise_memory_limit(con, stage.name):
                raise


@dataclass
class AnalysisContext:
    """What stages share besides the tables: options in, diagnostics out."""

    intended_paths: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    clock_offsets_ns: dict[str, float] = field(default_factory=dict)
    workers: int = 1  # stages (and detectors) run at once: stage_graph.workers_for


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[duckdb.DuckDBPyConnection, AnalysisContext], None]
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    assumes: str


def _skew(con: duckdb.DuckDBPyConnection, ctx: AnalysisContext) -> None:
    ctx.clock_offsets_ns = clock_skew.correct_clock_skew(con)


def _detectors(con: duckdb.DuckDBPyConnection, ctx: AnalysisContext) -> None:
    found = detectors.run_all(con, errors=ctx.errors, timings=ctx.timings, workers=ctx.workers)
    findings.store_findings(con, found, table="detector_findings")


STAGES: list[Stage] = [
    Stage("steps", lambda con, ctx: steps.build_steps(con),
          reads=("spans",), writes=("span_labels",),
          assumes="a team thinks in destinations, routes, RPC methods and tables, not span names"),
    Stage("parent edges", lambda con, ctx: edges.build_parent_edges(con),
          reads=("span_labels",), writes=("parent_edges",),
          assumes="a parent span id names the cause within a trace"),
    Stage("clock skew", _skew,
          reads=("span_labels", "parent_edges", "span_links"), writes=("clock_offsets",),
          assumes="a synchronous child sits in the middle of its parent; a consumer starts after its producer"),
    Stage("causal edges", lambda con, ctx: edges.build_causal_edges(con),
          reads=("span_labels", "parent_edges", "span_links", "clock_offsets"), writes=("causal_edges",),
          assumes="links, message ids and a time window tie consumers to producers when context was lost"),
    Stage("instances", lambda con, ctx: instances.build_instances(con),
          reads=("span_labels", "causal_edges", "clock_offsets"), writes=("trace_instances", "instances"),
          assumes="traces tied by causal edges are one workflow instance; its earliest root in a trace no other trace leads into is its entry"),
    Stage("span steps", lambda con, ctx: span_steps.build_span_steps(con),
          reads=("span_labels", "clock_offsets", "trace_instances", "instances"), writes=("span_steps",),
          assumes="every span belongs to exactly one instance"),
    Stage("deliveries", lambda con, ctx: deliveries.build_deliveries(con),
          reads=("span_steps", "spans"), writes=("deliveries", "delivery_orphans"),
          assumes="the same message handled again by the same service is a redelivery, though nothing marks it"),
    Stage("span edges", lambda con, ctx: span_edges.build_span_edges(con),
          reads=("causal_edges", "span_steps"), writes=("span_edges", "unanswered_spans"),
          assumes="a call or send with no instrumented counterpart went to an uninstrumented peer"),
    Stage("workflows", lambda con, ctx: workflows.build_workflows(con),
          reads=("span_steps", "span_edges", "unanswered_spans", "instances"),
          writes=("workflow_edges", "workflow_steps", "instance_variants", "workflow_variants", "workflows"),
          assumes="instances with the same entry step are one workflow type"),
    Stage("data access", lambda con, ctx: data_access.build_data_access(con),
          reads=("span_steps", "spans"), writes=("data_access", "shared_resources"),
          assumes="a database span's operation says whether it writes; a table is its database and name"),
    Stage("patterns", lambda con, ctx: patterns.classify_workflows(con),
          reads=("workflows", "workflow_edges", "span_steps", "data_access"), writes=("workflow_patterns",),
          assumes="who knows the workflow, where state lives and who handles errors decide the pattern"),
    Stage("orderings", lambda con, ctx: orderings.build_orderings(con),
          reads=("span_steps", "instances", "workflow_edges"), writes=("step_orderings",),
          assumes="steps with no causal path between them are ordered only by time"),
    Stage("handling", lambda con, ctx: handling.build_handling(con),
          reads=("span_steps",), writes=("handled_spans", "event_relays"),
          assumes="what a consumer's descendants in its own service do, it does while handling the message"),
    Stage("detectors", _detectors,
          reads=("span_steps", "span_edges", "causal_edges", "instances", "workflows", "workflow_patterns",
                 "workflow_edges", "workflow_steps", "step_orderings", "handled_spans", "event_relays",
                 "data_access", "shared_resources", "deliveries", "delivery_orphans", "spans", "span_links"),
          writes=("detector_findings",),
          assumes="each detector's docstring states its own"),
    Stage("conformance", lambda con, ctx: conformance.run_stage(con, ctx.intended_paths),
          reads=("workflows", "workflow_steps", "workflow_edges", "span_edges", "unanswered_spans", "span_steps",
                 "instances"),
          writes=("conformance_edges", "conformance_workflows", "conformance_findings", "declared_orderings"),
          assumes="an intended workflow matches the recovered one with its entry, else the one sharing most edges"),
    Stage("findings", lambda con, ctx: findings.merge_findings(con),
          reads=("detector_findings", "conformance_findings", "declared_orderings"), writes=("findings",),
          assumes="an ordering the team declared is not implicit"),
    Stage("critical path", lambda con, ctx: critical_path.build_critical_path(con),
          reads=("span_steps", "span_edges", "instances", "detector_findings"),
          writes=("critical_path_segments", "critical_path_steps"),
          assumes="an instance ends at its last end outside link-started side sinks; a consumer waits on the "
                  "sibling its implicit ordering names"),
]


def stage_table() -> str:
    """The Markdown table of STAGES that docs/architecture.md holds (a test keeps them equal)."""
    lines = ["| stage | reads | writes | what it assumes |", "|---|---|---|---|"]
    for stage in STAGES:
        lines.append(f"| {stage.name} | {', '.join(f'`{t}`' for t in stage.reads)} | "
                     f"{', '.join(f'`{t}`' for t in stage.writes)} | {stage.assumes} |")
    return "\n".join(lines) + "\n"


class AnalysisError(RuntimeError):
    """A stage failed; the message lists which and why."""


def _table_oids(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Persistent tables by name -> oid (CREATE OR REPLACE gives a table a new oid)."""
    return dict(con.execute(
        "SELECT table_name, table_oid FROM duckdb_tables() WHERE NOT temporary AND schema_name = 'main' "
        "AND database_name = current_database()"
    ).fetchall())


def _undeclared_writes(before: dict[str, int], after: dict[str, int], stage: Stage) -> list[str]:
    touched = {t for t, oid in after.items() if before.get(t) != oid} | (set(before) - set(after))
    return sorted(touched - set(stage.writes))


def _offload(con: duckdb.DuckDBPyConnection, ctx: AnalysisContext, engine) -> set[str]:
    """Let `engine` (analysis.engine_spark.SparkEngine) run its stages first; their tables land in
    the store. Returns the stages it ran; checks it wrote no table those stages do not declare."""
    before = _table_oids(con)
    try:
        done = engine.run(con, ctx, STAGES, INPUT_TABLES)
    except Exception as exc:
        raise AnalysisError(f"analysis failed:\n  {type(exc).__name__}: {exc}") from exc
    owned = Stage("engine", lambda con, ctx: None, (), tuple(t for s in STAGES if s.name in done for t in s.writes), "")
    stray = _undeclared_writes(before, _table_oids(con), owned)
    if stray:
        raise AnalysisError(f"analysis failed:\n  engine wrote tables its stages do not declare: {', '.join(stray)}")
    return set(done)


class _Releases:
    """INTERMEDIATE_TABLES dropped once every stage still to run that reads them has run."""

    def __init__(self, todo: list[Stage], enabled: bool):
        self.readers = {t: {s.name for s in todo if t in s.reads} for t in INTERMEDIATE_TABLES} if enabled else {}
        self.lock = threading.Lock()

    def after(self, stage: Stage) -> list[str]:
        """The tables to drop now that `stage` ran."""
        with self.lock:
            out = []
            for table, readers in self.readers.items():
                if stage.name in readers:
                    readers.discard(stage.name)
                    if not readers:
                        out.append(table)
            return out


def run_pipeline(con: duckdb.DuckDBPyConnection, intended_paths: list[str] | None = None,
                 engine=None, *, memory_per_span: bool = True,
                 release_intermediates: bool = False, side_by_side: bool = True) -> AnalysisContext:
    """Run every stage over the store behind `con`; results are tables in the same store.
    With an `engine` (`--engine spark`), the stages it runs come first and are skipped here.
    `memory_per_span` False keeps the memory limit at ANALYSIS_MEMORY_LIMIT (`bound_memory`).
    `release_intermediates` drops INTERMEDIATE_TABLES once read (for a store nobody opens after).
    `side_by_side` lets independent stages run at once on a small store (`stage_graph`); False
    inside a transaction (other cursors would not see its tables).

    Raises AnalysisError if a stage failed (after running the rest that could run), or if a stage
    created, replaced or dropped a table it does not declare.
    """
    ctx = AnalysisContext(intended_paths=list(intended_paths or []))
    started = time.perf_counter()
    bound_memory(con, per_span=memory_per_span)
    done = _offload(con, ctx, engine) if engine is not None else set()
    todo = [stage for stage in STAGES if stage.name not in done]
    releases = _Releases(todo, release_intermediates)
    workers = stage_graph.workers_for(con, int(store.scalar(con, "SELECT count(*) FROM spans") or 0)) \
        if side_by_side else 1
    ctx.workers = workers
    graph: stage_graph.StageGraphRun

    def run(cur: duckdb.DuckDBPyConnection, stage: Stage, others) -> bool:
        began = time.perf_counter()
        before = _table_oids(cur)
        try:
            _run_stage(cur, stage, ctx)
            stray = set(_undeclared_writes(before, _table_oids(cur), stage)) - others()
            if stray:
                raise AnalysisError(f"wrote tables it does not declare: {', '.join(sorted(stray))}")
            released = releases.after(stage)
            for table in released:
                cur.execute(f"DROP TABLE {table}")
            graph.note_dropped(set(released))
            return True
        except Exception as exc:  # collected, reported together (a damaged store: raised at once)
            damaged = store.damaged_store_error(cur, exc)
            if damaged is not None:  # a bad block of the file: no later stage can do better
                raise damaged from exc
            ctx.errors.append(f"{stage.name}: {type(exc).__name__}: {exc}")
            return False
        finally:
            ctx.timings[stage.name] = time.perf_counter() - began

    graph = stage_graph.StageGraphRun(con, todo, workers, run)
    skipped = graph.go()
    ctx.errors.extend(f"{name}: skipped, an earlier stage failed" for name in skipped)
    if graph.failed:
        raise AnalysisError("analysis failed:\n  " + "\n  ".join(ctx.errors))
    # What the results describe, so a reader can tell they are stale (`choreoscope dashboard`).
    # The clock's time, not now(): DuckDB's now() is when the transaction began, and the live
    # analysis runs in one (its /metrics "finished" was its start).
    con.execute(
        f"CREATE OR REPLACE TABLE {RUN_TABLE} AS SELECT ?::TIMESTAMPTZ AS finished_at, "
        "(SELECT count(*) FROM spans) AS spans, ? AS seconds",
        [datetime.datetime.now(datetime.UTC), round(time.perf_counter() - started, 3)],
    )
    return ctx


def run_pipeline_atomically(cur: duckdb.DuckDBPyConnection, intended_paths: list[str] | None = None,
                            prepare: Callable[[duckdb.DuckDBPyConnection], object] | None = None) -> AnalysisContext:
    """run_pipeline in one transaction, so readers of the same store (the dashboard) never see
    half-replaced result tables; on failure nothing of this run stays and the error is raised.
    For the long-running processes (live analysis, the dashboard): the one memory limit.
    `prepare(cur)` runs in the transaction before the stages (the live analysis's window)."""
    cur.execute("BEGIN TRANSACTION")
    try:
        if prepare is not None:
            prepare(cur)
        ctx = run_pipeline(cur, intended_paths, memory_per_span=False, side_by_side=False)
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    cur.execute("COMMIT")
    return ctx
