"""The receiver's writer hands DuckDB its JSON columns as Arrow's JSON extension type
(`store.as_json_typed`), so DuckDB takes the text as JSON without parsing it: the stored rows are the
same as the plain insert's, the columns keep their JSON type, and a duplicate still goes through
the checked insert. Other callers of `insert_arrow` (the loaders: text from a user's file) keep
DuckDB's check."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest

from choreoscope.collector import store
from choreoscope.collector.ingest import Ingester


def rows(n: int, first: int = 0) -> pa.Table:
    cols = {name: [None] * n for name in store.SPAN_COLUMN_NAMES}
    cols["trace_id"] = [f"{i + 1:032x}" for i in range(first, first + n)]
    cols["span_id"] = [f"{i + 1:016x}" for i in range(first, first + n)]
    cols["attributes"] = [f'{{"k":{i},"s":"v\\"{i}"}}' for i in range(n)]
    cols["resource_attributes"] = ['{"service.name":"a"}'] * n
    cols["events"] = ['[{"name":"e","time_ns":1,"attributes":{}}]'] * n
    return pa.table(cols, schema=store.SPAN_ARROW_SCHEMA)


def links(spans: pa.Table) -> pa.Table:
    n = spans.num_rows
    return pa.table({"trace_id": spans["trace_id"], "span_id": spans["span_id"],
                     "linked_trace_id": ["7" * 32] * n, "linked_span_id": ["9" * 16] * n,
                     "linked_trace_state": [None] * n, "attributes": ['{"x":1}'] * n},
                    schema=store.LINK_ARROW_SCHEMA)


def test_as_json_typed_marks_only_the_json_columns_without_changing_values():
    table = rows(3)
    typed = store.as_json_typed(table)
    json_columns = {name for name, sqltype in store.SPAN_COLUMNS if sqltype == "JSON"}
    for field in typed.schema:
        assert (field.type == pa.json_(pa.string())) == (field.name in json_columns), field.name
    for name in json_columns:
        assert typed[name].cast(pa.string()).equals(table[name])
    assert store.as_json_typed(typed) is typed  # already typed: unchanged


@pytest.mark.parametrize("skip_duplicates", [False, True])
def test_typed_rows_store_the_same_as_plain_ones(tmp_path, skip_duplicates):
    stored = []
    for typed in (False, True):
        con = store.connect(tmp_path / f"{typed}-{skip_duplicates}.duckdb")
        spans = rows(5)
        spans_links = links(spans)
        if typed:
            spans, spans_links = store.as_json_typed(spans), store.as_json_typed(spans_links)
        con.execute("BEGIN TRANSACTION")
        assert store.insert_arrow(con, spans, spans_links, skip_duplicates=skip_duplicates) == 5
        con.execute("COMMIT")
        types = dict(con.execute("SELECT column_name, data_type FROM information_schema.columns "
                                 "WHERE table_name = 'spans'").fetchall())
        assert types["attributes"] == types["events"] == "JSON"
        assert store.scalar(con, "SELECT sum((attributes->>'$.k')::INTEGER) FROM spans") == 10
        stored.append((con.execute("SELECT * FROM spans ORDER BY span_id").fetchall(),
                       con.execute("SELECT * FROM span_links ORDER BY span_id").fetchall()))
        con.close()
    assert stored[0] == stored[1]


def test_the_ingester_stores_typed_rows_and_a_resent_group_once(tmp_path):
    con = store.connect(tmp_path / "s.duckdb")
    ingester = Ingester(con).start()
    try:
        assert ingester.submit_arrow(rows(4), None).result(30) == 4
        # two of them again, with two new ones: the plain INSERT fails, the checked one stores 2
        assert ingester.submit_arrow(rows(4, first=2), None).result(30) == 4
    finally:
        ingester.stop()
    assert store.scalar(con, "SELECT count(*) FROM spans") == 6
    assert store.scalar(con, "SELECT count(*) FROM span_keys") == 6
    assert ingester.stats().spans_duplicate == 2
    assert ingester.commit_cpu_s > 0


def test_plain_text_that_is_not_json_is_still_refused(tmp_path):
    """What the loaders insert (text they did not write) is still checked by DuckDB."""
    con = store.connect(tmp_path / "s.duckdb")
    bad = rows(1).set_column(store.SPAN_COLUMN_NAMES.index("attributes"), "attributes",
                             pa.array(["{not json"]))
    con.execute("BEGIN TRANSACTION")
    with pytest.raises(duckdb.ConversionException):
        store.insert_arrow(con, bad, None, skip_duplicates=False)
    con.execute("ROLLBACK")
