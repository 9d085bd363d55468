"""The layout the architecture document describes is the one the code has: one import package, the
stage table equal to the pipeline's declarations, no table written by two stages, every table read
written earlier, and no undeclared write tolerated by the runner."""

from __future__ import annotations

import re

import duckdb
import pytest

from choreoscope.analysis import pipeline
from choreoscope.analysis.pipeline import (
    INPUT_TABLES,
    STAGES,
    AnalysisError,
    Stage,
    run_pipeline,
    stage_table,
)
from choreoscope.collector import store
from tests.paths import REPO


def test_the_architecture_document_has_the_stage_table_of_the_pipeline():
    doc = (REPO / "docs" / "architecture.md").read_text()
    assert stage_table() in doc


def test_no_table_is_written_by_two_stages():
    owners: dict[str, str] = {}
    for stage in STAGES:
        for table in stage.writes:
            assert table not in owners, f"{table} is written by {owners[table]} and {stage.name}"
            assert table not in INPUT_TABLES and table != pipeline.RUN_TABLE
            owners[table] = stage.name


def test_every_table_a_stage_reads_is_an_input_or_written_by_an_earlier_stage():
    available = set(INPUT_TABLES)
    for stage in STAGES:
        missing = set(stage.reads) - available
        assert not missing, f"{stage.name} reads {missing} before any stage writes them"
        available |= set(stage.writes)


def test_the_runner_fails_a_stage_that_writes_a_table_it_does_not_declare(monkeypatch):
    con = duckdb.connect(":memory:")
    store.ensure_schema(con)

    def sneaky(con, ctx):
        con.execute("CREATE OR REPLACE TABLE workflows AS SELECT 1 AS x")

    monkeypatch.setattr(pipeline, "STAGES", [STAGES[0], Stage("sneaky", sneaky, reads=(), writes=(), assumes="")])
    with pytest.raises(AnalysisError, match="sneaky.*wrote tables it does not declare: workflows"):
        run_pipeline(con)


def test_only_the_choreoscope_package_is_imported():
    """Bare `analysis`/`collector`/`dashboard`/`sample_traces` imports would load modules twice."""
    bare = re.compile(r"^\s*(from|import)\s+(analysis|collector|dashboard|sample_traces)\b", re.MULTILINE)
    offenders = [str(p.relative_to(REPO)) for folder in ("choreoscope", "collector", "analysis", "dashboard",
                                                        "sample_traces", "tests", "bench")
                 for p in (REPO / folder).rglob("*.py") if bare.search(p.read_text())]
    assert not offenders
