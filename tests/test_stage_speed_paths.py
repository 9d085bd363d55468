"""The stages' fast paths against their plain ones, on a small SDK-recorded store (the critical path
tests' system): the critical path numbers spans by a hash of their ids, workflows count an edge's
instances per a hash of the edge, and each falls back to the plain way when two share a hash; data
access reads a span's database only where its attributes' text can name one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from choreoscope.analysis import critical_path, data_access, workflows
from choreoscope.collector import store
from choreoscope.sample_traces.generate import write_otlp_jsonl
from tests.analysis_fixtures import analysed_store
from tests.test_critical_path import _record


@pytest.fixture
def con(tmp_path: Path):
    connection = analysed_store([write_otlp_jsonl(_record(), tmp_path / "orders.otlp.jsonl")], tmp_path / "o.duckdb")
    yield connection
    connection.close()


def _rows(con, table: str) -> list[tuple]:
    return con.execute(f"SELECT * FROM {table}").fetchall()


def test_the_critical_path_is_the_same_when_span_keys_collide(con, monkeypatch):
    tables = ("critical_path_segments", "critical_path_steps")
    before = {t: _rows(con, t) for t in tables}  # in their ORDER BY
    assert before["critical_path_segments"]
    collide = "(hash({t}, {s}) % 3)"
    assert store.scalar(con, f"SELECT count(DISTINCT {collide.format(t='trace_id', s='span_id')}) "
                             "FROM span_steps") < store.scalar(con, "SELECT count(*) FROM span_steps")
    monkeypatch.setattr(critical_path, "_SPAN_KEY", collide)
    critical_path.build_critical_path(con)
    assert {t: _rows(con, t) for t in tables} == before


def test_workflow_edges_are_the_same_when_edge_keys_collide(con, monkeypatch):
    tables = ("workflow_edges", "workflow_steps", "instance_variants", "workflow_variants", "workflows")
    before = {t: sorted(map(repr, _rows(con, t))) for t in tables}
    assert len(before["workflow_edges"]) > 2
    monkeypatch.setattr(workflows, "_EDGE_KEY", "(hash(workflow_id, src_step, dst_step, via, event) % 2)")
    workflows.build_workflows(con)
    assert {t: sorted(map(repr, _rows(con, t))) for t in tables} == before


def test_a_database_named_under_an_escaped_key_is_still_read(con):
    spans = con.execute("SELECT trace_id, span_id FROM spans WHERE db_system IS NOT NULL ORDER BY ALL LIMIT 3").fetchall()
    for (trace_id, span_id), attributes in zip(spans, (
            '{"db.namespace":"stock"}', '{"db\\u002ename":"old"}', '{"db.system":"postgresql"}'), strict=True):
        con.execute("UPDATE spans SET attributes = ? WHERE trace_id = ? AND span_id = ?", [attributes, trace_id, span_id])
    data_access.build_data_access(con)
    got = [store.scalar(con, "SELECT namespace FROM data_access WHERE trace_id = ? AND span_id = ?", list(key))
           for key in spans]
    assert got == ["stock", "old", None]
