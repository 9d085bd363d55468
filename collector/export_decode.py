"""Export request bodies (OTLP protobuf or JSON, gzip or not) into insertable Arrow tables.

Both receivers decode here. Decoding is the receiver's pure-Python hot path (about 15 µs a span),
so a `DecodePool` can run it in worker processes, off the server's GIL, leaving that to gRPC,
tornado and the DuckDB writer; with `workers=0` it runs in the calling thread.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import threading
import time
import types
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.ipc  # registers pa.ipc
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector.otlp import add_resource_spans, export_request_from_json
from collector.spanbatch import SpanBatch

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


class BadRequest(ValueError):
    """The body cannot be decoded as an OTLP export request."""


class TooLarge(ValueError):
    """The body (after decompression) exceeds the request size limit."""


@dataclass
class DecodedExport:
    """One request's spans, ready for the ingester, and the spans refused with why."""

    spans: pa.Table
    links: pa.Table | None
    rejected: int
    message: str

    # A decode worker sends this back to the server process by pickle. Pickling an Arrow table
    # goes column by column through Python (~2.5 µs a span both ways, on the server's GIL);
    # the Arrow IPC stream format does the same in ~0.7 µs.
    def __getstate__(self) -> tuple:
        return (_to_ipc(self.spans), None if self.links is None else _to_ipc(self.links),
                self.rejected, self.message)

    def __setstate__(self, state: tuple) -> None:
        spans, links, self.rejected, self.message = state
        self.spans = _from_ipc(spans)
        self.links = None if links is None else _from_ipc(links)


def _to_ipc(table: pa.Table) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _from_ipc(buffer: pa.Buffer) -> pa.Table:
    return pa.ipc.open_stream(buffer).read_all()


def gunzip_limited(data: bytes, limit: int) -> bytes:
    """Decompress gzip `data`, refusing output larger than `limit` bytes (gzip bombs)."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"Content-Encoding is gzip but the body is not valid gzip ({exc})") from None
    if len(out) > limit or d.unconsumed_tail:
        raise TooLarge(f"body decompresses to more than the {limit}-byte limit (--max-request-bytes)")
    if not d.eof:
        raise BadRequest("gzip body is truncated")
    return out


def parse_request(body: bytes, content_type: str, encoding: str, limit: int) -> ExportTraceServiceRequest:
    """An OTLP body as an ExportTraceServiceRequest; raises BadRequest or TooLarge."""
    if encoding == "gzip":
        body = gunzip_limited(body, limit)
    if content_type == PROTOBUF:
        try:
            return ExportTraceServiceRequest.FromString(body)
        except DecodeError as exc:
            raise BadRequest(f"body is not a protobuf ExportTraceServiceRequest ({exc})") from None
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"body is not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise BadRequest("OTLP JSON body must be an object like {\"resourceSpans\": [...]}")
    try:
        return export_request_from_json(obj)
    except json_format.ParseError as exc:
        raise BadRequest(f"body is not an OTLP JSON export request: {exc}") from None


def decode_export(body: bytes, content_type: str, encoding: str, limit: int, source: str) -> DecodedExport:
    """Parse, normalise (SpanBatch) and tabulate one export request body."""
    request = parse_request(body, content_type, encoding, limit)
    batch = SpanBatch(source=source)
    rejected = add_resource_spans(batch, request.resource_spans, where=f"{source} ")
    message = ""
    if rejected:
        shown = "; ".join(batch.rejected[:5])
        more = f"; and {rejected - 5} more" if rejected > 5 else ""
        message = (f"{rejected} span(s) rejected and not stored: {shown}{more}. "
                   "Fix the exporter's ids (trace id 16 bytes, span id 8 bytes, not all zeros).")
    spans, links = batch.to_arrow()
    return DecodedExport(spans, links if links.num_rows else None, rejected, message)


def _warm_up() -> int:
    return multiprocessing.current_process().pid


def _exit_with_parent(parent_pid: int) -> None:
    """Worker initializer: end this worker when the server is gone, even after a kill -9
    (pool workers otherwise wait on their queue forever)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


class DecodePool:
    """Runs `decode_export` in `workers` processes (0: in the calling thread).

    Workers are spawned, not forked (the server already runs gRPC threads), and started at
    once so the first export does not pay their start-up.
    """

    def __init__(self, workers: int = 0):
        self.workers = max(0, int(workers))
        self._pool: ProcessPoolExecutor | None = None
        if self.workers:
            # A spawned worker re-imports the parent's __main__; under Streamlit (serve's dashboard,
            # the page tests) that is the dashboard script. Workers need only collector code, so
            # they start with an empty __main__; all of them start here, during the warm-up.
            main = sys.modules.get("__main__")
            sys.modules["__main__"] = types.ModuleType("__main__")
            try:
                self._pool = ProcessPoolExecutor(
                    self.workers, mp_context=multiprocessing.get_context("spawn"),
                    initializer=_exit_with_parent, initargs=(os.getpid(),))
                for f in [self._pool.submit(_warm_up) for _ in range(self.workers)]:
                    f.result()
            finally:
                if main is not None:
                    sys.modules["__main__"] = main

    def decode(self, body: bytes, content_type: str, encoding: str, limit: int, source: str) -> DecodedExport:
        if self._pool is None:
            return decode_export(body, content_type, encoding, limit, source)
        return self._pool.submit(decode_export, body, content_type, encoding, limit, source).result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
