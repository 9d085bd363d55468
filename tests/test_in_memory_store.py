"""The analysis's temporary in-memory store of dumps (`analyze DUMP`): filled without DuckDB's
automatic checkpoints, left uncompressed up to store.UNCOMPRESSED_SHARE of the machine's memory
and compressed once at the end of the load above it; a store file keeps its checkpoints. The
pipeline drops the intermediate tables from it once read, and every other table stays the same."""

from __future__ import annotations

from choreoscope.analysis.open_inputs import open_inputs
from choreoscope.collector import store
from choreoscope.collector.loaders import load_paths
from tests.paths import REPO

DUMP = REPO / "sample_traces" / "dumps" / "ecommerce.otlp.jsonl"


def _setting(con) -> str:
    return store.scalar(con, "SELECT current_setting('checkpoint_threshold')")


def _held(con) -> int:
    return store.scalar(con, "SELECT sum(memory_usage_bytes) FROM duckdb_memory()")


def test_a_small_store_stays_uncompressed_without_checkpoints(tmp_path):
    opened = open_inputs([str(DUMP)], str(tmp_path / "unused.duckdb"))
    assert _setting(opened.con) == "909.4 TiB"  # (1000 TB, as DuckDB shows it)
    uncompressed = _held(opened.con)
    opened.con.execute("CHECKPOINT")  # what the load left undone
    assert _held(opened.con) < 0.75 * uncompressed
    assert opened.con.execute("SELECT count(*) FROM spans").fetchall()[0][0] > 1000


def test_a_store_above_the_bound_is_compressed_once_and_checkpoints_again(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "machine_memory", lambda: 8 << 20)  # an eighth: 1 MiB
    opened = open_inputs([str(DUMP)], str(tmp_path / "unused.duckdb"))
    assert _setting(opened.con) == "16.0 MiB"
    compressed = _held(opened.con)
    opened.con.execute("CHECKPOINT")
    assert _held(opened.con) == compressed  # nothing was left to compress


def test_a_store_file_keeps_its_checkpoints(tmp_path):
    con = store.connect(tmp_path / "s.duckdb")
    with store.filled_in_memory(con):
        assert _setting(con) == "16.0 MiB"
        assert load_paths(con, [DUMP]).ok
    assert _setting(con) == "16.0 MiB"


def test_the_bound_is_a_share_of_the_machines_memory(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "machine_memory", lambda: 64 << 20)  # an eighth: 8 MiB, more than it holds
    opened = open_inputs([str(DUMP)], str(tmp_path / "unused.duckdb"))
    assert _setting(opened.con) == "909.4 TiB"
    monkeypatch.setattr(store, "machine_memory", lambda: 8 << 20)  # an eighth: 1 MiB, less
    opened = open_inputs([str(DUMP)], str(tmp_path / "unused.duckdb"))
    assert _setting(opened.con) == "16.0 MiB"


def _result_tables(con) -> dict[str, list]:
    """Every persistent table's rows, sorted (the analysis's results and its inputs)."""
    names = [t for (t,) in con.execute("SELECT table_name FROM duckdb_tables() WHERE NOT temporary "
                                       "AND table_name <> 'analysis_run' ORDER BY 1").fetchall()]
    return {t: sorted(map(repr, con.execute(f"SELECT * FROM {t}").fetchall())) for t in names}


def test_the_intermediate_tables_are_dropped_once_read_and_nothing_else_changes(tmp_path):
    from choreoscope.analysis.pipeline import INTERMEDIATE_TABLES, STAGES, run_pipeline

    results = {}
    for release in (False, True):
        opened = open_inputs([str(DUMP)], str(tmp_path / "unused.duckdb"))
        run_pipeline(opened.con, release_intermediates=release)
        results[release] = _result_tables(opened.con)
        opened.con.close()
    kept, released = results[False], results[True]
    assert set(INTERMEDIATE_TABLES) <= set(kept) and not set(INTERMEDIATE_TABLES) & set(released)
    # every other table the same, rows and all (the stage outputs among them)
    assert {name: rows for name, rows in kept.items() if name not in INTERMEDIATE_TABLES} == released
    assert len({t for s in STAGES for t in s.writes} & set(released)) >= 25
