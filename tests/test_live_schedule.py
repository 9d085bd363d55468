"""The live analysis of `serve` leaves ingest most of the time: after a run of d seconds it rests at
least 3 d (at most a quarter of the time analysing), never less than the interval, and runs only
on new spans or on request; on a store larger than its window it analyses the traces of the latest
spans stored and the traces they link to (analysis/live_window.py)."""

from __future__ import annotations

from choreoscope.analysis.live import MAX_SHARE, AnalysisLoop
from choreoscope.collector import store
from choreoscope.collector.loaders import load_paths
from tests.paths import REPO


def test_a_run_pushes_the_next_back_by_three_times_its_duration(tmp_path):
    con = store.connect(tmp_path / "live.duckdb")
    assert load_paths(con, [REPO / "sample_traces" / "dumps" / "ecommerce.otlp.jsonl"]).ok
    loop = AnalysisLoop(con, interval_s=0.001)
    assert loop.next_wait_s() == 0.001  # nothing run yet: the interval
    assert loop.run_once() is True
    took = loop.status.last_duration_s
    assert took > 0 and loop.status.last_error is None
    assert loop.next_wait_s() == took * (1 / MAX_SHARE - 1) == 3 * took
    assert loop.run_once() is False  # no new span: no run
    assert loop.run_once(force=True) is True  # "Analyse now"
    assert AnalysisLoop(con, interval_s=0).next_wait_s() is None  # only on request
    long_interval = AnalysisLoop(con, interval_s=3600)
    long_interval.status.last_duration_s = took
    assert long_interval.next_wait_s() == 3600


def test_a_run_in_one_transaction_records_when_it_finished(tmp_path):
    """analysis_run.finished_at (serve's /metrics, the dashboard) is the end of the run, not the
    start of its transaction (DuckDB's now())."""
    import time

    con = store.connect(tmp_path / "live.duckdb")
    assert load_paths(con, [REPO / "sample_traces" / "dumps" / "ecommerce.otlp.jsonl"]).ok
    before = time.time()
    assert AnalysisLoop(con, interval_s=0).run_once() is True
    finished, seconds = con.execute("SELECT epoch(finished_at), seconds FROM analysis_run").fetchone()
    assert before + seconds - 0.05 <= finished <= time.time()


def _window_by_hand(con, window_spans: int) -> set[str]:
    """The window's traces as live_window's docstring says, from the rows in Python: the traces of
    the latest `window_spans` rows stored, and the traces their links point to."""
    rows = con.execute("SELECT rowid, trace_id FROM spans").fetchall()
    last = max(r for r, _ in rows)
    recent = {t for r, t in rows if r > last - window_spans}
    linked = {lt for t, lt in con.execute("SELECT trace_id, linked_trace_id FROM span_links").fetchall() if t in recent}
    return recent | linked


def test_on_a_store_larger_than_its_window_a_run_analyses_the_latest_traces_whole(tmp_path):
    con = store.connect(tmp_path / "live.duckdb")
    for name in ("loan_saga", "ecommerce"):  # ecommerce last: its consumers link to other traces
        assert load_paths(con, [REPO / "sample_traces" / "dumps" / f"{name}.otlp.jsonl"]).ok
    total = con.execute("SELECT count(*) FROM spans").fetchone()[0]
    window = 300
    traces = _window_by_hand(con, window)
    in_window = sum(1 for (t,) in con.execute("SELECT trace_id FROM spans").fetchall() if t in traces)
    assert window < in_window < total
    loop = AnalysisLoop(con, interval_s=0, window_spans=window)
    assert loop.run_once() is True and loop.status.last_error is None
    assert loop.status.last_window_spans == in_window and loop.status.last_span_count == total
    assert con.execute("SELECT spans FROM analysis_run").fetchone()[0] == in_window
    analysed = {t for (t,) in con.execute("SELECT DISTINCT trace_id FROM span_steps").fetchall()}
    assert analysed == traces
    # the store's own tables again, on every cursor, and nothing of the window left in it
    assert con.cursor().execute("SELECT count(*) FROM spans").fetchone()[0] == total
    assert not con.execute("SELECT * FROM duckdb_views() WHERE NOT internal AND view_name IN ('spans', 'span_links')"
                           ).fetchall()

    # a window the store fits in: the whole store, as without one
    whole = AnalysisLoop(con, interval_s=0, window_spans=total)
    assert whole.run_once(force=True) is True and whole.status.last_window_spans is None
    assert con.execute("SELECT spans FROM analysis_run").fetchone()[0] == total
