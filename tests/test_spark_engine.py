"""Differential test of `--engine spark` on a real local Spark (`local[2]`): every table the Spark
stages write, and the JSON report built on them, equal the DuckDB engine's.

The inputs are chosen for the evidence they exercise: a sample with span links and message-id
hops (hybrid_billing), a live capture with an SNS -> SQS subscription hop, and a real Zipkin dump
with a time-window hop. Floats are compared at 6 significant digits (parallel aggregates differ in
the last bits, as for the golden reports)."""

from __future__ import annotations

import json
import math

import pytest

from choreoscope.analysis import pipeline
from choreoscope.analysis.analyze_cmd import analyze
from choreoscope.analysis.engine_spark import SPARK_STAGES, SparkEngine
from choreoscope.analysis.open_inputs import open_inputs, open_lake, parquet_lake
from choreoscope.analysis.parquet_export import export_parquet
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


def _nan(value):
    """NaN as text: NaN != NaN, and DuckDB's corr and regr_slope give NaN on constant input."""
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return [_nan(v) for v in value] if isinstance(value, list) else value


def _tables(con) -> dict[str, list]:
    out = {}
    for stage in pipeline.STAGES:
        if stage.name not in SPARK_STAGES:
            continue
        for table in stage.writes:
            rows = con.execute(f"SELECT * FROM {table}").fetchall()
            columns = [c[0] for c in con.description]
            out[table] = (columns, sorted((_nan(normalised(list(r))) for r in rows), key=repr))
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


def _rows(con, table: str) -> list:
    return sorted(con.execute(f"SELECT * FROM {table}").fetchall(), key=repr)


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    """hybrid_billing (span links, message-id hops) exported as `choreoscope export parquet` does,
    with the loaded store's rows to compare with."""
    out = tmp_path_factory.mktemp("lake")
    opened = open_inputs([str(DUMPS_DIR / "hybrid_billing.otlp.jsonl")], ":memory:")
    try:
        export_parquet(opened.con, str(out))
        rows = {t: _rows(opened.con, t) for t in ("spans", "span_links")}
    finally:
        opened.con.close()
    return out, rows


def test_choreoscope_parquet_is_read_in_place(lake):
    out, rows = lake
    found = parquet_lake([str(out)])
    assert found is not None and not found.remote
    assert all("/spans/day=" in f for f in found.spans) and all("/span_links/day=" in f for f in found.span_links)
    opened = open_lake(found)
    try:  # views over the files, not a load: the same rows as the store that was exported
        views = {v for (v,) in opened.con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
        assert {"spans", "span_links"} <= views
        for table, expected in rows.items():
            assert _rows(opened.con, table) == expected, table
    finally:
        opened.con.close()
    # other inputs are loaded as before: a dump, an otel_traces export, a store
    assert parquet_lake([str(DUMPS_DIR / "hybrid_billing.otlp.jsonl")]) is None
    assert parquet_lake([str(out), str(DUMPS_DIR / "hybrid_billing.otlp.jsonl")]) is None
    assert parquet_lake(["shop.duckdb"]) is None


def test_spark_analyses_the_parquet_without_loading_it(spark, lake):  # noqa: F811
    out, _ = lake
    expected = analyze([str(DUMPS_DIR / "hybrid_billing.otlp.jsonl")], ":memory:")
    got = analyze([str(out)], ":memory:", engine=SparkEngine(spark=spark))
    assert normalised(json.loads(json.dumps(got, default=str))) == \
        normalised(json.loads(json.dumps(expected, default=str)))


def test_a_remote_lake_is_read_by_spark_and_copied_for_duckdb(spark, lake):  # noqa: F811
    out, rows = lake
    found = parquet_lake([out.as_uri()])  # file://…: read like s3a://, by Spark only
    assert found is not None and found.remote and found.spans == (f"{out.as_uri()}/spans",)
    opened = open_lake(found)
    try:
        SparkEngine(spark=spark, lake=found).copy_inputs(opened.con)
        for table, expected in rows.items():
            assert _rows(opened.con, table) == expected, table
    finally:
        opened.con.close()
