"""Differential test of `--engine spark` on a real local Spark (`local[2]`): every table the Spark
stages write, and the JSON report built on them, equal the DuckDB engine's.

The inputs are chosen for the evidence they exercise: a sample with span links and message-id
hops (hybrid_billing), a live capture with an SNS -> SQS subscription hop, and a real Zipkin dump
with a time-window hop. Floats are compared at 6 significant digits (parallel aggregates differ in
the last bits, as for the golden reports)."""

from __future__ import annotations

import json

import pytest

from choreoscope.analysis import pipeline
from choreoscope.analysis.engine_spark import SPARK_STAGES, SparkEngine
from choreoscope.analysis.open_inputs import open_inputs
from choreoscope.analysis.report import build_report, validate_report
from choreoscope.cli import build_parser
from choreoscope.sample_traces.generate import DUMPS_DIR, scenario_dir
from tests.golden_reports import normalised
from tests.paths import REAL_TRACES, REPO
from tests.spark_fixtures import spark  # noqa: F401 - the session fixture

CASES = {
    "hybrid_billing": ([DUMPS_DIR / "hybrid_billing.otlp.jsonl"], [scenario_dir("hybrid_billing") / "intended.yaml"]),
    "sns_sqs_moto": ([REPO / "sample_traces" / "captures" / "sns_sqs_moto" / "capture.otlp.jsonl.gz"], []),
    "real-zipkin-lens-messaging2": ([REAL_TRACES / "zipkin-lens" / "messaging2.json"], []),
}


def _tables(con) -> dict[str, list]:
    out = {}
    for stage in pipeline.STAGES:
        if stage.name not in SPARK_STAGES:
            continue
        for table in stage.writes:
            rows = con.execute(f"SELECT * FROM {table}").fetchall()
            columns = [c[0] for c in con.description]
            out[table] = (columns, sorted((normalised(list(r)) for r in rows), key=repr))
    return out


def _analyse(inputs, intended, engine=None):
    opened = open_inputs([str(p) for p in inputs], ":memory:")
    try:
        pipeline.run_pipeline(opened.con, [str(p) for p in intended], engine=engine)
        report = build_report(opened.con)
        validate_report(report)
        return _tables(opened.con), normalised(json.loads(json.dumps(report, default=str)))
    finally:
        opened.con.close()


@pytest.mark.parametrize("name", sorted(CASES))
def test_spark_engine_gives_the_duckdb_tables_and_report(spark, name):  # noqa: F811
    inputs, intended = CASES[name]
    if not all(p.exists() for p in inputs):
        pytest.skip(f"{name}: input not present ({', '.join(str(p) for p in inputs)})")
    tables, report = _analyse(inputs, intended)
    on_spark, spark_report = _analyse(inputs, intended, SparkEngine(spark=spark))
    assert any(rows for _, rows in tables.values())
    for table, expected in tables.items():
        assert on_spark[table] == expected, table
    assert spark_report == report


def test_the_cli_chooses_the_engine_and_master():
    from choreoscope.analysis.analyze_cmd import _engine

    args = build_parser().parse_args(["analyze", "x.jsonl", "--engine", "spark", "--spark-master", "local[2]"])
    engine = _engine(args)
    assert isinstance(engine, SparkEngine) and engine.master == "local[2]"
    assert _engine(build_parser().parse_args(["analyze", "x.jsonl"])) is None
