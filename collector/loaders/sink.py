"""Where a loader puts spans: a `SpanBatch` flushed to the store in chunks, one transaction each.

Loaders only parse and call `sink.batch.add(...)`; the sink decides when to write, counts what
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
    ) -> None:
        self.con = con
        self.result = result
        self.chunk_spans = chunk_spans
        self.on_flush = on_flush
        self.batch = SpanBatch(source=result.path)
        self._rejected_seen = 0
        self.workers = 0  # parse processes for a JSON-lines file (set by load_file)

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
            spans, links = self._to_arrow(batch)
            self.store_arrow(spans, links)
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

    def store_arrow(self, spans: pa.Table, links: pa.Table) -> None:
        """Insert one chunk of normalised rows (from this sink's batch or a parse worker's)."""
        n = spans.num_rows
        # Our own transaction per chunk: do not call a loader inside an open transaction.
        self.con.execute("BEGIN TRANSACTION")
        try:
            added = insert_arrow(self.con, spans, links)
            self.con.execute("COMMIT")
        except duckdb.Error as exc:
            self.con.execute("ROLLBACK")
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

    def store_arrow(self, spans: pa.Table, links: pa.Table) -> None:
        """A worker has no store: FileSink.flush's chunk is kept for the loading process instead."""
        self.chunks.append((to_ipc(spans), to_ipc(links)))
