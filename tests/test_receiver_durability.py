"""`choreoscope serve` as a real process: an acknowledged span survives kill -9; SIGTERM exits 0."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from receiver_fixtures import ServeProcess, assert_stored_exactly, make_spans, span_count

from choreoscope.collector import store


def traced_provider(serve: ServeProcess) -> tuple[TracerProvider, InMemorySpanExporter]:
    """An SDK pipeline exporting through both receivers, remembering what it made."""
    provider = TracerProvider(resource=Resource.create({"service.name": "durable"}))
    provider.add_span_processor(BatchSpanProcessor(GrpcExporter(endpoint=serve.grpc_address, insecure=True)))
    provider.add_span_processor(BatchSpanProcessor(HttpExporter(endpoint=serve.http_url)))
    mem = InMemorySpanExporter()
    provider.add_span_processor(BatchSpanProcessor(mem))
    return provider, mem


def test_acknowledged_spans_survive_kill_9(tmp_path):
    db = tmp_path / "durable.duckdb"
    serve = ServeProcess(db)
    try:
        provider, mem = traced_provider(serve)
        tracer = provider.get_tracer("durability")
        for i in range(300):
            with tracer.start_as_current_span(f"job {i}", attributes={"i": i}), \
                    tracer.start_as_current_span("step"):
                pass
        assert provider.force_flush(30_000)  # returns once both exporters were acknowledged
        rich = make_spans(tag="-rich")
        assert GrpcExporter(endpoint=serve.grpc_address, insecure=True).export(rich).name == "SUCCESS"
        workers = serve.descendants()
        assert workers, "serve runs decode worker processes by default"
    finally:
        serve.proc.send_signal(signal.SIGKILL)
        serve.proc.wait(10)
    assert serve.proc.returncode == -signal.SIGKILL
    # its decode workers notice and exit rather than linger
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]
    made = list(mem.get_finished_spans())
    assert len(made) == 600
    con = store.connect(db)  # replays the WAL left by the killed process
    try:
        assert span_count(con) == len(made) + len(rich)
        assert_stored_exactly(con, made + rich)
    finally:
        con.close()
    provider.shutdown()


def test_sigterm_commits_and_exits_zero(tmp_path):
    db = tmp_path / "term.duckdb"
    serve = ServeProcess(db)
    spans = make_spans()
    assert HttpExporter(endpoint=serve.http_url).export(spans).name == "SUCCESS"
    serve.proc.send_signal(signal.SIGTERM)
    _, err = serve.proc.communicate(timeout=30)
    assert serve.proc.returncode == 0, err
    assert f"{len(spans)} spans stored" in err
    con = store.connect(db, read_only=True)
    try:
        assert_stored_exactly(con, spans, source="otlp-http")
    finally:
        con.close()
