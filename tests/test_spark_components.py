"""Connected components of linked traces on Spark (no GraphFrames): the instances stage's own
min-label propagation, run through the Spark engine, converges on a long link chain within its
bound of rounds and labels every trace as the DuckDB engine does."""

from __future__ import annotations

import random

import duckdb
import pyarrow as pa
import pytest

from choreoscope.analysis import instances
from choreoscope.analysis.engine_spark import SparkStore
from tests.spark_fixtures import spark  # noqa: F401 - the session fixture

CHAIN = 200


def _pairs() -> tuple[pa.Table, dict[str, str]]:
    """A 200-hop chain whose smallest id sits in the middle (labels must travel both ways), a
    3-trace star, in shuffled order; and the expected label of each trace."""
    rng = random.Random(16)
    ids = [f"{rng.getrandbits(128):032x}" for _ in range(CHAIN + 1)]
    ids[CHAIN // 2] = "0" * 32
    star = ["f" * 31 + "1", "f" * 31 + "2", "f" * 31 + "3"]
    pairs = [(ids[i], ids[i + 1]) for i in range(CHAIN)] + [(star[0], star[1]), (star[2], star[0])]
    rng.shuffle(pairs)
    expected = {t: "0" * 32 for t in ids} | {t: star[0] for t in star}
    return pa.table({"a": [p[0] for p in pairs], "b": [p[1] for p in pairs]}), expected


def _labels(con) -> dict[str, str]:
    name = instances.connected_traces_sql(con, "SELECT a, b FROM _pairs")
    return dict(con.execute(f"SELECT trace_id, label FROM {name}").fetchall())


def test_a_long_link_chain_converges_to_the_duckdb_labels(spark):  # noqa: F811
    table, expected = _pairs()
    con = duckdb.connect()
    con.register("_pairs", table)
    on_duckdb = _labels(con)
    store = SparkStore(spark)
    store.register("_pairs", table)
    on_spark = _labels(store)
    assert on_duckdb == expected
    assert on_spark == on_duckdb
    assert store.statements <= 2 + 6 * 10  # about log2(200) rounds of six statements, not 200


def test_the_rounds_are_bounded(spark, monkeypatch):  # noqa: F811
    table, _ = _pairs()
    monkeypatch.setattr(instances, "MAX_ROUNDS", 2)
    store = SparkStore(spark)
    store.register("_pairs", table)
    with pytest.raises(RuntimeError, match="did not converge in 2 rounds"):
        _labels(store)
