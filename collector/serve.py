"""`choreoscope serve`: the OTLP receiver (gRPC and HTTP) over one store, in one process.

DuckDB lets one process hold the file, so the receiver, the dashboard and the periodic analysis
share one database instance; the receiver only needs a connection (its writer uses a cursor).
On SIGINT/SIGTERM it stops accepting, commits everything it accepted, and exits 0.
TLS and the bearer token (collector/tls_auth.py) apply to both receivers alike.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable

import duckdb
import grpc

from choreoscope.collector import store
from choreoscope.collector.export_decode import DECODE_BACKLOG_BYTES, DecodeBacklog, DecodePool
from choreoscope.collector.ingest import Ingester, IngestStats
from choreoscope.collector.receiver_grpc import start_grpc_server
from choreoscope.collector.receiver_http import TRACES_PATH, HttpReceiver
from choreoscope.collector.tls_auth import (
    SecurityConfigError,
    ServerSecurity,
    exposure_warning,
    security_from_args,
)

DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024
DEFAULT_QUEUE_SPANS = 200_000
DEFAULT_DECODE_WORKERS = 2


class Receiver:
    """OTLP/gRPC + OTLP/HTTP receivers feeding one group-commit ingester.

    Ports given as 0 pick free ones; `grpc_port` / `http_port` hold the bound ports after `start`.
    `decode_workers` processes decode requests off the GIL (0: decode in the request threads).
    `security` (tls_auth.load_security) turns on TLS / mTLS and the bearer token on both.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, host: str = "127.0.0.1",
                 grpc_port: int = 4317, http_port: int = 4318,
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
                 queue_spans: int = DEFAULT_QUEUE_SPANS, decode_workers: int = 0,
                 security: ServerSecurity | None = None, metrics_port: int | None = None,
                 decode_backlog_bytes: int = DECODE_BACKLOG_BYTES):
        self.con = con
        # the bodies both receivers hold for the decode workers, bounded together
        self.decode_backlog = DecodeBacklog(decode_backlog_bytes)
        self.metrics_port = metrics_port  # None: no /metrics endpoint
        self.metrics = None
        self.security = security or ServerSecurity()
        self.host = host
        self.grpc_port = grpc_port
        self.http_port = http_port
        self.max_request_bytes = max_request_bytes
        self.ingester = Ingester(con, queue_spans=queue_spans)
        self.decode_workers = decode_workers
        self._decoder: DecodePool | None = None
        self._grpc: grpc.Server | None = None
        self._http: HttpReceiver | None = None

    @property
    def grpc_address(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        scheme = "https" if self.security.tls else "http"
        return f"{scheme}://{self.host}:{self.http_port}{TRACES_PATH}"

    def start(self) -> Receiver:
        self.ingester.start()
        try:
            self._decoder = DecodePool(self.decode_workers)
            self._grpc, self.grpc_port = start_grpc_server(
                self.ingester, self._decoder, self.host, self.grpc_port, self.max_request_bytes,
                security=self.security, decode_backlog=self.decode_backlog)
            self._http = HttpReceiver(self.ingester, self._decoder, self.max_request_bytes,
                                      security=self.security, decode_backlog=self.decode_backlog)
            self.http_port = self._http.start(self.host, self.http_port)
            if self.metrics_port is not None:
                from choreoscope.collector.metrics import ReceiverMetrics  # prometheus-client

                self.metrics = ReceiverMetrics(self.ingester, self.con)
                self.metrics_port = self.metrics.start(self.host, self.metrics_port, self.security)
        except BaseException:
            self.stop()
            raise
        return self

    def stats(self) -> IngestStats:
        return self.ingester.stats()

    @property
    def metrics_url(self) -> str | None:
        if self.metrics is None:
            return None
        scheme = "https" if self.security.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.metrics_port}/metrics"

    def stop(self, grace_s: float = 10.0) -> None:
        """Stop accepting, let requests in flight finish, commit what was accepted."""
        stopped = self._grpc.stop(grace_s) if self._grpc is not None else None
        if self._http is not None:
            self._http.stop_accepting()
        self.ingester.stop()
        if stopped is not None:
            stopped.wait(grace_s)
        if self._http is not None:
            self._http.stop()
        if self._decoder is not None:
            self._decoder.close()
        if self.metrics is not None:
            self.metrics.stop()
        self._grpc = self._http = self._decoder = None


# DuckDB's own memory limit is 80% of RAM, and it evicts the store's cached blocks only when it
# reaches it: a long-running `serve --no-dashboard` could grow toward it with its store
# (bench/ingest.py, 2M spans of 2,048-span requests: server RSS 1.1-1.3 GB). With the dashboard the live analysis
# already bounds the instance to its ANALYSIS_MEMORY_LIMIT (analysis/pipeline.py, 1 GiB; it keeps a
# lower limit set before it). The same limit from the start bounds ingest alone too, at no cost in
# the same runs (A/B twice: 104.0k and 99.7k spans/s under it, 102.4k and 104.4k without; RSS 1.00 GB
# against 1.12-1.27 GB). A 300 MB limit held RSS at 570 MB but stored ~10% fewer spans a second.
SERVE_MEMORY_LIMIT = 1 << 30


def bound_store_memory(con: duckdb.DuckDBPyConnection) -> None:
    """Lower the DuckDB instance's memory limit to SERVE_MEMORY_LIMIT unless it is lower already."""
    if store.memory_limit(con) > SERVE_MEMORY_LIMIT:
        con.execute(f"SET memory_limit = '{SERVE_MEMORY_LIMIT}B'")


