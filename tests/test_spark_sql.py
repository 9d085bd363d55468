"""Each DuckDB construct `spark_sql` rewrites gives on a real local Spark what it gives on DuckDB,
and what it cannot rewrite raises instead of running with another meaning."""

from __future__ import annotations

import math

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
    # first/list ORDER BY with DESC and NULL keys (DuckDB: NULLS LAST both ways), NULL elements kept
    "ordered first": "SELECT k, first(s ORDER BY t > 2 DESC, s) AS a, first(t ORDER BY k DESC, t DESC) AS b "
                     "FROM rows GROUP BY k",
    "ordered list desc": "SELECT t > 2 AS g, list(k ORDER BY k DESC, t) AS ks, list(k ORDER BY t) AS by_t "
                         "FROM rows GROUP BY ALL",
    # a filtered list of no rows is NULL on DuckDB (Spark's collect_list gives [])
    "filtered list": "SELECT k, list(s ORDER BY s) FILTER (WHERE t > 2) AS l, list(s) FILTER (WHERE t > 4) AS m, "
                     "list(DISTINCT s ORDER BY s) FILTER (WHERE t < 2) AS d FROM rows GROUP BY k",
    "n smallest": "SELECT k, min(t, 2) AS two, min(t, 5) FILTER (WHERE t > 1) AS big FROM rows GROUP BY k",
    # DuckDB's corr/regr_slope are NaN where a variance is 0 (one row too), Spark's NULL
    "corr and slope": "SELECT k, corr(t, length(s)) AS c, regr_slope(length(s), t) AS r, "
                      "corr(t, t) FILTER (WHERE t > 100) AS none FROM rows GROUP BY k",
    "unordered row number": "SELECT count(DISTINCT n) AS n FROM (SELECT row_number() OVER () AS n FROM rows)",
    "exclude from a subquery": "SELECT * EXCLUDE (t, d) FROM (SELECT k, t, s, t * 2 AS d FROM rows)",
    "recursive walk": "WITH RECURSIVE walk(k, t, depth) AS (SELECT k, t, 0 FROM rows WHERE t = 1 "
                      "UNION ALL SELECT r.k, r.t, w.depth + 1 FROM walk w JOIN rows r "
                      "ON r.k = w.k AND r.t = w.t + 1 WHERE w.depth < 8) SELECT * FROM walk",
}


def _value(v):
    if isinstance(v, list):
        return tuple(_value(x) for x in v)
    if isinstance(v, float) and math.isnan(v):
        return "NaN"  # NaN != NaN
    return round(v, 9) if isinstance(v, float) else v


def _normal(rows):
    return sorted((tuple(_value(v) for v in row) for row in rows), key=repr)


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
    "SELECT max(t, 2) FROM rows",
    "SELECT list(s ORDER BY t) OVER (PARTITION BY k) FROM rows",
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
