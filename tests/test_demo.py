"""`choreoscope demo`: the quick start's main job, run briefly on free ports, and its offline form."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import duckdb

REPO = Path(__file__).resolve().parents[1]


def test_demo_streams_through_the_exporter_and_serves_the_dashboard(tmp_path):
    db = tmp_path / "demo.duckdb"
    cmd = [sys.executable, "-m", "choreoscope.cli", "demo", "--db", str(db), "--grpc-port", "0",
           "--http-port", "0", "--dashboard-port", "0", "--duration", "20"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    output, dashboard, health = [], None, None
    try:
        deadline = time.monotonic() + 60
        while dashboard is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            output.append(line)
            if m := re.match(r"dashboard on (\S+)", line):
                dashboard = m.group(1)
        assert dashboard, "".join(output)
        with urllib.request.urlopen(f"{dashboard}/_stcore/health", timeout=20) as resp:
            health = (resp.status, resp.read().decode())
        with urllib.request.urlopen(dashboard, timeout=20) as resp:
            page = resp.read().decode()
        # Read the rest through the same buffered reader (communicate() would read the pipe
        # directly and miss lines readline() already buffered); a timer ends a hung demo.
        watchdog = threading.Timer(90, proc.kill)
        watchdog.start()
        try:
            output.append(proc.stdout.read())
            proc.wait(30)
        finally:
            watchdog.cancel()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = "".join(output)
    assert proc.returncode == 0, text
    assert health == (200, "ok")
    assert "<title>" in page.lower() or "streamlit" in page.lower()
    assert "What to look at first" in text
    con = duckdb.connect(str(db), read_only=True)
    by_source = dict(con.execute("SELECT source, count(*) FROM spans GROUP BY ALL").fetchall())
    assert by_source.get("otlp-grpc", 0) > 0, f"no span arrived through the exporter: {by_source}"
    assert sum(n for s, n in by_source.items() if s.endswith(".otlp.jsonl")) == 4935
    kinds = {k for (k,) in con.execute("SELECT DISTINCT kind FROM findings").fetchall()}
    assert {"implicit_ordering", "implicit_orchestrator", "missing_compensation"} <= kinds


def test_demo_offline_writes_the_report(tmp_path):
    out = tmp_path / "report.md"
    proc = subprocess.run(
        [sys.executable, "-m", "choreoscope.cli", "demo", "--offline", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = out.read_text()
    assert "implicit_ordering · inventory-service, shipping-service" in report
    assert "undeclared_edge" in report and "missing_edge" in report
