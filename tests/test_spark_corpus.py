"""The differential test of `--engine spark` over the whole corpus, beyond tests/test_spark_engine.py's
chosen cases: every generated sample in one store, every real dump of ../shared/real_traces in one
store, and every independent scenario in one store. Each store is analysed by both engines on
`local[2]`; every table the Spark stages write and the JSON report must be equal, floats within a
relative 1e-5: both sides are rounded to 6 significant digits (tests/golden_reports.py), and over
the real dumps' hundreds of latency percentiles a few fall on a rounding edge — Spark's and
DuckDB's interpolations differ in the last bits (54.82025 becomes 54.8202 on one, 54.8203 on the
other). Putting each group in one store keeps it to three Spark runs."""

from __future__ import annotations

import math

import pytest

from choreoscope.sample_traces.generate import DUMPS_DIR
from tests.paths import REPO
from tests.spark_fixtures import spark  # noqa: F401 - the session fixture
from tests.test_analysis_real_traces import DUMPS as REAL_DUMPS
from tests.test_spark_engine import _analyse


def _close(a, b) -> bool:
    """Equal, floats within a relative 1e-5 (see the docstring)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-5)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    return a == b


GROUPS = {
    "samples": sorted(DUMPS_DIR.glob("*.otlp.jsonl")),
    "real dumps": REAL_DUMPS,
    "independent scenarios": sorted((REPO / "sample_traces" / "independent").glob("*/dump.otlp.jsonl.gz")),
}


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_spark_engine_gives_the_duckdb_tables_and_report_over_the_corpus(spark, group):  # noqa: F811
    inputs = [p for p in GROUPS[group] if p.exists()]
    if not inputs:
        pytest.skip(f"{group}: no input present")
    tables, report = _analyse(inputs, [])
    from choreoscope.analysis.engine_spark import SparkEngine

    on_spark, spark_report = _analyse(inputs, [], SparkEngine(spark=spark))
    assert any(rows for _, rows in tables.values())
    for table, expected in tables.items():
        assert _close(on_spark[table], expected), f"{group}: {table}"
    assert _close(spark_report, report)
