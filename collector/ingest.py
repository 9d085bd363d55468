"""The receiver's write path: one writer thread, group commit, a bounded queue.

Request threads decode their export into a `SpanBatch` and `submit` it; the writer takes every
batch waiting, inserts them all in ONE transaction, commits, and only then releases the waiting
requests. So an acknowledged span is on disk (DuckDB syncs its WAL at commit) and a busy receiver
pays one commit for many requests. The queue is bounded in spans: when it is full `submit`
refuses at once (`QueueFull`), and the protocol layer answers RESOURCE_EXHAUSTED / 429 so the
exporter backs off instead of the receiver growing without bound.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from choreoscope.collector import store
from choreoscope.collector.export_decode import DecodedExport
from choreoscope.collector.spanbatch import SpanBatch

# A group stops growing at this many spans, so one transaction never holds the queue for long.
MAX_GROUP_SPANS = 100_000
# An INSERT and its COMMIT cost DuckDB a few milliseconds of CPU whatever their size, so the
# writer lets a small group grow for up to LINGER_S before committing it, but only while some
# request is still being decoded (`Ingester.decoding`): once every request in the receiver is
# queued, waiting longer only delays their acknowledgements. With that rule, bench/ingest.py
# (16 exports in flight) stored ~3% more spans/s at 5 ms than at 10 ms, for ~2% more CPU a
# span (20 ms: less CPU, fewer spans/s; 2 ms: about as 5 ms).
TARGET_GROUP_SPANS = 4_096
LINGER_S = 0.005
# DuckDB checkpoints (rewrites the table's open row group) whenever the WAL passes this size, in
# the committing thread. Its default 16 MB meant a 50-270 ms checkpoint every ~28k spans, with
# the cost growing with the table; 64 MB lowered the receiver's CPU, p99 and peak RSS in
# bench/ingest.py runs of 300k spans.
CHECKPOINT_THRESHOLD = "64MB"


class QueueFull(RuntimeError):
    """The ingest queue holds too many uncommitted spans; the client should retry later."""

    def __init__(self, pending: int, limit: int, retry_after_s: int = 1):
        super().__init__(
            f"ingest queue full ({pending} spans waiting for commit, limit {limit}); retry later"
        )
        self.retry_after_s = retry_after_s


class IngesterStopped(RuntimeError):
    """The ingester no longer accepts spans (the receiver is shutting down)."""


@dataclass
class IngestStats:
    """Counters the dashboard shows. `spans_per_s` is the commit rate over the last few seconds."""

    requests: int
    spans_received: int
    spans_stored: int
    spans_duplicate: int
    spans_rejected: int
    requests_refused: int
    queue_spans: int
    queue_limit: int
    commits: int
    spans_per_s: float
    spans_refused: int = 0  # spans of the refused requests


@dataclass
class _Pending:
    spans: pa.Table
    links: pa.Table | None
    future: Future


class Ingester:
    """Owns the DuckDB write path of a receiver. Works on a connection it is given (a cursor of it
    is used by the writer thread), so the same database can serve the dashboard and analysis.

    `write_lock` is held by the writer for each transaction; in-process code that must not
    interleave with ingest (a snapshot export, a bulk rewrite) may hold it too. Meanwhile batches
    queue up (and requests are refused once the queue is full); they commit together after.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, queue_spans: int = 200_000,
                 source: str = "otlp"):
        self._con = con
        self.queue_limit = max(1, int(queue_spans))
        self.write_lock = threading.Lock()
        self._cond = threading.Condition()
        self._queue: collections.deque[_Pending] = collections.deque()
        self._pending_spans = 0  # queued or being committed
        self._decoding = 0  # requests being decoded (they will be submitted soon)
        self._accepting = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._requests = 0
        self._received = 0
        self._stored = 0
        self._duplicates = 0
        self._rejected = 0
        self._refused = 0
        self._spans_refused = 0
        self._commits = 0
        # Called with each group commit's duration in seconds (collector/metrics.py sets it).
        self.commit_observer = None
        self._rate_samples: collections.deque[tuple[float, int]] = collections.deque(maxlen=64)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Ingester:
        if self._thread is not None:
            raise RuntimeError("ingester already started")
        self._accepting = True
        self._thread = threading.Thread(target=self._run, name="choreoscope-ingest-writer", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = 30.0) -> None:
        """Refuse new batches, commit every batch already accepted, end the writer thread."""
        with self._cond:
            self._accepting = False
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    # -- request side ----------------------------------------------------------------------

    @contextlib.contextmanager
    def decoding(self):
        """Wrap a request's decode and `submit`: the writer lingers for more of a group only
        while some request is still on its way to the queue."""
        with self._cond:
            self._decoding += 1
        try:
            yield
        finally:
            with self._cond:
                self._decoding -= 1
                if not self._decoding and self._queue:
                    self._cond.notify()

    def submit(self, batch: SpanBatch) -> Future:
        """Queue a decoded batch. The future resolves to the number of its spans once they are
        committed (or raises the storage error). Raises QueueFull or IngesterStopped at once."""
        spans, links = batch.to_arrow()
        return self.submit_arrow(spans, links if links.num_rows else None, len(batch.rejected))

    def submit_arrow(self, spans: pa.Table, links: pa.Table | None, rejected: int = 0) -> Future:
        """`submit` for spans already tabulated (`rejected`: spans the decoder refused, counted)."""
        n = spans.num_rows
        future: Future = Future()
        with self._cond:
            if not self._accepting:
                raise IngesterStopped("the receiver is shutting down; retry against a running one")
            self._requests += 1
            # A request larger than the whole queue is still taken when the queue is empty,
            # otherwise it could never be accepted.
            if n and self._pending_spans and self._pending_spans + n > self.queue_limit:
                self._refused += 1
                self._spans_refused += n
                raise QueueFull(self._pending_spans, self.queue_limit)
            self._received += n + rejected
            self._rejected += rejected
            if n == 0:
                future.set_result(0)
                return future
            self._pending_spans += n
            self._queue.append(_Pending(spans, links if links is not None and links.num_rows else None,
                                        future))
            # Wake the writer only when it has something to do: the first batch of a group, or
            # a group grown to its target. Waking it at every request while it lingers cost the
            # server process a context switch (several µs under load) per request.
            if len(self._queue) == 1 or self._pending_spans >= TARGET_GROUP_SPANS:
                self._cond.notify()
        return future

    def stats(self) -> IngestStats:
        with self._cond:
            now = time.monotonic()
            samples = [s for s in self._rate_samples if now - s[0] <= 5.0]
            rate = 0.0
            if samples:
                t0, stored0 = samples[0]
                # the commit rate since the oldest recent commit, over at least one second
                span = max(now - t0, 1.0)
                rate = (self._stored + self._duplicates - stored0) / span
            return IngestStats(
                requests=self._requests,
                spans_received=self._received,
                spans_stored=self._stored,
                spans_duplicate=self._duplicates,
                spans_rejected=self._rejected,
                requests_refused=self._refused,
                queue_spans=self._pending_spans,
                queue_limit=self.queue_limit,
                commits=self._commits,
                spans_per_s=rate,
                spans_refused=self._spans_refused,
            )

    # -- writer side -----------------------------------------------------------------------

    def _wait_for_work(self) -> bool:
        """Block until batches are queued (and a small group had up to LINGER_S to grow while
        requests were still decoding); False once stopping with nothing left."""
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return False
                self._cond.wait()
            deadline = time.monotonic() + LINGER_S
            while (not self._stopping and self._decoding
                   and self._pending_spans < TARGET_GROUP_SPANS):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return True

    def _take_group(self) -> list[_Pending]:
        """Everything queued, up to MAX_GROUP_SPANS (called holding write_lock, so batches that
        queued while someone else held the lock all go into this one transaction)."""
        with self._cond:
            group = [self._queue.popleft()]
            total = group[0].spans.num_rows
            while self._queue and total < MAX_GROUP_SPANS:
                item = self._queue.popleft()
                group.append(item)
                total += item.spans.num_rows
            return group

    def _run(self) -> None:
        cur = self._con.cursor()
        # A setting of the database instance (so of the dashboard's cursors too): only ingest
        # writes enough for it to matter.
        cur.execute(f"SET checkpoint_threshold = '{CHECKPOINT_THRESHOLD}'")
        try:
            while self._wait_for_work():
                with self.write_lock:
                    self._commit_group(cur, self._take_group())
        finally:
            cur.close()

    def _commit_group(self, cur: duckdb.DuckDBPyConnection, group: list[_Pending]) -> None:
        n = sum(p.spans.num_rows for p in group)
        # One chunk: DuckDB scans an Arrow table chunk by chunk, and a 100-row chunk per request
        # costs it more than the copy into one does.
        spans = pa.concat_tables([p.spans for p in group]).combine_chunks()
        link_tables = [p.links for p in group if p.links is not None]
        links = pa.concat_tables(link_tables) if link_tables else None
        error: BaseException | None = None
        added = 0
        started = time.perf_counter()
        # Called holding write_lock.
        # Duplicates are rare (exporter retries), and the plain INSERT is about twice as fast
        # as INSERT OR IGNORE: try it first, redo the group with the check if one turns up.
        for skip_duplicates in (False, True):
            try:
                cur.execute("BEGIN TRANSACTION")
                if skip_duplicates:
                    added = store.insert_arrow(cur, spans, links, skip_duplicates=True)
                else:
                    added = _insert_new(cur, spans, links)
                cur.execute("COMMIT")
                error = None
                break
            except Exception as exc:  # noqa: BLE001 - any storage failure goes to every request of the group
                error = exc
                try:
                    cur.execute("ROLLBACK")
                except duckdb.Error:
                    pass
                if not _is_duplicate_key(exc):
                    break
        if self.commit_observer is not None and error is None:
            self.commit_observer(time.perf_counter() - started)
        with self._cond:
            self._pending_spans -= n
            if error is None:
                self._stored += added
                self._duplicates += n - added
                self._commits += 1
                self._rate_samples.append((time.monotonic(), self._stored + self._duplicates))
        for p in group:
            if error is None:
                p.future.set_result(p.spans.num_rows)
            else:
                p.future.set_exception(error)


