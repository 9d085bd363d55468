"""The store refuses a span already stored through `span_keys`, not a primary key on `spans`;
stores of the primary-key layout are migrated on their first writable open."""

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


def insert(con, table, skip_duplicates=True) -> int:
    con.execute("BEGIN TRANSACTION")
    added = store.insert_arrow(con, table, None, skip_duplicates=skip_duplicates)
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
