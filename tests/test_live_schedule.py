"""The live analysis of `serve` leaves ingest most of the time: after a run of d seconds it rests at
least 3 d (at most a quarter of the time analysing), never less than the interval, and runs only
on new spans or on request."""

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
