"""`choreoscope load` and `choreoscope stats` as a user runs them: real processes, real files."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from choreoscope.collector import store
from tests.paths import REAL_TRACES as REAL

pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason=f"{REAL} (the real trace dumps) is not present")
REPO = Path(__file__).resolve().parents[1]


def choreoscope(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "choreoscope.cli", *args], check=False, cwd=REPO,
                          capture_output=True, text=True, timeout=120, **kw)


def test_load_prints_a_summary_and_exits_zero(tmp_path):
    db = tmp_path / "s.duckdb"
    p = choreoscope("load", str(REAL / "zipkin-lens"), str(REAL / "holmesgpt/trace_data.input.json"),
                    "--db", str(db))
    assert p.returncode == 0, p.stderr
    assert "8 files (0 with problems), 1209 spans loaded, 0 duplicates skipped, 0 rejected" in p.stdout
    assert "smartthings-mobile-web-install.json: zipkin, 957 spans loaded" in p.stdout
    assert "\r" not in p.stderr  # no progress bar when stderr is not a terminal
    again = choreoscope("load", str(REAL / "zipkin-lens/yelp.json"), "--db", str(db))
    assert again.returncode == 0
    assert "0 spans loaded, 16 duplicates skipped, 0 rejected" in again.stdout


def test_load_exits_non_zero_and_names_the_problem(tmp_path):
    db = tmp_path / "s.duckdb"
    empty = tmp_path / "empty.json"
    empty.write_text("")
    p = choreoscope("load", str(REAL / "zipkin-lens/ascend.json"), str(empty), "--db", str(db))
    assert p.returncode == 1
    assert f"{empty}: the file is empty; nothing to load" in p.stderr
    assert "2 files (1 with problems), 8 spans loaded" in p.stdout
    con = store.connect(db, read_only=True)
    assert store.scalar(con, "SELECT count(*) FROM spans") == 8
    con.close()


def test_load_with_a_forced_format(tmp_path):
    p = choreoscope("load", str(REAL / "zipkin-lens/ascend.json"), "--format", "otlp-json",
                    "--db", str(tmp_path / "s.duckdb"))
    assert p.returncode == 1
    assert "this is zipkin, not otlp-json as requested" in p.stderr


def test_progress_bar_on_a_terminal(tmp_path):
    big = tmp_path / "big.jsonl"
    data = (REAL / "otel-tui/test_data.json").read_bytes()
    big.write_bytes(data + data)  # over the 4 MiB threshold; the second copy is all duplicates
    leader, follower = pty.openpty()
    try:
        p = subprocess.run([sys.executable, "-m", "choreoscope.cli", "load", str(big), "--db",
                            str(tmp_path / "s.duckdb")], check=False, cwd=REPO, stdout=subprocess.PIPE,
                           stderr=follower, text=True, timeout=120)
        os.close(follower)
        follower = -1
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        if follower != -1:
            os.close(follower)
        os.close(leader)
    assert p.returncode == 0
    assert "547 spans loaded, 547 duplicates skipped" in p.stdout
    assert b"big.jsonl [" + b"#" * 30 + b"] 100% 547 spans" in shown


def test_stats_shows_the_store_and_opens_it_read_only(tmp_path):
    db = tmp_path / "s.duckdb"
    assert choreoscope("load", str(REAL / "otel-tui/test_data.json"), str(REAL / "zipkin-lens/messaging.json"),
                       "--db", str(db)).returncode == 0
    holder = store.connect(db, read_only=True)  # a read-write open elsewhere would now fail
    try:
        p = choreoscope("stats", "--db", str(db))
    finally:
        holder.close()
    assert p.returncode == 0, p.stderr
    out = p.stdout
    heading = {line.split()[0]: line.split()[1:] for line in out.split("\n\n")[0].splitlines()}
    assert heading["spans"] == ["551"]
    assert heading["traces"] == ["142"]
    assert heading["services"] == ["9"]  # 8 in otel-tui, frontend also in messaging.json, + backend
    assert heading["links"][:3] == ["53", "(on", "53"]
    assert heading["from"][0].startswith("2018-") and heading["from"][-1] == "UTC"
    assert heading["to"][0] == "2024-10-30"
    frontend = next(line for line in out.splitlines() if line.startswith("frontend "))
    assert frontend.split() == ["frontend", "199", "118", "60", "1"]


def test_stats_on_a_missing_store(tmp_path):
    p = choreoscope("stats", "--db", str(tmp_path / "none.duckdb"))
    assert p.returncode == 2
    assert "does not exist; load traces first" in p.stderr
    assert not (tmp_path / "none.duckdb").exists()
