"""Where a loader puts spans: a `SpanBatch` flushed to the store in chunks, one transaction each.

Loaders only parse and call `sink.batch.add(...)`; the sink decides when to write (chunks of
CHUNK_SPANS converted to Arrow, stored STORE_SPANS a transaction), counts what
was stored, skipped as a duplicate or rejected, and collects error messages that name the place
("path:line: what was wrong"). A failed chunk is rolled back and reported; earlier chunks and
earlier files stay stored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa

from choreoscope.collector.export_decode import to_ipc
from choreoscope.collector.spanbatch import SpanBatch, _table
from choreoscope.collector.store import LINK_ARROW_SCHEMA, SPAN_ARROW_SCHEMA, insert_arrow

CHUNK_SPANS = 20_000
# Spans per store transaction (or chunk_spans if larger): DuckDB writes a transaction that fills
# a row group (122,880 rows) straight to the database file instead of through its log. Storing
# 1M spans took 4.1 s of CPU in such transactions, 11.8 s in transactions of 20,000.
STORE_SPANS = 122_880
# What converting a row the loader filled with an unexpected value can raise.
_CONVERSION_ERRORS = (pa.ArrowException, TypeError, ValueError, OverflowError)


@dataclass
class FileResult:
    """What loading one file did."""

    path: str
    format: str = "unknown"
    spans_loaded: int = 0
    duplicates_skipped: int = 0
    spans_rejected: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and not self.spans_rejected


class FileSink:
    """Accumulates one file's spans and writes them in transactions of `chunk_spans` spans."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        result: FileResult,
        *,
        chunk_spans: int = CHUNK_SPANS,
        on_flush: Callable[[FileResult], None] | None = None,
        keys: bool = True,
    ) -> None:
        self.con = con
        # False: no span keys stored, duplicates removed after the load (store.insert_arrow's
        # `keys`, `load_paths`'s `dedup_after`)
        self.keys = keys
        self.result = result
        self.chunk_spans = chunk_spans
        self.on_flush = on_flush
        self.batch = SpanBatch(source=result.path)
        self._rejected_seen = 0
        self.workers = 0  # parse processes for a JSON-lines file (set by load_file)
        self._seen_duplicate = False  # a chunk of this file held a stored span: check every chunk
        self._held: list[tuple[pa.Table, pa.Table]] = []  # chunks converted, not committed yet
        self._held_rows = 0
        self.incremental = False  # insert each kept chunk at once (set while parse workers run)
        self._open: bool | None = None  # the held chunks' transaction: None none, False given up
        self._added_now = 0

    def _drain_rejected(self) -> None:
        """Move the batch's rejections into the errors, so errors stay in file order."""
        new = self.batch.rejected[self._rejected_seen :]
        self._rejected_seen = len(self.batch.rejected)
        self.result.spans_rejected += len(new)
        self.result.errors.extend(new)

    def error(self, where: str, message: str) -> None:
        """Record a problem at `where` (e.g. "12" for a line, "record 3"), named after the file."""
        self._drain_rejected()
        self.result.errors.append(f"{self.result.path}:{where}: {message}" if where else f"{self.result.path}: {message}")

    def maybe_flush(self) -> None:
        if len(self.batch) >= self.chunk_spans:
            self.flush()

    def flush(self) -> None:
        self._drain_rejected()
        batch, self.batch = self.batch, SpanBatch(source=self.result.path)
        self._rejected_seen = 0
        if len(batch):
            self.keep(*self._to_arrow(batch))
        if self.on_flush is not None:
            self.on_flush(self.result)

    def keep_after_batch(self, spans: pa.Table, links: pa.Table) -> None:
        """Rows made elsewhere (a columnar decode), kept after the rows the batch holds (walked
        before them), so the store's order is the file's."""
        self.flush()
        self.keep(spans, links)

    def keep(self, spans: pa.Table, links: pa.Table) -> None:
        """A chunk of rows for the store: held until STORE_SPANS are, then stored in one transaction.
        With `incremental` (parse workers are filling the chunks), each chunk is inserted at
        once into that transaction, so storing overlaps parsing; the rows are kept until the
        commit, to redo the group with the duplicate check if one turns up."""
        self._held.append((spans, links))
        self._held_rows += spans.num_rows
        if self.incremental and not self._seen_duplicate and self._open is not False:
            if self._open is None and len(self._held) > 1:
                self._open = False  # chunks held from before: the group is stored the usual way
            else:
                self._insert_now(spans, links)
        if self._held_rows >= max(self.chunk_spans, STORE_SPANS):
            self.store_held()

    def _insert_now(self, spans: pa.Table, links: pa.Table) -> None:
        try:
            if self._open is None:
                self.con.execute("BEGIN TRANSACTION")
                self._open = True
            self._added_now += insert_arrow(self.con, spans, links, skip_duplicates=False, keys=self.keys)
        except duckdb.Error as exc:
            self._rollback()
            self._open = False  # store_held stores the group the usual way
            if isinstance(exc, duckdb.ConstraintException):
                self._seen_duplicate = True

    def _rollback(self) -> None:
        try:
            self.con.execute("ROLLBACK")
        except duckdb.Error:
            pass  # no transaction left to roll back (a failed BEGIN or COMMIT)

    def store_held(self) -> None:
        if not self._held:
            return
        held, self._held, self._held_rows = self._held, [], 0
        opened, added, self._open, self._added_now = self._open, self._added_now, None, 0
        if opened:
            try:
                self.con.execute("COMMIT")
            except duckdb.Error:
                self._rollback()
            else:
                n = sum(t.num_rows for t, _ in held)
                self.result.spans_loaded += added
                self.result.duplicates_skipped += n - added
                return
        spans = pa.concat_tables([t for t, _ in held]).combine_chunks()
        links = pa.concat_tables([t for _, t in held]).combine_chunks()
        self.store_arrow(spans, links)

    def finish(self) -> None:
        """The end of the file (or of what could be read): store everything still held."""
        self.flush()
        self.store_held()
        if self.on_flush is not None:
            self.on_flush(self.result)

    def _to_arrow(self, batch: SpanBatch) -> tuple[pa.Table, pa.Table]:
        """The chunk's tables. SpanBatch.add does not check every field's type, so a span with,
        say, an infinite time or a lone surrogate in its name would fail the whole chunk's
        conversion: then the rows are converted one by one and only the bad ones are refused."""
        try:
            return batch.to_arrow()
        except _CONVERSION_ERRORS:
            pass
        good, bad_ids = [], set()
        for row in batch.rows:
            try:
                _table([row], SPAN_ARROW_SCHEMA)
            except _CONVERSION_ERRORS as exc:
                bad_ids.add((row[0], row[1]))
                self.result.spans_rejected += 1
                self.error("", f"span {row[1]} ({str(row[4])[:60]!r}) has a field of the wrong type or "
                               f"range ({type(exc).__name__}: {exc}); skipped")
            else:
                good.append(row)
        links = []
        for row in batch.link_rows:
            if (row[0], row[1]) in bad_ids:
                continue
            try:
                _table([row], LINK_ARROW_SCHEMA)
            except _CONVERSION_ERRORS as exc:
                self.error("", f"a link of span {row[1]} has a field of the wrong type ({exc}); link skipped")
            else:
                links.append(row)
        return _table(good, SPAN_ARROW_SCHEMA), _table(links, LINK_ARROW_SCHEMA)

    def _insert(self, spans: pa.Table, links: pa.Table) -> int:
        """One chunk in its own transaction (so do not call a loader inside an open one). Spans
        are rarely stored already (a re-load): the plain insert, about twice as fast, is tried
        first, and after a duplicate key the chunk is redone with the check, as the receiver
        does; once a file has shown a duplicate, its later chunks go straight to the check."""
        attempts = (False,) if not self.keys else (False, True) if not self._seen_duplicate else (True,)
        for skip_duplicates in attempts:
            self.con.execute("BEGIN TRANSACTION")
            try:
                added = insert_arrow(self.con, spans, links, skip_duplicates=skip_duplicates, keys=self.keys)
                self.con.execute("COMMIT")
                return added
            except duckdb.ConstraintException:
                self.con.execute("ROLLBACK")
                if skip_duplicates:
                    raise
                self._seen_duplicate = True
            except duckdb.Error:
                self.con.execute("ROLLBACK")
                raise
        raise AssertionError("unreachable")

    def store_arrow(self, spans: pa.Table, links: pa.Table) -> None:
        """Insert one chunk of normalised rows (from this sink's batch or a parse worker's)."""
        n = spans.num_rows
        try:
            added = self._insert(spans, links)
        except duckdb.Error as exc:
            self.result.spans_rejected += n
            self.error("", f"could not store a chunk of {n} spans ({exc}); nothing of that "
                           "chunk was stored, earlier chunks were")
        else:
            self.result.spans_loaded += added
            self.result.duplicates_skipped += n - added


class CollectSink(FileSink):
    """A parse worker's sink: the same batches and messages as FileSink, but each full chunk is
    kept as Arrow IPC buffers (cheap to send to the loading process) instead of being stored."""

    def __init__(self, result: FileResult, *, chunk_spans: int = CHUNK_SPANS) -> None:
        super().__init__(None, result, chunk_spans=chunk_spans)  # type: ignore[arg-type]
        self.chunks: list[tuple[pa.Buffer, pa.Buffer]] = []

    def keep(self, spans: pa.Table, links: pa.Table) -> None:
        """A worker has no store: FileSink.flush's chunk is kept for the loading process instead."""
        self.chunks.append((to_ipc(spans), to_ipc(links)))
