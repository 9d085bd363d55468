"""Shared pieces of the receiver tests: a real receiver on free ports over a real DuckDB file,
spans made by the real OTel SDK, and the check that what was stored is exactly what the SDK made."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from choreoscope.collector import store
from choreoscope.collector.serve import Receiver

REPO = Path(__file__).resolve().parent.parent


@contextmanager
def running_receiver(tmp_path: Path, **options) -> Iterator[Receiver]:
    """A running Receiver (gRPC + HTTP on free ports) over a fresh store in tmp_path.
    The store's connection is `receiver.con`; options go to Receiver (queue_spans, ...)."""
    con = store.connect(tmp_path / "receiver.duckdb")
    rec = Receiver(con, grpc_port=0, http_port=0, **options).start()
    try:
        yield rec
    finally:
        rec.stop()
        con.close()


def make_spans(service: str = "checkout", n_traces: int = 2, tag: str = "") -> list[ReadableSpan]:
    """Spans with everything OTLP carries: parents, kinds, status, events, links, trace state,
    typed attributes (str, int, float, bool, arrays) on spans, events, links and the resource."""
    mem = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({
        "service.name": service, "service.version": "1.2.3", "deployment.environment": "test",
        "host.cpus": 2, "region.list": ("eu", "us"),
    }))
    provider.add_span_processor(SimpleSpanProcessor(mem))
    tracer = provider.get_tracer("choreoscope.tests", "0.9")
    for i in range(n_traces):
        remote = SpanContext(
            trace_id=0x1F00 + i + 1, span_id=0xABC0 + i + 1, is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED), trace_state=TraceState([("vendor", f"v{i}")]),
        )
        ctx = trace.set_span_in_context(trace.NonRecordingSpan(remote))
        with tracer.start_as_current_span(
            f"POST /orders{tag}", context=ctx, kind=SpanKind.SERVER,
            attributes={"http.request.method": "POST", "http.route": "/orders", "http.response.status_code": 201,
                        "retry": False, "ratio": 0.25, "tags": ("a", "b"), "sizes": (1, 2, 3)},
        ) as root:
            root.add_event("validated", {"items": 3, "ok": True, "note": "é ✓"})
            with tracer.start_as_current_span(
                "orders publish", kind=SpanKind.PRODUCER,
                attributes={"messaging.system": "kafka", "messaging.destination.name": "orders",
                            "messaging.operation.type": "send", "messaging.message.id": f"m-{i}{tag}"},
            ):
                pass
            with tracer.start_as_current_span(
                "orders process", kind=SpanKind.CONSUMER,
                links=[Link(SpanContext(0xFEED + i, 0xBEEF + i, is_remote=True),
                            {"messaging.message.id": f"m-{i}{tag}", "link.n": i})],
            ) as consumer:
                consumer.set_status(Status(StatusCode.ERROR, "payment declined"))
                consumer.add_event("exception", {"exception.type": "Declined", "exception.message": "no"})
            with tracer.start_as_current_span("db insert", kind=SpanKind.CLIENT,
                                              attributes={"db.system.name": "postgresql"}) as db:
                db.set_status(Status(StatusCode.OK))
    provider.shutdown()
    return list(mem.get_finished_spans())


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def _attrs(attributes) -> dict:
    return {k: _plain(v) for k, v in (attributes or {}).items()}


def assert_stored_exactly(con, spans: list[ReadableSpan], source: str | None = None) -> None:
    """Every span is stored once, and every field OTLP carries round-trips exactly."""
    cur = con.cursor()
    for span in spans:
        tid = format(span.context.trace_id, "032x")
        sid = format(span.context.span_id, "016x")
        cols = ("parent_span_id, trace_state, name, kind, start_ns, end_ns, status_code, status_message, "
                "service_name, scope_name, scope_version, attributes, resource_attributes, events, source")
        rows = cur.execute(f"SELECT {cols} FROM spans WHERE trace_id = ? AND span_id = ?",
                           [tid, sid]).fetchall()
        assert len(rows) == 1, f"span {sid} stored {len(rows)} times"
        (parent, tstate, name, kind, start, end, status, message, service, scope, scope_v,
         attrs, res, events, src) = rows[0]
        assert parent == (format(span.parent.span_id, "016x") if span.parent else None)
        expected_state = ",".join(f"{k}={v}" for k, v in span.context.trace_state.items()) or None
        assert tstate == expected_state
        assert name == span.name
        assert kind == span.kind.name
        assert (start, end) == (span.start_time, span.end_time)
        assert status == span.status.status_code.name
        assert message == (span.status.description or None)
        assert service == span.resource.attributes["service.name"]
        scope_expected = span.instrumentation_scope
        assert (scope, scope_v) == (scope_expected.name, scope_expected.version or None)
        assert json.loads(attrs) == _attrs(span.attributes)
        assert json.loads(res) == _attrs(span.resource.attributes)
        assert json.loads(events) == [
            {"name": e.name, "time_ns": e.timestamp, "attributes": _attrs(e.attributes)} for e in span.events
        ]
        if source is not None:
            assert src == source
        links = cur.execute(
            "SELECT linked_trace_id, linked_span_id, linked_trace_state, attributes FROM span_links "
            "WHERE trace_id = ? AND span_id = ? ORDER BY linked_span_id", [tid, sid]).fetchall()
        expected_links = sorted(
            (format(lk.context.trace_id, "032x"), format(lk.context.span_id, "016x"), None,
             _attrs(lk.attributes)) for lk in span.links)
        assert [(a, b, c, json.loads(d)) for a, b, c, d in links] == expected_links
    cur.close()


def span_count(con) -> int:
    cur = con.cursor()
    try:
        return store.scalar(cur, "SELECT count(*) FROM spans")
    finally:
        cur.close()


class ServeProcess:
    """`choreoscope serve --no-dashboard` as a real subprocess on free ports."""

    def __init__(self, db: Path, *extra: str):
        cmd = [sys.executable, "-m", "choreoscope.cli", "serve", "--no-dashboard", "--db", str(db),
               "--grpc-port", "0", "--http-port", "0", *extra]
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.grpc_address = self.http_url = None
        deadline = time.monotonic() + 30
        while (self.grpc_address is None or self.http_url is None) and time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if m := re.match(r"OTLP/gRPC listening on (\S+)", line):
                self.grpc_address = m.group(1)
            if m := re.match(r"OTLP/HTTP listening on (\S+)", line):
                self.http_url = m.group(1)
        if self.grpc_address is None or self.http_url is None:
            self.proc.kill()
            raise RuntimeError(f"serve did not start: {self.proc.stderr.read()}")

    def descendants(self) -> list[int]:
        """Processes the server started (its decode workers)."""
        found, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            for task in Path(f"/proc/{pid}/task").glob("*"):
                try:
                    children = [int(c) for c in (task / "children").read_text().split()]
                except OSError:
                    continue
                found.extend(children)
                todo.extend(children)
        return found