def run(args, preload: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
        on_started: Callable[[Receiver], None] | None = None,
        on_stopping: Callable[[], None] | None = None) -> int:
    """Serve until SIGINT/SIGTERM (or `args.duration` seconds, if set), then exit 0.

    Hooks for commands built on serve (`demo`): `preload(con)` before the receiver starts,
    `on_started(receiver)` once it listens, `on_stopping()` when a stop begins.
    """
    try:
        security = security_from_args(args)
    except SecurityConfigError as exc:
        print(f"choreoscope serve: {exc}", file=sys.stderr)
        return 2
    warning = exposure_warning(args.host, security, dashboard=not getattr(args, "no_dashboard", False))
    if warning:
        print(f"choreoscope serve: {warning}", file=sys.stderr, flush=True)
    try:
        con = store.connect(args.db)
    except store.StoreError as exc:
        print(f"choreoscope serve: {exc}", file=sys.stderr)
        return 2
    if not store.is_in_memory(con):  # an in-memory store's rows live in the buffer pool
        bound_store_memory(con)
    if preload is not None:
        preload(con)
    decode_workers = getattr(args, "decode_workers", DEFAULT_DECODE_WORKERS)
    if getattr(args, "no_dashboard", False) and decode_workers >= (os.cpu_count() or 1) - 1:
        # With the cores taken by decode workers and no analysis in this process, DuckDB's
        # worker threads only add hand-offs to each group commit: one thread stored ~8% more
        # spans/s in bench/ingest.py on 2 cores. (A database setting, so not with the dashboard,
        # whose analysis queries use the parallelism.)
        con.execute("SET threads = 1")
    receiver = Receiver(
        con, host=args.host, grpc_port=args.grpc_port, http_port=args.http_port,
        max_request_bytes=args.max_request_bytes, queue_spans=args.queue_spans,
        decode_workers=decode_workers, security=security,
        metrics_port=getattr(args, "metrics_port", None),
    )
    try:
        receiver.start()
    except OSError as exc:
        print(f"choreoscope serve: {exc}", file=sys.stderr)
        con.close()
        return 2

    stop_requested = threading.Event()

    def on_signal(signum, _frame) -> None:
        stop_requested.set()

    # restored once serve has stopped: a caller in the same process (demo, tests) gets its own back
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    print(f"OTLP/gRPC listening on {receiver.grpc_address} ({security.describe()})", flush=True)
    print(f"OTLP/HTTP listening on {receiver.http_url} ({security.describe()})", flush=True)
    if receiver.metrics_url:
        print(f"Prometheus metrics on {receiver.metrics_url}", flush=True)
    print(f"storing spans in {args.db}", flush=True)

    stop_dashboard = None
    analysis = None  # the live analysis loop (analysis/live.py), with the dashboard
    if not getattr(args, "no_dashboard", False):
        from choreoscope.dashboard.context_registry import current
        from choreoscope.dashboard.launch import run_in_process  # Streamlit is imported only when serving it

        # Starts the live analysis and the dashboard in this process; returns their stop.
        stop_dashboard = run_in_process(receiver, con, args)
        analysis = getattr(current(), "loop", None)

    duration = getattr(args, "duration", 0) or 0
    deadline = time.monotonic() + duration if duration > 0 else None
    try:
        if on_started is not None:
            on_started(receiver)
        while not stop_requested.wait(0.5):
            if deadline is not None and time.monotonic() >= deadline:
                break
            if receiver.ingester.damaged or receiver.ingester.invalidated:  # every commit would fail
                break
            if analysis is not None and analysis.status.damaged:
                # The live analysis found a damaged block. Serve stops rather than go on receiving:
                # the message tells the user to restore the file or move it away, which would lose
                # every span acknowledged from now on, while exporters keep (and retry) what a
                # stopped receiver does not take; and the dashboard would show stale results.
                break
    finally:
        if on_stopping is not None:
            on_stopping()
        if callable(stop_dashboard):
            stop_dashboard()
        receiver.stop()
        stats = receiver.stats()
        try:
            con.close()  # checkpoints; a failure (disk full) leaves the WAL, replayed at the next open
        except duckdb.Error as exc:
            print(f"choreoscope serve: closing {args.db} failed ({' '.join(str(exc).split())[:200]}); "
                  "what was acknowledged is in its WAL and replays when it is next opened",
                  file=sys.stderr, flush=True)
        ing = receiver.ingester
        print(f"stopped: {stats.spans_stored} spans stored, {stats.spans_duplicate} duplicates, "
              f"{stats.spans_rejected} rejected, {stats.requests_refused} requests refused (overloaded); "
              f"writer: {stats.commits} group commits (mean {stats.spans_stored / max(stats.commits, 1):,.0f} "
              f"spans), CPU {ing.commit_cpu_s:.2f} s in commits, {ing.checkpoint_cpu_s:.2f} s in "
              f"{ing.checkpoints} checkpoints ({ing.groups_staged} group commits staged during them)",
              file=sys.stderr, flush=True)
        for sig, handler in previous.items():  # after the stop: a second Ctrl-C does not cut it short
            signal.signal(sig, handler)
    if receiver.ingester.damaged:
        print(f"choreoscope serve: {receiver.ingester.damaged}", file=sys.stderr, flush=True)
        return 2
    if analysis is not None and analysis.status.damaged:
        print(f"choreoscope serve: stopped: {analysis.status.damaged}", file=sys.stderr, flush=True)
        return 2
    if receiver.ingester.invalidated:
        print(f"choreoscope serve: DuckDB gave up the store {args.db} after a fatal error "
              f"({receiver.ingester.invalidated}); every acknowledged span is in its WAL: free disk space "
              "if it is full and start serve again", file=sys.stderr, flush=True)
        return 1
    return 0
