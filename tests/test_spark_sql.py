"""Each DuckDB construct `spark_sql` rewrites gives on a real local Spark what it gives on DuckDB,
and what it cannot rewrite raises instead of running with another meaning."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest

from choreoscope.analysis import spark_sql
from choreoscope.analysis.engine_spark import SparkStore
from tests.spark_fixtures import spark  # noqa: F401 - the session fixture

ROWS = pa.table({
    "k": ["a", "a", "a", "b", "b", None],
    "t": [3, 1, 2, 5, 4, 1],
    "s": ["x/12/y", "/users/7", "v1", "ab-CD", "ord_8xK2", "9"],
})
PUBLISHES = pa.table({"k": ["a", "a", "b", "c"], "t": [1, 3, 4, 0], "id": ["p1", "p3", "p4", "p0"]})

# Each query in DuckDB's dialect, as the stages write it.
CASES = {
    "regexp back-reference": "SELECT s, regexp_replace(s, '(^|[^A-Za-z0-9_])[0-9]+([^A-Za-z0-9_]|$)', "
                             "'\\1{id}\\2', 'g') AS r FROM rows",
    "list slices": "SELECT s, string_split(s, '/')[1:1] AS a, string_split(s, '/')[2:] AS b, "
                   "string_split(s, '/')[1:0] AS c, string_split(s, '/')[2] AS d FROM rows",
    "regexp full match": "SELECT s, regexp_full_match(s, '[A-Za-z0-9_-]+') AS m, "
                         "regexp_full_match(s, '[a-z]{2,3}([-_][A-Za-z]{2,4})?') AS l FROM rows",
    "ordered list": "SELECT k, list(s ORDER BY t, s) AS by_t, list(DISTINCT s ORDER BY s) AS d, "
                    "list(s ORDER BY t)[1:2] AS first_two FROM rows GROUP BY k",
    "quantile": "SELECT k, quantile_cont(t, 0.5) AS p50, quantile_cont(t, 0.95) AS p95, median(t) AS m "
                "FROM rows GROUP BY k",
    "exclude": "SELECT r.* EXCLUDE (s) FROM rows r",
    "asof join": "SELECT r.k, r.t, p.id, r.t - p.t AS lag FROM rows r "
                 "ASOF JOIN publishes p ON p.k = r.k AND r.t >= p.t",
    "grouped scalar subquery": "SELECT r.k, (SELECT count(*) FROM publishes p WHERE p.k = r.k) AS n, count(*) AS c "
                               "FROM rows r GROUP BY r.k",
    "parameter": "SELECT s FROM rows WHERE t >= $low",
}


def _normal(rows):
    return sorted((tuple(tuple(v) if isinstance(v, list) else v for v in row) for row in rows), key=repr)


@pytest.mark.parametrize("name", sorted(CASES))
def test_rewritten_sql_gives_duckdbs_rows_on_spark(spark, name):  # noqa: F811
    sql = CASES[name]
    params = {"low": 2}
    con = duckdb.connect()
    con.register("rows", ROWS)
    con.register("publishes", PUBLISHES)
    expected = con.execute(sql, params if "$low" in sql else None).fetchall()
    store = SparkStore(spark)
    store.register("rows", ROWS)
    store.register("publishes", PUBLISHES)
    try:
        got = store.execute(sql, params).fetchall()
    finally:
        store.unregister("rows")
        store.unregister("publishes")
    assert expected, "the case must select rows"
    assert _normal(got) == _normal(expected)


@pytest.mark.parametrize("sql", [
    "SELECT regexp_replace(s, '[0-9]', '#') FROM rows",  # first match only on DuckDB
    "UPDATE rows SET s = 'x'",
    "SELECT list(s ORDER BY t DESC) FROM rows",
    "SELECT r.k, p.id FROM rows r ASOF JOIN publishes p ON p.k = r.k AND r.t > p.t",
])
def test_what_cannot_keep_its_meaning_raises(spark, sql):  # noqa: F811
    store = SparkStore(spark)
    store.register("rows", ROWS)
    store.register("publishes", PUBLISHES)
    try:
        with pytest.raises(spark_sql.NotPortable):
            store.execute(sql)
    finally:
        store.unregister("rows")
        store.unregister("publishes")
