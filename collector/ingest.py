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
import os
import shutil
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from choreoscope.collector import store, store_errors
from choreoscope.collector.checkpoint_staging import Staging, move_left_behind
from choreoscope.collector.export_decode import DecodedExport
from choreoscope.collector.spanbatch import SpanBatch

# A group stops growing at this many spans, so one transaction never holds the queue for long.
MAX_GROUP_SPANS = 100_000
# An INSERT and its COMMIT cost DuckDB a few milliseconds of CPU whatever their size, so the
# writer lets a small group grow for up to LINGER_S before committing it, but only while some
# request is still being decoded (`Ingester.decoding`): once every request in the receiver is
# queued, waiting longer only delays their acknowledgements. With that rule, bench/ingest.py
# (16 exports in flight) stored ~3% more spans/s at 5 ms than at 10 ms, for ~2% more CPU a
# span (20 ms: less CPU, fewer spans/s; 2 ms: about as 5 ms). Measured again for issue #12
# (`bench/ingest.py --writer`, DuckDB 2.0, one thread, 512-span requests of 10 attributes): each
# statement costs ~2-4 ms of CPU whatever its rows, so the writer's CPU a span (BEGIN, INSERT
# span_keys, INSERT spans, COMMIT) is ~30 µs in groups of 512, ~9.5 at 4,096, ~7.5 at 16k, ~7 at
# 100k; but in the end-to-end bench (16 exports of 512 spans in flight) the groups stay at
# ~1.5-2.5k spans, and 8,192 spans / 20 ms or 16,384 / 10 ms made them no larger and the run no
# faster (A/B/A/B; the groups are what the decoders deliver during one commit).
TARGET_GROUP_SPANS = 4_096
LINGER_S = 0.005
# A checkpoint (rewriting the table's open row group) runs once the WAL passes this size, in the
# writer thread. DuckDB's default 16 MB meant a 50-270 ms checkpoint every ~28k spans, with the
# cost growing with the table; 64 MB lowered the receiver's CPU, p99 and peak RSS in
# bench/ingest.py runs of 300k spans (measured as DuckDB's checkpoint_threshold). Measured again
# with DuckDB 2.0 (issue #12; 4,096-span groups, one thread): a CHECKPOINT every 24.6k spans cost
# 8.5-8.9 µs of CPU a span, every 53k 4.2, every 102k (~this size) 2.9-3.2, and its longest stall
# was no shorter at 24.6k (560-790 ms wall on a loaded machine, 400-650 at 102k): each one rewrites
# the open row group. Its cost did not grow with the table (102k to 1M spans, with span_keys).
# A checkpoint holds the spans table: an INSERT into it waits until it ends (a checkpoint on
# another cursor, beside the writer, stalled the writer's next INSERT as long). That stall set
# serve's export p99: in a bench/ingest.py run of 204,800 spans the 16 exports in flight during
# its one checkpoint all ended together, 0.5-0.8 s late, the slowest 4% of the run. So it runs on
# a thread of its own, and meanwhile the writer commits into a staging database beside the store
# (collector/checkpoint_staging.py), moved into the store after.
CHECKPOINT_BYTES = 64 << 20
# ... but a checkpoint that fails for want of disk space invalidates the whole DuckDB instance
# ("FATAL Error: ... database has been invalidated"; every later query fails until the file is
# reopened), where a commit that fails so is only rolled back. So the writer turns DuckDB's own
# checkpoints off and runs CHECKPOINT itself after a group commit once the WAL passes
# CHECKPOINT_BYTES, and only when the store's file system has room for it: checkpoint_room(wal
# bytes, store file bytes) free bytes, a generous guess (the checkpoint rewrites what the WAL holds,
# and the span_keys index). Short of that it says so and leaves the WAL to grow; a commit that then
# finds no room fails cleanly and is retried by the exporter (tests/test_faults_disk_full.py).
NO_AUTO_CHECKPOINT = "1000TB"


def checkpoint_room(wal: int, db: int) -> int:
    """Free bytes the writer wants before a CHECKPOINT (see NO_AUTO_CHECKPOINT)."""
    return 2 * wal + db // 4 + (1 << 20)


