"""kill -9 of `choreoscope serve` while its live analysis runs: the store opens afterwards, its
analysis tables are those of the previous run (the live run is one transaction,
analysis.pipeline.run_pipeline_atomically), and `choreoscope analyze` re-analyses it.

Real components: the stores are filled and analysed by the `choreoscope` commands, the server is
a real `choreoscope serve` process (dashboard included: that is where the live analysis loop runs),
which says on stderr when a run starts ("analysing N spans") and ends ("done"); it is killed as
soon as a run has started, over ~5k spans whose analysis takes a couple of seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import duckdb

from choreoscope.analysis.pipeline import RUN_TABLE, STAGES
from choreoscope.sample_traces.generate import DUMPS_DIR
from tests.golden_reports import normalised

REPO = Path(__file__).resolve().parent.parent
FIRST = ["hybrid_billing"]
LATER = ["ecommerce", "event_router", "loan_saga", "notification_fanout"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "choreoscope.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300, check=False)


def _analysis_tables() -> list[str]:
    return sorted({t for stage in STAGES for t in stage.writes} | {RUN_TABLE})


def _snapshot(db: Path) -> dict[str, tuple[int, str]]:
    """Every analysis table as (rows, digest of its sorted rows), and the run's span count."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        out = {}
        existing = {t for (t,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        for table in _analysis_tables():
            if table not in existing:
                out[table] = (-1, "")
                continue
            if table == RUN_TABLE:  # finished_at / seconds differ between runs of the same spans
                rows = con.execute(f"SELECT spans FROM {table}").fetchall()
            else:
                rows = con.execute(f"SELECT * FROM {table}").fetchall()
            digest = hashlib.sha1("\n".join(sorted(map(repr, rows))).encode()).hexdigest()
            out[table] = (len(rows), digest)
        return out
    finally:
        con.close()


def _spans_analysed(db: Path) -> int:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(f"SELECT spans FROM {RUN_TABLE}").fetchall()[0][0]
    finally:
        con.close()


def test_kill_9_during_live_analysis_leaves_the_previous_run_and_reanalyses(tmp_path):
    db = tmp_path / "live.duckdb"
    first = [str(DUMPS_DIR / f"{n}.otlp.jsonl") for n in FIRST]
    later = [str(DUMPS_DIR / f"{n}.otlp.jsonl") for n in LATER]
    assert _cli("load", *first, "--db", str(db), "--no-progress").returncode == 0
    done = _cli("analyze", "--db", str(db), "--format", "json")
    assert done.returncode == 0, done.stderr
    old = _snapshot(db)
    old_spans = _spans_analysed(db)
    assert _cli("load", *later, "--db", str(db), "--no-progress").returncode == 0

    cmd = [sys.executable, "-m", "choreoscope.cli", "serve", "--db", str(db), "--grpc-port", "0",
           "--http-port", "0", "--dashboard-port", "0", "--analyze-every", "0", "--decode-workers", "0"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    started = threading.Event()

    def read_stderr() -> None:
        for line in proc.stderr:
            lines.append(line)
            if "choreoscope serve: analysing" in line:
                proc.send_signal(signal.SIGKILL)  # at once: the run has just begun
                started.set()
        started.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        assert started.wait(120), "serve did not start an analysis"
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    reader.join(10)
    err = "".join(lines)
    assert proc.returncode == -signal.SIGKILL, err
    assert any("analysing" in line for line in lines), err
    assert not any("analysis of" in line and "done" in line for line in lines), \
        f"the analysis finished before the kill; nothing was tested:\n{err}"

    # The killed run left nothing: the store opens (the WAL replays) with the previous run intact.
    stats = _cli("stats", "--db", str(db))
    assert stats.returncode == 0, stats.stderr
    total = int(stats.stdout.split()[1].replace(",", ""))
    assert total > old_spans
    assert _snapshot(db) == old
    assert _spans_analysed(db) == old_spans

    again = _cli("analyze", "--db", str(db), "--format", "json")
    assert again.returncode == 0, again.stderr
    assert _spans_analysed(db) == total
    assert _snapshot(db) != old
    # the re-analysis equals an analysis of the same spans in a store that was never killed
    clean = tmp_path / "clean.duckdb"
    assert _cli("load", *first, *later, "--db", str(clean), "--no-progress").returncode == 0
    # (floats at 6 significant digits, as the golden reports: DuckDB's parallel sums differ in the last bits)
    clean_report = json.loads(_cli("analyze", "--db", str(clean), "--format", "json").stdout)
    assert normalised(clean_report) == normalised(json.loads(again.stdout))
    print(f"\nkill -9 during live analysis: killed while analysing {total} spans; store reopened with "
          f"the previous run ({old_spans} spans, {len(old)} analysis tables unchanged); re-analysed "
          f"{total} spans, report equal to a never-killed store's")
