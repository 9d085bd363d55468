"""A store whose data blocks are damaged after it was opened fine: DuckDB finds the damage only
when a query reads a bad block, which for the dashboard and serve's live analysis is long after
the open. Real processes: `choreoscope dashboard` says so and exits 2 before it serves a page;
`choreoscope serve` stops with one message and exit 2 when its live analysis meets the damage,
instead of retrying it at every interval. Never a traceback.

The damage is made as in tests/test_store_open_errors.py: bytes overwritten in every 4 KiB page
past the first 300 KB of a real, checkpointed store (the blocks' checksums fail on read).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from choreoscope.cli import main
from choreoscope.collector import store
from choreoscope.sample_traces.generate import DUMPS_DIR

REPO = Path(__file__).resolve().parent.parent
DUMPS = [str(DUMPS_DIR / f"{n}.otlp.jsonl") for n in ("hybrid_billing", "ecommerce")]


def _checkpointed(db: Path) -> None:
    con = store.connect(db)
    con.execute("CHECKPOINT")
    con.close()


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, Path]:
    """A loaded store, and the same analysed (the dashboard analyses a store that needs it)."""
    folder = tmp_path_factory.mktemp("damaged")
    loaded, analysed = folder / "loaded.duckdb", folder / "analysed.duckdb"
    assert main(["load", *DUMPS, "--db", str(loaded), "--no-progress"]) == 0
    _checkpointed(loaded)
    analysed.write_bytes(loaded.read_bytes())
    assert main(["analyze", "--db", str(analysed), "--out", str(folder / "report.md")]) == 0
    _checkpointed(analysed)
    return {"loaded": loaded, "analysed": analysed}


def _damage(good: Path, out: Path) -> None:
    data = bytearray(good.read_bytes())
    for at in range(300_000, len(data), 4096):
        data[at:at + 64] = b"\xaa" * 64
    out.write_bytes(bytes(data))


def _run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    """The command as a real process; a run that does not end by itself fails the test."""
    return subprocess.run([sys.executable, "-m", "choreoscope.cli", *args], check=False, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _assert_says_damaged(err: str, db: Path) -> list[str]:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "is damaged and cannot be used" in line]
    assert lines, err
    assert all(str(db.name) in line and "Corrupt database file" in line and "restore it from a backup" in line
               for line in lines), lines
    return lines


@pytest.mark.parametrize("which", ["analysed", "loaded"])
def test_dashboard_on_a_store_with_damaged_blocks_says_so_and_exits_2(stores, which, tmp_path):
    db = tmp_path / "bad.duckdb"
    _damage(stores[which], db)
    before = db.read_bytes()
    result = _run(["dashboard", str(db), "--port", "0"])
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = _assert_says_damaged(result.stderr, db)
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == len(lines) == 1, result.stderr
    assert lines[0].startswith("choreoscope dashboard: ")
    assert "dashboard on" not in result.stdout  # it never served a page
    assert db.read_bytes() == before  # nor analysed (wrote to) the damaged file


def test_dashboard_still_opens_a_sound_store(stores, tmp_path):
    """The check reads every table and passes a sound store: the dashboard comes up."""
    db = tmp_path / "good.duckdb"
    db.write_bytes(stores["analysed"].read_bytes())
    proc = subprocess.Popen([sys.executable, "-m", "choreoscope.cli", "dashboard", str(db), "--port", "0"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        for line in proc.stdout:
            if line.startswith("dashboard on"):
                break
        else:
            pytest.fail(f"the dashboard did not start: {proc.stderr.read()}")
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert "Traceback" not in err, err


def test_serve_stops_when_its_live_analysis_meets_a_damaged_store(stores, tmp_path):
    db = tmp_path / "bad.duckdb"
    _damage(stores["loaded"], db)
    result = _run(["serve", "--db", str(db), "--grpc-port", "0", "--http-port", "0", "--dashboard-port", "0",
                   "--analyze-every", "1"])
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = _assert_says_damaged(result.stderr, db)
    # said when found and when stopping; the analysis is not retried at each interval
    assert len(lines) == 2, result.stderr
    assert "the live analysis stopped" in lines[0] and lines[-1].startswith("choreoscope serve: stopped: ")
    assert result.stderr.count("choreoscope serve: analysing") == 1, result.stderr
    assert "OTLP/HTTP listening" in result.stdout  # it had started receiving
