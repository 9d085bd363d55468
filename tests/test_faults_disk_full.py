"""The disk filling up under `choreoscope serve`: exporters are told to retry, nothing acknowledged
is lost, and ingest resumes by itself once space returns.

The store lives on a real size-limited file system: a 16 MiB tmpfs (`mount -t tmpfs -o size=16m`),
or, where tmpfs cannot be mounted, a loop-mounted 32 MiB ext4 image (8 MiB left the WAL test at the
edge: a few bytes more per row decided whether a checkpoint found room once space came back). Both need root (CI runs the
suite as root, as this container does); without either the test is skipped and says why.
(RLIMIT_FSIZE was the other candidate; it makes writes fail with EFBIG, not ENOSPC, so it would
not exercise the condition a full disk really produces.) A ballast file fills the file system
until writes fail with ENOSPC; the receiver's next group commit then fails inside DuckDB, which
rolls it back and keeps the database usable.

Real components only: the `choreoscope serve` subprocess, the OTel SDK's gRPC and HTTP exporters
(their own retry loops; their "Transient error" warnings show what they were answered), a raw gRPC
call and a raw HTTP POST to read the exact refusals (gRPC status code, HTTP status and Retry-After),
and the DuckDB file reopened afterwards.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.trace.export import SpanExportResult
from receiver_fixtures import ServeProcess, assert_stored_exactly, make_spans, span_count

from choreoscope.collector import store
from choreoscope.collector.serve import Receiver

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
# Exporters' retrying requests that are not answered by then fail the test (a deadline, not a
# timing assertion: on a healthy run each returns a second or two after the ballast goes).
EXPORT_TIMEOUT_S = 60


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def _mount_small_fs(where: Path) -> str:
    """Mount a small file system at `where`; returns how (for the report), or skips the test."""
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a size-limited file system (tmpfs or a loop-mounted ext4 image)")
    tried = []
    if shutil.which("mount"):
        done = _run("mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(where))
        if done.returncode == 0:
            return "tmpfs size=16m"
        tried.append(f"tmpfs: {done.stderr.strip()}")
        if shutil.which("mkfs.ext4"):
            image = where.parent / "small.ext4"
            with open(image, "wb") as fh:
                fh.truncate(32 << 20)
            made = _run("mkfs.ext4", "-q", "-F", str(image))
            done = _run("mount", "-o", "loop", str(image), str(where)) if made.returncode == 0 else made
            if done.returncode == 0:
                return "loop-mounted ext4, 32 MiB"
            tried.append(f"ext4 loop: {done.stderr.strip()}")
    pytest.skip("cannot mount a size-limited file system here (" + "; ".join(tried or ["no mount command"]) + ")")


def _fill(path: Path, leave: int = 0) -> int:
    """Write zeros to `path` until the file system is full, then give back `leave` bytes; returns
    the bytes the ballast holds."""
    written = 0
    chunk = b"\0" * (64 << 10)
    with open(path, "wb", buffering=0) as fh:
        while True:
            try:
                written += fh.write(chunk)
            except OSError as exc:
                assert exc.errno == 28, exc  # ENOSPC
                break
        for size in (4096, 512, 1):  # the last partial blocks too
            while True:
                try:
                    written += fh.write(b"\0" * size)
                except OSError:
                    break
        if leave:
            written -= leave
            fh.truncate(written)
    return written


class ExporterWarnings(logging.Handler):
    """The SDK exporters' own log records (their retries say what they were answered)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _raw_grpc(address: str, spans) -> grpc.StatusCode:
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(EXPORT_METHOD, request_serializer=lambda m: m.SerializeToString(),
                                   response_deserializer=lambda b: b)
        try:
            call(encode_spans(spans), timeout=30)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def _raw_http(url: str, spans) -> tuple[int, str | None]:
    request = urllib.request.Request(url, data=encode_spans(spans).SerializeToString(), method="POST",
                                     headers={"Content-Type": "application/x-protobuf"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, None
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Retry-After")


def test_disk_full_during_commit_refuses_retryably_and_loses_nothing(tmp_path):
    fs = tmp_path / "fs"
    how = _mount_small_fs(fs)
    serve = None
    handler = ExporterWarnings()
    loggers = [logging.getLogger(n) for n in ("opentelemetry.exporter.otlp.proto.grpc.exporter",
                                              "opentelemetry.exporter.otlp.proto.http.trace_exporter",
                                              "opentelemetry.exporter.otlp")]
    for lg in loggers:
        lg.addHandler(handler)
    try:
        db = fs / "store.duckdb"
        serve = ServeProcess(db, "--decode-workers", "0")
        grpc_exporter = GrpcExporter(endpoint=serve.grpc_address, insecure=True, timeout=EXPORT_TIMEOUT_S)
        http_exporter = HttpExporter(endpoint=serve.http_url, timeout=EXPORT_TIMEOUT_S)

        before = make_spans(service="before-full", n_traces=3, tag="-before")
        assert grpc_exporter.export(before) == SpanExportResult.SUCCESS

        ballast = fs / "ballast"
        assert _fill(ballast) > 0, f"{how}: nothing could be written"
        assert shutil.disk_usage(fs).free < 4096

        # The exact refusals, read by plain clients: retryable by the OTLP spec (gRPC UNAVAILABLE;
        # HTTP 503 with Retry-After), and nothing of the refused requests is stored.
        probe_grpc = make_spans(service="probe-grpc", n_traces=2, tag="-probe-g")
        probe_http = make_spans(service="probe-http", n_traces=2, tag="-probe-h")
        assert _raw_grpc(serve.grpc_address, probe_grpc) == grpc.StatusCode.UNAVAILABLE
        status, retry_after = _raw_http(serve.http_url, probe_http)
        assert (status, retry_after) == (503, "1")

        # The SDK exporters, sending while the disk is full: they retry on their own.
        during_grpc = make_spans(service="during-grpc", n_traces=4, tag="-during-g")
        during_http = make_spans(service="during-http", n_traces=4, tag="-during-h")
        results: dict[str, SpanExportResult] = {}
        threads = [threading.Thread(target=lambda: results.__setitem__("grpc", grpc_exporter.export(during_grpc))),
                   threading.Thread(target=lambda: results.__setitem__("http", http_exporter.export(during_http)))]
        for t in threads:
            t.start()
        deadline = time.monotonic() + EXPORT_TIMEOUT_S / 2
        while time.monotonic() < deadline:
            transient = [m for m in handler.messages if m.startswith("Transient error")]
            if any("UNAVAILABLE" in m for m in transient) and any("Service Unavailable" in m for m in transient):
                break
            time.sleep(0.05)
        transient = [m for m in handler.messages if m.startswith("Transient error")]
        assert any("StatusCode.UNAVAILABLE" in m for m in transient), handler.messages
        assert any("Service Unavailable" in m for m in transient), handler.messages
        assert not results, "an export was acknowledged while the disk was full"

        ballast.unlink()  # space returns: the exporters' next retries are stored
        for t in threads:
            t.join(EXPORT_TIMEOUT_S)
        assert results == {"grpc": SpanExportResult.SUCCESS, "http": SpanExportResult.SUCCESS}
        after = make_spans(service="after-full", n_traces=3, tag="-after")
        assert http_exporter.export(after) == SpanExportResult.SUCCESS
        grpc_exporter.shutdown()
        http_exporter.shutdown()

        serve.proc.send_signal(signal.SIGTERM)
        _, err = serve.proc.communicate(timeout=60)
        assert serve.proc.returncode == 0, err
        assert "the store's disk is full" in err and "commits succeed again" in err, err
        acknowledged = before + during_grpc + during_http + after
        con = store.connect(db, read_only=True)
        try:
            stored = span_count(con)
            assert stored == len(acknowledged)  # each once; the refused probes not at all
            assert_stored_exactly(con, acknowledged)
        finally:
            con.close()
        print(f"\ndisk full on {how}: {len(acknowledged)} spans acknowledged, {stored} stored; refused: "
              f"gRPC UNAVAILABLE, HTTP 503 Retry-After {retry_after}; exporter retries: "
              f"{len(transient)}; serve said: " + " | ".join(line for line in err.splitlines() if "commit" in line))
    finally:
        for lg in loggers:
            lg.removeHandler(handler)
        if serve is not None and serve.proc.poll() is None:
            serve.proc.kill()
            serve.proc.wait(10)
        _run("umount", "-l", str(fs))


def test_disk_filling_while_the_wal_grows_skips_checkpoints_and_never_invalidates_the_store(tmp_path):
    """A CHECKPOINT that runs out of space makes DuckDB invalidate the whole instance (every later
    query fails until the file is reopened); a commit that runs out of space is only rolled back.
    So the receiver's writer checkpoints itself, only with room on the disk (collector.ingest
    NO_AUTO_CHECKPOINT). Here, in-process (the real Receiver, gRPC exporter and DuckDB file; the
    checkpoint size lowered from 64 MiB to 128 KiB to fit the 16 MiB file system): the WAL grows
    past the checkpoint size with 1 MiB left, checkpoints are skipped, the disk fills, commits
    fail retryably, and with the ballast gone ingest and checkpoints resume, nothing lost."""
    fs = tmp_path / "fs"
    how = _mount_small_fs(fs)
    rec = con = None
    try:
        db = fs / "store.duckdb"
        con = store.connect(db)
        rec = Receiver(con, grpc_port=0, http_port=0)
        rec.ingester.checkpoint_bytes = 128 << 10
        rec.start()
        exporter = GrpcExporter(endpoint=rec.grpc_address, insecure=True, timeout=3)
        acknowledged, refused = [], []

        def send(tag: str) -> SpanExportResult:
            spans = make_spans(service=f"wal-{tag}", n_traces=25, tag=f"-{tag}")
            result = exporter.export(spans)
            (acknowledged if result == SpanExportResult.SUCCESS else refused).append(spans)
            return result

        for i in range(6):  # with room: the writer checkpoints
            assert send(f"room-{i}") == SpanExportResult.SUCCESS
        assert rec.ingester.checkpoints > 0
        ballast = fs / "ballast"
        _fill(ballast, leave=1 << 20)  # under checkpoint_room (1 MiB + a quarter of the file + the WAL twice)
        stopped_at = next((i for i in range(60) if send(f"tight-{i}") == SpanExportResult.FAILURE), None)
        assert stopped_at is not None, f"{how}: the disk never filled"
        assert rec.ingester.checkpoints_skipped > 0  # the WAL passed the size while room was short
        assert rec.ingester.invalidated is None
        assert rec.stats().commits_failed > 0

        ballast.unlink()
        done = rec.ingester.checkpoints
        # A refused export may still have been stored: one queued before the disk filled can be
        # answered "not committed in time" and commit after. The receiver said retry, so re-send
        # each refused export as a retrying exporter would; duplicates must be stored once.
        for spans in refused:
            assert exporter.export(spans) == SpanExportResult.SUCCESS
            acknowledged.append(spans)
        for i in range(6):
            assert send(f"after-{i}") == SpanExportResult.SUCCESS
        assert rec.ingester.checkpoints > done
        assert rec.ingester.invalidated is None
        exporter.shutdown()
        rec.stop()
        rec = None
        acknowledged = [span for spans in acknowledged for span in spans]
        assert span_count(con) == len(acknowledged)
        assert_stored_exactly(con, acknowledged)
        con.close()
        con = None
        reopened = store.connect(db, read_only=True)
        try:
            assert span_count(reopened) == len(acknowledged)
        finally:
            reopened.close()
        print(f"\nWAL on a nearly full {how}: {len(acknowledged)} spans acknowledged and stored; "
              f"{stopped_at} exports fit before the disk filled")
    finally:
        if rec is not None:
            rec.stop()
        if con is not None:
            con.close()
        _run("umount", "-l", str(fs))
