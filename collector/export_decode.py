"""Export request bodies (OTLP protobuf or JSON, gzip or not) into insertable Arrow tables.

Both receivers decode here. Decoding is the receiver's pure-Python hot path (about 15 µs a span),
so a `DecodePool` can run it in worker processes, off the server's GIL, leaving that to gRPC,
tornado and the DuckDB writer; with `workers=0` it runs in the calling thread. Under load a worker
takes the protobuf requests waiting for it together (`decode_exports`): one columnar pass over
requests each too small to repay it alone.
"""

from __future__ import annotations

import collections
import json
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
import types
import zlib
from dataclasses import dataclass
from multiprocessing.connection import Connection

import pyarrow as pa
import pyarrow.ipc  # registers pa.ipc
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from choreoscope.collector import otlp_arrow
from choreoscope.collector.otlp import add_resource_spans, export_request_from_json
from choreoscope.collector.spanbatch import SpanBatch

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


class BadRequest(ValueError):
    """The body cannot be decoded as an OTLP export request."""


class TooLarge(ValueError):
    """The body (after decompression) exceeds the request size limit."""


# Bodies a receiver has read and not yet decoded, in bytes, beyond which a new request is refused
# at once, retryably (429 with Retry-After, RESOURCE_EXHAUSTED with RetryInfo). Both receivers read
# a body as it comes (tornado; gRPC once a handler thread takes the call) and the decode workers
# take them in turn, so under overload the bodies waiting would otherwise grow with the clients
# sending (the queue's own limit, --queue-spans, counts decoded spans only). 32 MiB is about half
# a second of decoding on two decode workers (~67 MB/s of protobuf in bench/ingest.py's sink) and
# two requests of the default --max-request-bytes; a request is always taken when none waits.
# 256 HTTP exports of 1,000 spans in flight (8 processes x 32 threads, retrying after Retry-After),
# twice each: 0 refusals and a server peak RSS of 650-656 MiB without it, 148-207 refusals and
# 474-494 MiB with it, at 57k spans/s instead of 61k (the refused exporters wait their second).
DECODE_BACKLOG_BYTES = 32 << 20


class DecodeBacklog:
    """The bytes of bodies read and waiting for (or in) decode, bounded by `limit`: `admit` counts
    a body in unless it would pass the limit while others wait; `release` once it is decoded."""

    def __init__(self, limit: int = DECODE_BACKLOG_BYTES):
        self.limit = int(limit)
        self.bytes = 0
        self._lock = threading.Lock()

    def admit(self, size: int) -> bool:
        with self._lock:
            if self.bytes and self.bytes + size > self.limit:
                return False
            self.bytes += size
            return True

    def release(self, size: int) -> None:
        with self._lock:
            self.bytes -= size

    def refusal(self) -> str:
        return (f"receiver overloaded ({self.bytes} bytes of requests waiting to be decoded, "
                f"limit {self.limit}); retry later")


@dataclass
class DecodedExport:
    """One request's spans, ready for the ingester, and the spans refused with why."""

    spans: pa.Table
    links: pa.Table | None
    rejected: int
    message: str

    @classmethod
    def of(cls, spans: pa.Table, links: pa.Table, rejected: int = 0, message: str = "") -> DecodedExport:
        """The decoded tables, links None when there are none (as the ingester takes them)."""
        return cls(spans, links if links.num_rows else None, rejected, message)

    # A decode worker sends this back to the server process by pickle. Pickling an Arrow table
    # goes column by column through Python (~2.5 µs a span both ways, on the server's GIL);
    # the Arrow IPC stream format does the same in ~0.7 µs.
    def __getstate__(self) -> tuple:
        return (to_ipc(self.spans), None if self.links is None else to_ipc(self.links),
                self.rejected, self.message)

    def __setstate__(self, state: tuple) -> None:
        spans, links, self.rejected, self.message = state
        self.spans = from_ipc(spans)
        self.links = None if links is None else from_ipc(links)


