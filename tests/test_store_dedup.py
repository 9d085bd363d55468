"""The store refuses a span already stored through `span_keys`, not a primary key on `spans`, and
stores a link once through its span, not a primary key on `span_links`; stores of the primary-key
layouts are migrated on their first writable open. A store filled once without keys (the analysis's
store of dumps) drops the repeated spans afterwards, keeping the same rows."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from choreoscope.collector import store


def span_rows(ids: list[tuple[str, str]], name: str = "op") -> pa.Table:
    rows = {n: [None] * len(ids) for n in store.SPAN_COLUMN_NAMES}
    rows["trace_id"] = [t for t, _ in ids]
    rows["span_id"] = [s for _, s in ids]
    rows["name"] = [f"{name} {i}" for i in range(len(ids))]
    return pa.table(rows, schema=store.SPAN_ARROW_SCHEMA)


IDS = [(f"{t:032x}", f"{s:016x}") for t in range(1, 4) for s in range(1, 5)]


def link_rows(ids: list[tuple[str, str]], target: str = "9" * 16) -> pa.Table:
    """One link per span of `ids`, to span `target` of trace 7..7."""
    n = len(ids)
    return pa.table({"trace_id": [t for t, _ in ids], "span_id": [s for _, s in ids],
                     "linked_trace_id": ["7" * 32] * n, "linked_span_id": [target] * n,
                     "linked_trace_state": [None] * n, "attributes": ["{}"] * n}, schema=store.LINK_ARROW_SCHEMA)


def insert(con, table, skip_duplicates=True, links=None) -> int:
    con.execute("BEGIN TRANSACTION")
    added = store.insert_arrow(con, table, links, skip_duplicates=skip_duplicates)
    con.execute("COMMIT")
    return added


def test_spans_have_no_primary_key_and_a_resent_span_is_stored_once(tmp_path):
    con = store.connect(tmp_path / "s.duckdb")
    assert not store._spans_have_primary_key(con)
    assert insert(con, span_rows(IDS)) == len(IDS)
    again = span_rows(IDS[:5] + [("f" * 32, "e" * 16)], name="again")
    assert insert(con, again) == 1
    assert store.scalar(con, "SELECT count(*) FROM spans") == len(IDS) + 1
    assert store.scalar(con, "SELECT count(*) FROM span_keys") == len(IDS) + 1
    # the first copy stays
    assert store.scalar(con, f"SELECT name FROM spans WHERE span_id = '{IDS[0][1]}' "
                             f"AND trace_id = '{IDS[0][0]}'") == "op 0"


def test_a_span_twice_in_one_insert_keeps_its_first_row(tmp_path):
    con = store.connect(tmp_path / "s.duckdb")
    rows = span_rows(IDS[:3] + IDS[:3])  # names op 0..2 then op 3..5 for the same ids
    assert insert(con, rows) == 3
    assert sorted(r[0] for r in con.execute("SELECT name FROM spans").fetchall()) == ["op 0", "op 1", "op 2"]


def test_the_unchecked_insert_refuses_a_duplicate_and_rolls_back(tmp_path):
    con = store.connect(tmp_path / "s.duckdb")
    insert(con, span_rows(IDS[:2]))
    con.execute("BEGIN TRANSACTION")
    try:
        store.insert_arrow(con, span_rows(IDS[1:4]), None, skip_duplicates=False)
        raise AssertionError("a duplicate went in unchecked")
    except duckdb.ConstraintException:
        con.execute("ROLLBACK")
    assert store.scalar(con, "SELECT count(*) FROM spans") == 2
    assert insert(con, span_rows(IDS[1:4])) == 2
    assert insert(con, span_rows(IDS[4:6]), skip_duplicates=False) == 2
    assert store.scalar(con, "SELECT count(*) FROM span_keys") == store.scalar(con, "SELECT count(*) FROM spans") == 6


def legacy_store(path) -> None:
    """A store as the primary-key version wrote it: the key on spans, no span_keys."""
    con = duckdb.connect(str(path))
    cols = ",\n  ".join(f"{n} {t}" for n, t in store.SPAN_COLUMNS)
    con.execute(f"CREATE TABLE spans ({cols}, PRIMARY KEY (trace_id, span_id))")
    con.execute(store.SCHEMA_DDL[1])
    legacy_rows = span_rows(IDS)  # noqa: F841 - read by name below
    con.execute("INSERT INTO spans SELECT * FROM legacy_rows")
    con.close()


def test_a_store_of_the_primary_key_layout_opens_read_only_as_it_is(tmp_path):
    db = tmp_path / "old.duckdb"
    legacy_store(db)
    con = store.connect(db, read_only=True, create=False)
    assert store.scalar(con, "SELECT count(*) FROM spans") == len(IDS)
    assert store._spans_have_primary_key(con)


def test_a_store_of_the_primary_key_layout_is_migrated_once_on_a_writable_open(tmp_path, capsys):
    db = tmp_path / "old.duckdb"
    legacy_store(db)
    con = store.connect(db)
    assert "upgrading store" in capsys.readouterr().err
    assert not store._spans_have_primary_key(con)
    assert [n for (n,) in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'spans' "
        "ORDER BY ordinal_position").fetchall()] == store.SPAN_COLUMN_NAMES
    assert store.scalar(con, "SELECT count(*) FROM span_keys") == len(IDS)
    # spans stored by the old version still count as stored
    assert insert(con, span_rows(IDS[:4] + [("a" * 32, "b" * 16)])) == 1
    con.close()
    con = store.connect(db)
    assert capsys.readouterr().err == ""
    assert store.scalar(con, "SELECT count(*) FROM spans") == len(IDS) + 1


def links_stored(con) -> list[tuple]:
    return con.execute("SELECT trace_id, span_id, linked_span_id FROM span_links ORDER BY ALL").fetchall()


def test_a_resent_span_brings_its_links_once(tmp_path):
    con = store.connect(tmp_path / "s.duckdb")
    assert not store._links_have_primary_key(con)
    assert insert(con, span_rows(IDS[:3]), links=link_rows(IDS[:3]), skip_duplicates=False) == 3
    # resent with a new span, and that new span twice in the same request
    again = IDS[1:3] + [("f" * 32, "e" * 16)] * 2
    assert insert(con, span_rows(again), links=link_rows(again)) == 1
    assert links_stored(con) == sorted((t, s, "9" * 16) for t, s in IDS[:3] + [("f" * 32, "e" * 16)])


def test_links_without_their_spans_are_stored_once(tmp_path):
    """A Parquet span_links/ file loaded twice."""
    con = store.connect(tmp_path / "s.duckdb")
    insert(con, span_rows([]), links=link_rows(IDS[:2] + IDS[:1]))
    insert(con, span_rows([]), links=link_rows(IDS[:3]))
    assert links_stored(con) == sorted((t, s, "9" * 16) for t, s in IDS[:3])


def test_a_store_filled_without_keys_drops_repeated_spans_and_their_links():
    con = duckdb.connect()
    store.ensure_schema(con)
    for batch in (IDS[:4], IDS[2:6]):  # IDS[2:4] twice: the second copies go
        con.execute("BEGIN TRANSACTION")
        store.insert_arrow(con, span_rows(batch, name=f"from {batch[0][1][-1]}"), link_rows(batch),
                           skip_duplicates=False, keys=False)
        con.execute("COMMIT")
    assert store.scalar(con, "SELECT count(*) FROM span_keys") == 0
    assert store.drop_repeated_spans(con) == 2
    assert store.drop_repeated_spans(con) == 0
    # the first copies stay: IDS[2:4] as the first batch named them
    assert con.execute("SELECT trace_id, span_id, name FROM spans ORDER BY ALL").fetchall() == sorted(
        [(*ids, f"from 1 {i}") for i, ids in enumerate(IDS[:4])] + [(*ids, f"from 3 {i + 2}") for i, ids in enumerate(IDS[4:6])])
    assert links_stored(con) == sorted((t, s, "9" * 16) for t, s in IDS[:6])


def schema_3_store(path) -> None:
    """A store as schema 3 wrote it: span_links with its primary key on the four ids."""
    con = store.connect(path)
    con.execute("DROP TABLE span_links")
    con.execute(store.table_ddl("span_links", store.LINK_COLUMNS, store.LINK_KEY))
    con.execute(f"UPDATE {store.STORE_META_TABLE} SET schema_version = 3")
    insert(con, span_rows(IDS[:2]), links=link_rows(IDS[:2]))
    con.close()


def test_a_store_of_schema_3_gets_span_links_without_its_key_once(tmp_path, capsys):
    db = tmp_path / "s3.duckdb"
    schema_3_store(db)
    capsys.readouterr()
    con = store.connect(db, read_only=True, create=False)
    assert store._links_have_primary_key(con)  # read as it is
    con.close()
    con = store.connect(db)
    assert "span links" in capsys.readouterr().err
    assert not store._links_have_primary_key(con)
    assert links_stored(con) == sorted((t, s, "9" * 16) for t, s in IDS[:2])
    assert store.scalar(con, f"SELECT schema_version FROM {store.STORE_META_TABLE}") == store.STORE_SCHEMA_VERSION
    assert insert(con, span_rows(IDS[:3]), links=link_rows(IDS[:3])) == 1
    assert len(links_stored(con)) == 3
    con.close()
    con = store.connect(db)
    assert capsys.readouterr().err == ""


def test_a_span_listing_the_same_link_twice_stores_it_once():
    """The first of the two is kept (the primary key on span_links kept it before)."""
    from choreoscope.collector.spanbatch import Link, SpanBatch

    batch = SpanBatch(source="t")
    assert batch.add(trace_id="1" * 32, span_id="2" * 16, links=[
        Link("7" * 32, "9" * 16, attributes={"n": 1}), Link("7" * 32, "8" * 16), Link("7" * 32, "9" * 16, attributes={"n": 2})])
    assert [(row[3], row[5]) for row in batch.link_rows] == [("9" * 16, '{"n":1}'), ("8" * 16, "{}")]
