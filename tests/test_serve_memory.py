"""`choreoscope serve` bounds its DuckDB instance's memory from the start (collector/serve.py
SERVE_MEMORY_LIMIT): DuckDB's own limit is 80% of RAM, and it caches the store's blocks up to it,
so a receiver without a dashboard grew with its store."""

from __future__ import annotations

import signal

from choreoscope.analysis.pipeline import ANALYSIS_MEMORY_LIMIT
from choreoscope.cli import build_parser
from choreoscope.collector import serve, store

LIMIT = serve.SERVE_MEMORY_LIMIT


def test_serve_without_dashboard_runs_under_the_analysis_memory_limit(tmp_path):
    con = store.connect(tmp_path / "plain.duckdb")
    assert store.memory_limit(con) > 1.5 * LIMIT  # DuckDB's own (80% of RAM): the bound changes it
    con.close()
    args = build_parser().parse_args(["serve", "--db", str(tmp_path / "s.duckdb"), "--grpc-port", "0",
                                      "--http-port", "0", "--no-dashboard", "--decode-workers", "0"])
    args.duration = 0.1
    seen: list[float] = []
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    assert serve.run(args, on_started=lambda receiver: seen.append(store.memory_limit(receiver.con))) == 0
    # in-process, serve gives the caller its signal handlers back (pytest's, here)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    assert abs(seen[0] - LIMIT) < 0.01 * LIMIT
    # with the dashboard, the live analysis keeps the instance at its own limit: the same one
    assert LIMIT == ANALYSIS_MEMORY_LIMIT


def test_a_lower_limit_already_set_is_kept(tmp_path):
    lower = 256 << 20
    con = store.connect(tmp_path / "s.duckdb")
    con.execute(f"SET memory_limit = '{lower}B'")
    serve.bound_store_memory(con)
    assert abs(store.memory_limit(con) - lower) < 0.01 * lower
    con.close()
