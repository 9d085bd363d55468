"""Re-run the analysis while spans arrive (`choreoscope serve`): at an interval and on request.

Runs in a background thread of the serving process, on its own cursor of the one shared DuckDB
instance, and only when spans were added since the last run. The dashboard reads `status` and
calls `request()` from its "Analyse now" button.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import duckdb

from choreoscope.analysis.pipeline import run_pipeline_atomically
from choreoscope.collector.store import scalar


@dataclass
class LiveStatus:
    runs: int = 0
    last_run_at: float | None = None
    last_duration_s: float | None = None
    last_span_count: int = -1
    last_error: str | None = None
    running: bool = False


@dataclass
class AnalysisLoop:
    con: duckdb.DuckDBPyConnection
    interval_s: float = 30.0
    intended_paths: list[str] = field(default_factory=list)
    status: LiveStatus = field(default_factory=LiveStatus)

    def __post_init__(self) -> None:
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._force = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="choreoscope-analysis", daemon=True)

    def start(self) -> AnalysisLoop:
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)

    def request(self) -> None:
        """Run as soon as possible, even if no span arrived since the last run."""
        self._force = True
        self._wake.set()

    def run_once(self, force: bool = False) -> bool:
        """Analyse now if spans changed (or `force`); True if a run happened. Thread-safe."""
        with self._lock:
            cur = self.con.cursor()
            try:
                spans = scalar(cur, "SELECT count(*) FROM spans")
                if not force and spans == self.status.last_span_count:
                    return False
                self.status.running = True
                started = time.perf_counter()
                try:
                    run_pipeline_atomically(cur, self.intended_paths)
                    self.status.last_error = None
                except Exception as exc:  # noqa: BLE001 - shown on the dashboard, loop goes on
                    self.status.last_error = str(exc)
                self.status.runs += 1
                self.status.last_run_at = time.time()
                self.status.last_duration_s = time.perf_counter() - started
                self.status.last_span_count = spans
                return True
            finally:
                self.status.running = False
                cur.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            force, self._force = self._force, False
            self.run_once(force=force)
            self._wake.wait(self.interval_s if self.interval_s > 0 else None)
            self._wake.clear()
