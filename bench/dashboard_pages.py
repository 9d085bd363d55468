"""Benchmark the dashboard as a user meets it: each page's time to show its content on a big store.

    python bench/dashboard_pages.py [--spans 1000000] [--db STORE] [--keep DIR] [--rounds 2]

Builds the store the way a user would (`bench/gen_dump.py` writes an OTLP/JSON-lines dump of
`--spans` spans, `choreoscope load` loads it, `choreoscope analyze --db` analyses it), or takes an
analysed `--db`. Then starts `choreoscope dashboard STORE` on a free port and, in headless Chromium
(Playwright, as the browser test), opens every page and prints the seconds from navigation until
the page shows what it must (the text the browser test waits for), for each of `--rounds` rounds
(the first round includes Streamlit's first import of the page and DuckDB's first scan of the
tables it reads). Issue #15's target is 2 s per page after the load on a 1M-span store; the figures
are printed, not asserted. Needs chromium (apt-get install chromium) and playwright (test extra).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# (path, text the page shows once filled), as in tests/test_dashboard_e2e.py
PAGES = (("/", re.compile(r"\d+ findings")), ("/workflow", "Recovered"), ("/system_map", "Open a node"),
         ("/instance", "ms since the instance started"), ("/findings", "Severity"),
         ("/events", "skew-corrected clocks"), ("/services", "Service details"), ("/load", "Load"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "choreoscope.cli", *args], cwd=ROOT, check=True)


def build_store(spans: int, workdir: Path) -> Path:
    dump, db = workdir / f"dump-{spans}.jsonl", workdir / f"dashboard-{spans}.duckdb"
    if not dump.exists():
        subprocess.run([sys.executable, str(ROOT / "bench" / "gen_dump.py"), str(dump), "--spans", str(spans)],
                       check=True)
    db.unlink(missing_ok=True)
    started = time.perf_counter()
    _cli("load", str(dump), "--db", str(db))
    loaded = time.perf_counter()
    _cli("analyze", str(db), "--out", os.devnull)
    print(f"store: {spans} spans loaded in {loaded - started:.1f} s, analysed in "
          f"{time.perf_counter() - loaded:.1f} s", flush=True)
    return db


def measure(db: Path, rounds: int) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "choreoscope.cli", "dashboard", str(db), "--port", str(port)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    times: dict[str, list[float]] = {}
    try:
        while True:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError("the dashboard exited before it listened")
            if line.startswith("dashboard on"):
                break
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1500, "height": 1700})
                for _ in range(rounds):
                    for path, expected in PAGES:
                        started = time.monotonic()
                        page.goto(f"http://127.0.0.1:{port}{path}")
                        page.get_by_text(expected).first.wait_for(timeout=120_000)
                        times.setdefault(path.strip("/") or "overview", []).append(time.monotonic() - started)
            finally:
                browser.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spans", type=int, default=1_000_000)
    ap.add_argument("--db", type=Path, help="an analysed store to measure (default: build one of --spans)")
    ap.add_argument("--keep", type=Path, help="directory for the dump and store (default: a temporary one)")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        db = args.db or build_store(args.spans, workdir)
        times = measure(db, args.rounds)
    print(f"{'page':<12} " + " ".join(f"{'round ' + str(i + 1):>8}" for i in range(args.rounds)) + "   (s to content)")
    for name, ts in times.items():
        print(f"{name:<12} " + " ".join(f"{t:>8.2f}" for t in ts))
    worst = max(ts[-1] for ts in times.values())
    print(f"slowest page in the last round: {worst:.2f} s (target: 2 s on a 1M-span store)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