class QueueFull(RuntimeError):
    """The ingest queue holds too many uncommitted spans; the client should retry later."""

    def __init__(self, pending: int, limit: int, retry_after_s: int = 1):
        super().__init__(
            f"ingest queue full ({pending} spans waiting for commit, limit {limit}); retry later"
        )
        self.retry_after_s = retry_after_s


class IngesterStopped(RuntimeError):
    """The ingester no longer accepts spans (the receiver is shutting down)."""


class CommitFailed(RuntimeError):
    """A group commit failed (the disk is full, the file cannot be written): nothing of the group
    is stored, and the receivers answer UNAVAILABLE / 503 with Retry-After so exporters retry. DuckDB
    rolls the transaction back and keeps the database usable, so ingest resumes by itself once the
    cause is gone (tests/test_faults_disk_full.py)."""


# How often a receiver whose commits keep failing says so again on stderr.
FAILURE_REPORT_EVERY_S = 10.0
# A staged group whose move into the store failed (the disk is full, say) is tried again this much
# later: it is committed where it is, so nothing waits for it meanwhile.
MOVE_RETRY_S = 1.0


def _commit_failure_reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, duckdb.FatalException):
        return f"DuckDB gave up the store after a fatal error ({text}); serve stops, restart it"
    if "No space left on device" in text or "Disk full" in text or "disk is full" in text.lower():
        return f"the store's disk is full ({text})"
    return f"{type(exc).__name__}: {text}"


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
    commits_failed: int = 0  # group commits that failed (disk full, ...): their requests were told to retry
    spans_failed: int = 0  # spans of those commits


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
                 source: str = "otlp", checkpoint_bytes: int = CHECKPOINT_BYTES):
        self._con = con
        self.checkpoint_bytes = checkpoint_bytes
        self.checkpoints = 0  # CHECKPOINTs run (by the checkpointer thread)
        self.checkpoints_skipped = 0  # ... and did not run for want of disk space
        # CPU seconds of the writer thread in group commits (INSERTs and COMMIT) and of the
        # checkpointer thread in its CHECKPOINTs: what `serve` reports when it stops, and
        # bench/ingest.py prints. The threads' own: with DuckDB threads > 1 (serve with the
        # dashboard) part of the work runs in DuckDB's threads, not counted (a checkpoint then
        # shows as ~0 s).
        self.commit_cpu_s = 0.0
        self.checkpoint_cpu_s = 0.0
        self._skip_reported = 0.0
        self._db_path: str | None = None
        self._staging: Staging | None = None  # where groups commit while the store checkpoints
        self._checkpointing = False  # a CHECKPOINT of the store is running (its own thread)
        self._checkpoint_thread: threading.Thread | None = None
        self.groups_staged = 0  # group commits that went to the staging database
        self._move_retry_at = 0.0  # after a failed move of a staged group: not before then
        self._move_reported = 0.0
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
        self._commits_failed = 0
        self._spans_failed = 0
        self._failing_since: float | None = None  # monotonic time of the first failure in a row
        self._failure_reported = 0.0
        # Set when a commit found the store file damaged (a bad block), or when DuckDB invalidated
        # the database instance (a fatal error): nothing can be stored; `serve` stops on either.
        self.damaged: str | None = None
        self.invalidated: str | None = None
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

    def count_refused_request(self) -> None:
        """A request a receiver refused before decoding it (its spans are not known): counted with
        the queue's refusals in `requests_refused`."""
        with self._cond:
            self._requests += 1
            self._refused += 1

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
                commits_failed=self._commits_failed,
                spans_failed=self._spans_failed,
            )

    # -- writer side -----------------------------------------------------------------------

    def _staged_to_move(self) -> bool:
        """Staged groups wait and no checkpoint runs: the writer may move one into the store."""
        return (self._staging is not None and bool(self._staging.groups) and not self._checkpointing
                and time.monotonic() >= self._move_retry_at)

    def _wait_for_work(self) -> bool:
        """Block until batches are queued (and a small group had up to LINGER_S to grow while
        requests were still decoding) or a staged group can be moved; False once stopping with
        nothing queued (what is staged is moved on the way out)."""
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return False
                if self._staged_to_move():
                    return True
                self._cond.wait(MOVE_RETRY_S if self._staging is not None and self._staging.groups else None)
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
        # A setting of the database instance (so of the dashboard's and the live analysis's
        # cursors too): the writer checkpoints, see NO_AUTO_CHECKPOINT.
        path = store_errors.store_path(cur)
        self._db_path = path if path not in ("", ":memory:", "the store") and os.path.exists(path) else None
        # (a store whose file is not found this way keeps DuckDB's own checkpoints)
        cur.execute("SET checkpoint_threshold = "
                    f"'{NO_AUTO_CHECKPOINT if self._db_path else str(CHECKPOINT_BYTES >> 20) + 'MB'}'")
        try:
            if self._db_path:
                try:
                    # what a killed receiver left (store.connect moves it too; this is for any connection)
                    move_left_behind(self._con, self._db_path)
                    self._staging = Staging(cur, self._db_path)
                except duckdb.Error as exc:  # e.g. no room for it: checkpoints hold commits, as they did
                    print(f"choreoscope serve: no staging database beside the store ({' '.join(str(exc).split())}"
                          "); exports wait while the store checkpoints", file=sys.stderr, flush=True)
            while self._wait_for_work():
                with self.write_lock:
                    if self._queue:
                        self._commit_group(cur, self._take_group())
                    if self._staged_to_move():  # one group between new ones: no export waits for all
                        self._move_staged(cur)
        finally:
            try:
                if self._checkpoint_thread is not None:
                    self._checkpoint_thread.join()
                if self._staging is not None:
                    self._move_staged(cur, everything=True)
                    self._staging.close(cur)
            finally:
                cur.close()

    def _move_staged(self, cur: duckdb.DuckDBPyConnection, everything: bool = False) -> None:
        """Move the oldest staged group (or all of them) into the store; spans stored there
        already meanwhile (a retry) count as duplicates. A failure leaves the group staged for a
        later try (MOVE_RETRY_S; the next writable open at the latest), said on stderr."""
        while self._staging is not None and self._staging.groups:
            try:
                n, added = self._staging.move_one(cur)
            except duckdb.Error as exc:
                now = time.monotonic()
                self._move_retry_at = now + MOVE_RETRY_S
                if now - self._move_reported >= FAILURE_REPORT_EVERY_S:
                    self._move_reported = now
                    print(f"choreoscope serve: moving {len(self._staging.groups)} staged group(s) of spans into "
                          f"the store failed ({' '.join(str(exc).split())[:300]}); they stay committed in "
                          f"{self._staging.path} and are moved once it succeeds", file=sys.stderr, flush=True)
                return
            with self._cond:
                self._stored -= n - added
                self._duplicates += n - added
            if not everything:
                return

    def _commit_group(self, cur: duckdb.DuckDBPyConnection, group: list[_Pending]) -> None:
        n = sum(p.spans.num_rows for p in group)
        # One chunk: DuckDB scans an Arrow table chunk by chunk, and a 100-row chunk per request
        # costs it more than the copy into one does. JSON-typed (store.as_json_typed): the
        # decoders wrote that text, DuckDB need not parse it again (~0.5-1 µs a span less).
        spans = store.as_json_typed(pa.concat_tables([p.spans for p in group]).combine_chunks())
        link_tables = [p.links for p in group if p.links is not None]
        links = store.as_json_typed(pa.concat_tables(link_tables)) if link_tables else None
        error: BaseException | None = None
        added = 0
        started = time.perf_counter()
        cpu_started = time.thread_time()
        # Called holding write_lock.
        # Duplicates are rare (exporter retries), and the plain INSERT is about twice as fast
        # as INSERT OR IGNORE: try it first, redo the group with the check if one turns up.
        staged = self._checkpointing and self._staging is not None
        for skip_duplicates in (False, True):
            try:
                if staged:  # the store is held by its checkpoint: into staging, checked when moved
                    self._staging.commit(cur, spans, links)
                    added = n
                    self.groups_staged += 1
                    break
                cur.execute("BEGIN TRANSACTION")
                added = store.insert_arrow(cur, spans, links, skip_duplicates=skip_duplicates)
                cur.execute("COMMIT")
                error = None
                break
            except Exception as exc:  # noqa: BLE001 - any storage failure goes to every request of the group
                error = exc
                try:
                    cur.execute("ROLLBACK")
                except duckdb.Error:
                    pass
                if staged or not _is_duplicate_key(exc):
                    break
        if self.commit_observer is not None and error is None:
            self.commit_observer(time.perf_counter() - started)
        self.commit_cpu_s += time.thread_time() - cpu_started
        with self._cond:
            self._pending_spans -= n
            if error is None:
                self._stored += added
                self._duplicates += n - added
                self._commits += 1
                self._rate_samples.append((time.monotonic(), self._stored + self._duplicates))
            else:
                self._commits_failed += 1
                self._spans_failed += n
        if error is not None:
            damaged = store.damaged_store_error(cur, error)
            if damaged is not None and self.damaged is None:
                self.damaged = str(damaged)  # `choreoscope serve` stops on it (exit 2)
            if isinstance(error, duckdb.FatalException) and self.invalidated is None:
                self.invalidated = f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"
            error = CommitFailed(f"{_commit_failure_reason(error)}; nothing of this request was stored, "
                                 "retry later")
            self._report_failure(n, error)
        elif self._failing_since is not None:
            print(f"choreoscope serve: commits succeed again after {time.monotonic() - self._failing_since:.0f} s "
                  f"of failures ({self._commits_failed} failed commits so far)", file=sys.stderr, flush=True)
            self._failing_since = None
        for p in group:
            if error is None:
                p.future.set_result(p.spans.num_rows)
            else:
                p.future.set_exception(error)
        if error is None:  # after the acknowledgements: they need not wait for it
            self._maybe_checkpoint()

    def _maybe_checkpoint(self) -> None:
        """Start a CHECKPOINT once the WAL passed checkpoint_bytes, if the disk has room
        (NO_AUTO_CHECKPOINT) and none runs already."""
        if self._db_path is None or self._checkpointing:
            return
        try:
            wal = os.path.getsize(self._db_path + ".wal")
            if wal < self.checkpoint_bytes:
                return
            db = os.path.getsize(self._db_path)
            free = shutil.disk_usage(os.path.dirname(os.path.abspath(self._db_path))).free
        except OSError:
            return
        need = checkpoint_room(wal, db)
        if free < need:
            self.checkpoints_skipped += 1
            now = time.monotonic()
            if now - self._skip_reported >= FAILURE_REPORT_EVERY_S:
                self._skip_reported = now
                print(f"choreoscope serve: not checkpointing the store: {free:,} bytes free on its disk, a "
                      f"checkpoint may need {need:,}; the WAL ({wal:,} bytes) grows until there is room",
                      file=sys.stderr, flush=True)
            return
        if self._checkpoint_thread is not None:
            self._checkpoint_thread.join()  # ended (the flag is down): its thread is gone
        self._checkpointing = True
        self._checkpoint_thread = threading.Thread(target=self._checkpoint, name="choreoscope-checkpoint",
                                                   daemon=True)
        self._checkpoint_thread.start()

    def _checkpoint(self) -> None:
        """The checkpointer thread: one CHECKPOINT of the store, on a cursor of its own."""
        cur = self._con.cursor()
        cpu_started = time.thread_time()
        try:
            cur.execute("CHECKPOINT")
            self.checkpoints += 1
        except duckdb.FatalException as exc:  # the disk filled meanwhile: DuckDB gave up the instance
            self.invalidated = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        except duckdb.Error:
            pass  # another transaction is open (the live analysis): a later commit tries again
        finally:
            self.checkpoint_cpu_s += time.thread_time() - cpu_started
            cur.close()
            with self._cond:
                self._checkpointing = False
                self._cond.notify_all()

    def _report_failure(self, n: int, error: BaseException) -> None:
        """Say on stderr that commits fail (first failure of a run, then every FAILURE_REPORT_EVERY_S)."""
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        elif now - self._failure_reported < FAILURE_REPORT_EVERY_S:
            return
        self._failure_reported = now
        print(f"choreoscope serve: a commit of {n} spans failed: {error} (exporters are answered "
              f"UNAVAILABLE / 503 and retry; {self._commits_failed} failed commits so far)",
              file=sys.stderr, flush=True)


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
