"""Re-run the analysis while spans arrive (`choreoscope serve`): at an interval and on request.

Runs in a background thread of the serving process, on its own cursor of the one shared DuckDB
instance, and only when spans were added since the last run; a long run pushes the next one back
so that analysis takes at most a quarter of the time (`next_wait_s`), leaving ingest the rest. On
a store larger than `window_spans` a run analyses the traces of the latest spans stored
(analysis/live_window.py): whatever the store's size, a run then takes about as long, and as much
memory. The dashboard reads `status` and calls `request()` from its "Analyse now" button.

A damaged store (a block failing its checksum, found by a run's reads) ends the loop: every later
run would fail the same way. `status.damaged` holds the one-line message (which file, what to do)
and `choreoscope serve` stops on it (collector/serve.py says why it does not go on receiving).
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field

import duckdb

from choreoscope.analysis import live_window
from choreoscope.analysis.pipeline import run_pipeline_atomically
from choreoscope.collector import store
from choreoscope.collector.store import scalar

MAX_SHARE = 0.25  # of the serving process's time the periodic analysis may take (see next_wait_s)


@dataclass
class LiveStatus:
    runs: int = 0
    last_run_at: float | None = None
    last_duration_s: float | None = None
    last_span_count: int = -1
    last_window_spans: int | None = None  # the spans the last run analysed, when a window (live_window)
    last_error: str | None = None
    running: bool = False
    damaged: str | None = None  # the store is damaged: the message; no run follows


@dataclass
class AnalysisLoop:
    con: duckdb.DuckDBPyConnection
    interval_s: float = 30.0
    intended_paths: list[str] = field(default_factory=list)
    window_spans: int = live_window.DEFAULT_WINDOW_SPANS  # 0: the whole store each run
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
            if self.status.damaged:
                return False
            cur = self.con.cursor()
            try:
                try:
                    spans = scalar(cur, "SELECT count(*) FROM spans")
                except duckdb.Error as exc:
                    if self._found_damage(cur, exc):
                        return False
                    raise
                if not force and spans == self.status.last_span_count:
                    return False
                self.status.running = True
                started = time.perf_counter()
                # Said on stderr: an operator (and tests/test_faults_kill_analysis.py) can tell a
                # run in progress; a kill before "done" leaves the previous run's tables.
                window = spans > self.window_spans > 0
                print(f"choreoscope serve: analysing {spans:,} spans"
                      + (f" (the traces of the latest {self.window_spans:,})" if window else ""),
                      file=sys.stderr, flush=True)
                windowed: int | None = None  # the spans in the window, once the run opened one

                def open_window(c: duckdb.DuckDBPyConnection) -> None:
                    nonlocal windowed
                    windowed = live_window.open_window(c, self.window_spans)

                try:
                    run_pipeline_atomically(cur, self.intended_paths, prepare=open_window)
                    self.status.last_error = None
                    self.status.last_window_spans = windowed
                    print(f"choreoscope serve: analysis of {spans:,} spans done in "
                          f"{time.perf_counter() - started:.1f} s"
                          + (f" ({windowed:,} spans in the window)" if windowed is not None else ""),
                          file=sys.stderr, flush=True)
                except Exception as exc:  # noqa: BLE001 - shown on the dashboard, loop goes on
                    if self._found_damage(cur, exc):
                        return False
                    self.status.last_error = str(exc)
                    print(f"choreoscope serve: analysis of {spans:,} spans failed: "
                          f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                          file=sys.stderr, flush=True)
                self.status.runs += 1
                self.status.last_run_at = time.time()
                self.status.last_duration_s = time.perf_counter() - started
                self.status.last_span_count = spans
                return True
            finally:
                self.status.running = False
                try:
                    live_window.close_window(cur)
                except duckdb.Error:  # a cursor DuckDB gave up: its TEMP views go with it
                    pass
                cur.close()

    def _found_damage(self, cur: duckdb.DuckDBPyConnection, exc: BaseException) -> bool:
        """If `exc` is the store's damage: record the message, say it once, end the loop."""
        # The pipeline raises StoreDamagedError from DuckDB's error; named again here, after the
        # run's rollback, when the file's path can be read (inside the failed transaction it cannot).
        original = exc.__cause__ if isinstance(exc, store.StoreDamagedError) and exc.__cause__ else exc
        damaged = store.damaged_store_error(cur, original)
        if damaged is None and not isinstance(exc, store.StoreDamagedError):
            return False
        self.status.damaged = self.status.last_error = str(damaged or exc)
        self._stop.set()
        print(f"choreoscope serve: the live analysis stopped: {self.status.damaged}", file=sys.stderr, flush=True)
        return True

    def next_wait_s(self) -> float | None:
        """Seconds until the next scheduled run: the interval, stretched so that the analysis takes
        at most MAX_SHARE of the time (a run of d seconds is followed by d * (1/MAX_SHARE - 1) of
        rest). The pipeline uses every core while it runs, so on a store that takes 20 s to analyse
        a 30 s interval would leave ingest slowed two thirds of the time; this keeps it to a
        quarter, whatever the store's size. None: only on request."""
        if self.interval_s <= 0:
            return None
        return max(self.interval_s, (self.status.last_duration_s or 0.0) * (1 / MAX_SHARE - 1))

    def _loop(self) -> None:
        while not self._stop.is_set():
            force, self._force = self._force, False
            self.run_once(force=force)
            self._wake.wait(self.next_wait_s())
            self._wake.clear()