def to_ipc(table: pa.Table) -> pa.Buffer:
    """An Arrow table as IPC stream bytes, to send between processes (decode and parse workers)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def from_ipc(buffer: pa.Buffer) -> pa.Table:
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
        except (DecodeError, RecursionError, SystemError) as exc:  # SystemError: upb on some malformed bodies
            raise BadRequest(f"body is not a protobuf ExportTraceServiceRequest ({exc})") from None
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"body is not JSON ({exc})") from None
    except RecursionError:
        raise BadRequest("body is JSON nested too deeply to read") from None
    if not isinstance(obj, dict):
        raise BadRequest("OTLP JSON body must be an object like {\"resourceSpans\": [...]}")
    try:
        return export_request_from_json(obj)
    except json_format.ParseError as exc:
        raise BadRequest(f"body is not an OTLP JSON export request: {exc}") from None


def decode_export(body: bytes, content_type: str, encoding: str, limit: int, source: str) -> DecodedExport:
    """Parse, normalise (SpanBatch) and tabulate one export request body.

    A protobuf body large enough to pay for it goes the columnar way first (collector/otlp_arrow.py:
    the same rows, ~2-3x less CPU a span); a request that way cannot reproduce exactly, and any
    body it cannot decode, is walked as always."""
    if content_type == PROTOBUF:
        if encoding == "gzip":
            body, encoding = gunzip_limited(body, limit), ""
        if len(body) >= otlp_arrow.MIN_BYTES:
            fast = otlp_arrow.decode_protobuf(body, source)
            if fast is not None:
                spans, links = fast
                return DecodedExport.of(spans, links)
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
    return DecodedExport.of(spans, links, rejected, message)


def decode_exports(jobs: list[tuple]) -> list[tuple[bool, object]]:
    """`decode_export(*job)` of each job, as (True, DecodedExport) or (False, the exception it
    raised). Protobuf requests of one source that are together at least MIN_BYTES go the columnar
    way in one pass (otlp_arrow.decode_protobuf_many: its ~2 ms a pass paid once, not per request);
    if any of them cannot, each is decoded on its own, as it would have been alone."""
    replies: list[tuple[bool, object] | None] = [None] * len(jobs)
    together: list[tuple[int, bytes]] = []
    if len(jobs) > 1 and otlp_arrow.available() and all(j[1] == PROTOBUF and j[4] == jobs[0][4] for j in jobs):
        for i, (body, _, encoding, limit, _source) in enumerate(jobs):
            try:
                together.append((i, gunzip_limited(body, limit) if encoding == "gzip" else body))
            except (BadRequest, TooLarge) as exc:
                replies[i] = (False, exc)
        if len(together) > 1 and sum(len(body) for _, body in together) >= otlp_arrow.MIN_BYTES:
            decoded = otlp_arrow.decode_protobuf_many([body for _, body in together], jobs[0][4])
            for (i, _), (spans, links) in zip(together, decoded or ()):
                replies[i] = (True, DecodedExport.of(spans, links))
    bodies = dict(together)
    for i, job in enumerate(jobs):
        if replies[i] is None:
            if i in bodies:  # already decompressed
                job = (bodies[i], PROTOBUF, "", *job[3:])
            try:
                replies[i] = (True, decode_export(*job))
            except Exception as exc:  # noqa: BLE001 - handed to the request, which answers it
                replies[i] = (False, exc)
    return replies


def _exit_with_parent(parent_pid: int) -> None:
    """End this worker when the server is gone, even after a kill -9 (a worker otherwise waits
    on its pipe forever)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _worker_main(conn: Connection, parent_pid: int) -> None:
    """A decode worker: answers each list of jobs (body, content_type, encoding, limit, source) on
    its pipe with their `decode_exports` replies; None (or a closed pipe) ends it.
    Ctrl-C reaches the whole process group: the server stops its workers itself (the pipe closes,
    or _exit_with_parent), so a worker ignores SIGINT instead of dying with a traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent(parent_pid)
    conn.send((True, os.getpid()))  # started
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        replies = decode_exports(job)
        try:
            conn.send(replies)
        except Exception:  # noqa: BLE001 - e.g. an exception that does not pickle: that reply alone fails
            conn.send([_sendable(reply) for reply in replies])


def _sendable(reply: tuple) -> tuple:
    """The reply if it pickles, else the failure to send it."""
    try:
        pickle.dumps(reply)
    except Exception as exc:  # noqa: BLE001
        return (False, RuntimeError(f"decode worker could not send its result: {exc!r}"))
    return reply


class DecodeWorkerLost(RuntimeError):
    """A decode worker process died while decoding a request (it is replaced)."""


@dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    conn: Connection


# A request given a worker takes with it the protobuf requests waiting behind it (of its source),
# up to this many bytes in all: one columnar pass instead of several walks (decode_exports). 1 MiB
# is ~2,800 spans of bench/ingest.py's; beyond ~1,000 spans a pass gains little more, and each
# request taken waits for the whole pass.
BATCH_BYTES = 1 << 20


@dataclass
class _Turn:
    """A request waiting for a decode worker: handed one in the order the requests came, or taken
    into the batch of the request ahead of it (`reply` is then set by that request's thread)."""

    cond: threading.Condition
    job: tuple
    worker: _Worker | None = None
    taken: bool = False
    reply: tuple | None = None


class DecodePool:
    """Runs `decode_export` in `workers` processes (0: in the calling thread).

    Each request thread borrows an idle worker and talks to it over its own pipe: no executor
    manager or feeder threads in between, whose hand-offs cost the server process ~4 µs a span.
    Workers are spawned, not forked (the server already runs gRPC threads), and started at once
    so the first export does not pay their start-up. A worker that dies fails the request it
    had and is replaced.

    Requests get workers first come, first served: a worker set free goes straight to the request
    waiting longest. (Taking whichever worker was idle let a request arriving just then pass the
    waiters, which woke to none and waited again: with 16 exports in flight for 2 workers,
    bench/ingest.py's parse-only sink had export p99 2-3.2x its p50, first come first served
    1.4-1.5x, at the same spans/s.)
    """

    def __init__(self, workers: int = 0):
        self.workers = max(0, int(workers))
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._waiting: collections.deque[_Turn] = collections.deque()
        self._idle: list[_Worker] = []
        self._all: list[_Worker] = []
        self._closed = False
        self.passes = 0  # lists of jobs sent to the workers (fewer than requests when batched)
        for _ in range(self.workers):
            worker = self._spawn()
            self._idle.append(worker)
            self._all.append(worker)

    @staticmethod
    def _spawn() -> _Worker:
        ctx = multiprocessing.get_context("spawn")
        # A spawned worker re-imports the parent's __main__; under Streamlit (serve's dashboard,
        # the page tests) that is the dashboard script. Workers need only collector code, so
        # they start with an empty __main__.
        main = sys.modules.get("__main__")
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            ours, theirs = ctx.Pipe()
            process = ctx.Process(target=_worker_main, args=(theirs, os.getpid()),
                                  name="choreoscope-decode", daemon=True)
            process.start()
        finally:
            if main is not None:
                sys.modules["__main__"] = main
        theirs.close()
        ours.recv()  # wait until it runs
        return _Worker(process, ours)

    def decode(self, body: bytes, content_type: str, encoding: str, limit: int, source: str) -> DecodedExport:
        job = (body, content_type, encoding, limit, source)
        if not self.workers:
            return decode_export(*job)
        with self._cond:
            if self._closed:
                raise RuntimeError("the decode pool is closed (the receiver is shutting down)")
            if self._idle and not self._waiting:
                worker = self._idle.pop()
            else:
                turn = _Turn(threading.Condition(self._lock), job)
                self._waiting.append(turn)
                while turn.worker is None and not turn.taken and not self._closed:
                    turn.cond.wait()
                if turn.taken:  # decoded in another request's batch
                    while turn.reply is None:
                        turn.cond.wait()
                    return self._answer(turn.reply)
                if turn.worker is None:
                    self._waiting.remove(turn)
                    raise RuntimeError("the decode pool is closed (the receiver is shutting down)")
                worker = turn.worker
            batch = self._take_batch(job)
            self.passes += 1
        jobs = [job, *(t.job for t in batch)]
        replies: list[tuple] = []
        try:
            try:
                worker.conn.send(jobs)
            except OSError:  # it died while idle: the requests have not reached it, give it another
                worker = self._replace(worker)
                worker.conn.send(jobs)
            replies = worker.conn.recv()
        except (EOFError, OSError) as exc:
            worker = self._replace(worker)
            replies = [(False, DecodeWorkerLost(f"the decode worker died while decoding this request ({exc!r}); "
                                                "retry it")) for _ in jobs]
        finally:
            if len(replies) != len(jobs):  # something else went wrong: no request waits forever
                replies = [(False, RuntimeError("the decode worker gave no answer")) for _ in jobs]
            with self._cond:
                for turn, reply in zip(batch, replies[1:]):
                    turn.reply = reply
                    turn.cond.notify()
                if self._waiting and not self._closed:
                    turn = self._waiting.popleft()
                    turn.worker = worker
                    turn.cond.notify()
                else:
                    self._idle.append(worker)
                    self._cond.notify_all()  # close() waits for every worker to be idle
        return self._answer(replies[0])

    @staticmethod
    def _answer(reply: tuple) -> DecodedExport:
        ok, result = reply
        if not ok:
            raise result
        return result

    def _take_batch(self, job: tuple) -> list[_Turn]:
        """The waiting requests (under the lock) that go with `job` to its worker: protobuf of
        its source, in the order they came, up to BATCH_BYTES in all."""
        if job[1] != PROTOBUF or not self._waiting or not otlp_arrow.available():
            return []
        taken, size = [], len(job[0])
        for turn in self._waiting:
            body, content_type, _, _, source = turn.job
            if content_type == PROTOBUF and source == job[4] and size + len(body) <= BATCH_BYTES:
                taken.append(turn)
                size += len(body)
        for turn in taken:
            self._waiting.remove(turn)
            turn.taken = True
        return taken

    def _replace(self, dead: _Worker) -> _Worker:
        dead.conn.close()
        dead.process.join(1.0)
        worker = self._spawn()
        with self._cond:
            self._all[self._all.index(dead)] = worker
        return worker

    def close(self, timeout: float = 30.0) -> None:
        """Stop the workers once the requests they are decoding are done (within `timeout`)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            for turn in self._waiting:
                turn.cond.notify()
            deadline = time.monotonic() + timeout
            while len(self._idle) < len(self._all) and time.monotonic() < deadline:
                self._cond.wait(max(0.0, deadline - time.monotonic()))
            workers, self._all, self._idle = self._all, [], []
        for worker in workers:
            try:
                worker.conn.send(None)
            except OSError:
                pass
        for worker in workers:
            worker.process.join(5.0)
            if worker.process.is_alive():
                worker.process.terminate()
                worker.process.join(1.0)
            worker.conn.close()
