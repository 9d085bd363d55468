"""Stages side by side (analysis/stage_graph.py): they run at once only because each declares every
table it reads, so that is checked on the SQL the stages really run; and side by side the pipeline
writes the same tables as one stage at a time."""

from __future__ import annotations

import math

import duckdb
import pytest
import sqlglot
from sqlglot import exp

from choreoscope.analysis import pipeline, stage_graph
from choreoscope.analysis.open_inputs import open_inputs
from choreoscope.analysis.pipeline import (
    INPUT_TABLES,
    STAGES,
    AnalysisContext,
    AnalysisError,
    Stage,
    run_pipeline,
)
from choreoscope.collector import store
from tests.golden_reports import sample_cases

STORE_TABLES = set(INPUT_TABLES) | {t for s in STAGES for t in s.writes}


class _Recording:
    """A connection that keeps the text of every statement run through it."""

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self._con, self.statements = con, []

    def execute(self, sql, *args):
        self.statements.append(sql)
        return self._con.execute(sql, *args)

    def executemany(self, sql, *args):
        self.statements.append(sql)
        return self._con.executemany(sql, *args)

    def __getattr__(self, name):
        return getattr(self._con, name)


def _tables_read(statements: list[str]) -> set[str]:
    """The store's tables named in `statements` (not CTEs of the same name)."""
    out: set[str] = set()
    for sql in statements:
        tree = sqlglot.parse_one(sql, read="duckdb")
        ctes = {cte.alias for cte in tree.find_all(exp.CTE)}
        out |= {t.name for t in tree.find_all(exp.Table) if t.name in STORE_TABLES and t.name not in ctes}
    return out


def test_every_table_a_stage_reads_is_declared():
    """Over every sample with its intended workflow (conformance then reads its tables too)."""
    undeclared: dict[str, set[str]] = {}
    for inputs, intended in sample_cases().values():
        opened = open_inputs(inputs, "unused.duckdb")
        ctx = AnalysisContext(intended_paths=intended)
        for stage in STAGES:
            con = _Recording(opened.con)
            stage.run(con, ctx)
            extra = _tables_read(con.statements) - set(stage.reads) - set(stage.writes)
            if extra:
                undeclared.setdefault(stage.name, set()).update(extra)
        opened.con.close()
    assert not undeclared


def _value(v):
    """NaN as text (it equals nothing, itself included); a float to 12 digits: a sum of doubles
    depends on the order its parts were added in, which DuckDB's threads decide (the reports
    round far coarser)."""
    if isinstance(v, float):
        return "NaN" if math.isnan(v) else float(f"{v:.12g}")
    return v


def _tables(con: duckdb.DuckDBPyConnection) -> dict[str, list]:
    """Every table's rows."""
    names = [t for (t,) in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE NOT temporary AND database_name = current_database() "
        "AND table_name <> ? ORDER BY 1", [pipeline.RUN_TABLE]).fetchall()]
    return {t: [tuple(_value(v) for v in row)
                for row in con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall()] for t in names}


def test_side_by_side_the_stages_write_what_they_write_one_at_a_time():
    inputs, intended = sample_cases()["ecommerce"]
    results = []
    for side_by_side in (False, True):
        opened = open_inputs(inputs, "unused.duckdb")
        assert stage_graph.workers_for(opened.con, 1000) > 1 or not side_by_side
        run_pipeline(opened.con, intended, side_by_side=side_by_side)
        results.append(_tables(opened.con))
        opened.con.close()
    assert results[0] == results[1]


def test_a_stage_starts_once_the_stages_writing_what_it_reads_ran():
    deps = stage_graph.dependencies(STAGES)
    assert deps["steps"] == set()
    assert deps["orderings"] == {"span steps", "instances", "workflows"}
    assert "deliveries" not in deps["span edges"] and "span edges" not in deps["deliveries"]


def test_only_small_stores_run_stages_side_by_side():
    con = duckdb.connect(":memory:")
    con.execute("SET threads = 2")
    rows = stage_graph.SIDE_BY_SIDE_ROW_GROUPS * 2 * stage_graph.ROW_GROUP_ROWS
    assert stage_graph.workers_for(con, rows - 1) == 2
    assert stage_graph.workers_for(con, rows) == 1
    con.execute("SET threads = 1")
    assert stage_graph.workers_for(con, 10) == 1


def _stage(name, reads=(), writes=(), run=None):
    return Stage(name, run or (lambda con, ctx: None), reads=reads, writes=writes, assumes="")


def test_side_by_side_a_failure_skips_what_had_not_started_and_names_the_stage(monkeypatch):
    con = duckdb.connect(":memory:")
    store.ensure_schema(con)

    def boom(con, ctx):
        raise RuntimeError("no such thing")

    stages = [_stage("a", writes=("span_labels",), run=lambda c, x: c.execute("CREATE TABLE span_labels (x INT)")),
              _stage("b", reads=("span_labels",), writes=("span_edges",), run=boom),
              _stage("c", reads=("span_labels", "parent_edges"), writes=("workflows",)),
              _stage("d", reads=("workflows", "span_edges"))]  # waits for b, so always skipped
    monkeypatch.setattr(pipeline, "STAGES", stages)
    monkeypatch.setattr(stage_graph, "workers_for", lambda con, spans: 2)
    with pytest.raises(AnalysisError) as err:
        run_pipeline(con)
    assert "b: RuntimeError: no such thing" in str(err.value)
    assert "d: skipped, an earlier stage failed" in str(err.value)


def test_side_by_side_a_stage_writing_what_it_does_not_declare_is_still_named(monkeypatch):
    con = duckdb.connect(":memory:")
    store.ensure_schema(con)

    def sneaky(con, ctx):
        con.execute("CREATE OR REPLACE TABLE instances AS SELECT 1 AS x")

    stages = [_stage("honest", writes=("span_labels",),
                     run=lambda c, x: c.execute("CREATE OR REPLACE TABLE span_labels AS SELECT 1 AS x")),
              _stage("sneaky", run=sneaky)]
    monkeypatch.setattr(pipeline, "STAGES", stages)
    monkeypatch.setattr(stage_graph, "workers_for", lambda con, spans: 2)
    with pytest.raises(AnalysisError, match="sneaky: AnalysisError: wrote tables it does not declare: instances"):
        run_pipeline(con)