def _insert_new(cur: duckdb.DuckDBPyConnection, spans: pa.Table, links: pa.Table | None) -> int:
    """`store.insert_arrow(..., skip_duplicates=False)` inside the group's transaction: the span
    keys (the one index), the spans, the links. Raises ConstraintException on a duplicate."""
    _choreoscope_incoming_spans = spans  # read by name in the SQL below (replacement scan)
    cur.execute(f"INSERT INTO span_keys SELECT {store.SPAN_KEY_SQL} FROM _choreoscope_incoming_spans").fetchall()
    added = cur.execute("INSERT INTO spans SELECT * FROM _choreoscope_incoming_spans").fetchall()[0][0]
    if links is not None and links.num_rows:
        _choreoscope_incoming_links = links
        cur.execute("INSERT OR IGNORE INTO span_links SELECT * FROM _choreoscope_incoming_links").fetchall()
    return added


def _is_duplicate_key(exc: BaseException | None) -> bool:
    """A constraint error, possibly masked by the clean-up that failed in the aborted transaction."""
    while exc is not None:
        if isinstance(exc, duckdb.ConstraintException):
            return True
        exc = exc.__context__
    return False


@dataclass
class Accepted:
    """What an export request turned into: spans queued for commit, and the spans refused."""

    future: Future
    accepted: int
    rejected: int
    message: str


def submit_decoded(ingester: Ingester, decoded: DecodedExport) -> Accepted:
    """Queue a decoded request (the receivers' shared step). Raises QueueFull or IngesterStopped."""
    future = ingester.submit_arrow(decoded.spans, decoded.links, decoded.rejected)
    return Accepted(future, decoded.spans.num_rows, decoded.rejected, decoded.message)
