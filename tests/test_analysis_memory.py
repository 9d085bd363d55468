"""The analysis bounds DuckDB's memory (its default is 80% of RAM, cached up to that): the limit
is lowered to ANALYSIS_MEMORY_LIMIT for the run (plus what an in-memory store's tables hold), and a
lower limit already set is kept."""

from __future__ import annotations

from choreoscope.analysis.pipeline import ANALYSIS_MEMORY_LIMIT, run_pipeline
from choreoscope.collector import store
from choreoscope.collector.loaders import load_paths
from tests.paths import REPO

DUMP = REPO / "sample_traces" / "dumps" / "ecommerce.otlp.jsonl"


def _limit(con) -> str:
    return con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]


def test_the_analysis_runs_within_the_bound_and_keeps_a_lower_limit(tmp_path):
    con = store.connect(tmp_path / "a.duckdb")
    assert load_paths(con, [DUMP]).ok
    assert _limit(con) != "1.0 GiB"  # DuckDB's default on this machine: 80% of RAM
    run_pipeline(con)
    assert ANALYSIS_MEMORY_LIMIT == 1 << 30 and _limit(con) == "1.0 GiB"
    con.execute("SET memory_limit = '300MB'")
    run_pipeline(con)
    assert _limit(con) == "286.1 MiB"


def test_an_in_memory_store_gets_the_bound_on_top_of_what_its_tables_hold(tmp_path):
    """Its tables cannot be evicted to a file: under the bare bound the stages would spill them."""
    import duckdb

    from choreoscope.analysis import pipeline

    con = duckdb.connect(":memory:")
    store.ensure_schema(con)
    assert load_paths(con, [DUMP]).ok
    con.execute("CREATE TABLE ballast AS SELECT repeat('x', 1000) || i AS s FROM range(300000) t(i)")
    held = pipeline._in_memory_bytes(con)
    assert held == store.scalar(con, "SELECT sum(memory_usage_bytes) FROM duckdb_memory()") > 250e6
    con.execute("SET memory_limit = '16GB'")
    pipeline.bound_memory(con)
    # (DuckDB shows the setting cut to a tenth of a GiB)
    assert abs(store.memory_limit(con) - (ANALYSIS_MEMORY_LIMIT + held)) < 0.1 * (1 << 30)
    on_file = store.connect(tmp_path / "f.duckdb")
    assert load_paths(on_file, [DUMP]).ok
    assert pipeline._in_memory_bytes(on_file) == 0


def test_a_stage_that_runs_out_of_memory_runs_again_with_more(tmp_path, capsys):
    """With a limit far too small (4 MB), stages run out of memory; each is run again with the limit
    doubled (up to half the machine's memory), says so, and the report is the one without the limit."""
    from choreoscope.analysis.report import build_report
    from tests.golden_reports import normalised

    reports = []
    for limit in (None, "4MB"):
        con = store.connect(tmp_path / f"{limit}.duckdb")
        assert load_paths(con, [DUMP]).ok
        if limit:
            con.execute(f"SET memory_limit = '{limit}'")
        run_pipeline(con)
        reports.append(normalised(build_report(con)))
        con.close()
    err = capsys.readouterr().err
    assert "ran out of its memory limit (4 MiB); running it again with 8 MiB" in err
    assert reports[0] == reports[1]


def test_a_dump_is_analysed_in_memory_spilling_into_a_directory_of_its_own(tmp_path, monkeypatch):
    """Not DuckDB's default `.tmp` in the working directory, which may be read-only or a repository."""
    import os

    from choreoscope.analysis.open_inputs import open_inputs

    monkeypatch.chdir(tmp_path)
    opened = open_inputs([str(DUMP)], "unused.duckdb")
    spill = opened.spill.name
    assert _limit(opened.con) and os.path.isdir(spill) and not spill.startswith(str(tmp_path))
    assert opened.con.execute("SELECT current_setting('temp_directory')").fetchall()[0][0] == spill
    opened.con.execute("SET memory_limit = '4MB'")  # spills (and raises the limit as it must)
    run_pipeline(opened.con)
    assert not (tmp_path / ".tmp").exists()  # DuckDB's default would be there until the close
    opened.con.close()


def test_the_limit_grows_with_the_spans_up_to_half_the_memory_and_not_for_long_running_processes(
        tmp_path, monkeypatch):
    """A larger store's stages work on more rows: a fixed limit would make them spill more and more."""
    from choreoscope.analysis import pipeline

    gib = 1 << 30
    assert pipeline.working_memory(0, 24 * gib) == pipeline.working_memory(999_999, 24 * gib) == gib
    assert pipeline.working_memory(3_000_000, 24 * gib) == 3 * gib
    assert pipeline.working_memory(30_000_000, 24 * gib) == 12 * gib  # half the machine's
    assert pipeline.working_memory(30_000_000, gib) == gib  # never below the one limit
    con = store.connect(tmp_path / "a.duckdb")
    assert load_paths(con, [DUMP]).ok
    # as if the store held four times SPANS_PER_LIMIT spans
    monkeypatch.setattr(pipeline, "SPANS_PER_LIMIT", store.scalar(con, "SELECT count(*) FROM spans") // 4)
    pipeline.bound_memory(con)
    assert abs(store.memory_limit(con) - min(4 * gib, store.machine_memory() // 2)) < 0.1 * gib
    con.execute("SET memory_limit = '16GB'")
    pipeline.run_pipeline_atomically(con)  # the live analysis, the dashboard's Load page
    assert _limit(con) == "1.0 GiB"
