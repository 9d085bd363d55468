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

from choreoscope.collector.spanbatch import SpanBatch
from choreoscope.collector.store import insert_arrow

CHUNK_SPANS = 20_000


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
            spans, links = batch.to_arrow()
            # Our own transaction per chunk: do not call a loader inside an open transaction.
            self.con.execute("BEGIN TRANSACTION")
            try:
                added = insert_arrow(self.con, spans, links)
                self.con.execute("COMMIT")
            except duckdb.Error as exc:
                self.con.execute("ROLLBACK")
                self.result.spans_rejected += len(batch)
                self.error("", f"could not store a chunk of {len(batch)} spans ({exc}); nothing of that "
                               "chunk was stored, earlier chunks were")
            else:
                self.result.spans_loaded += added
                self.result.duplicates_skipped += len(batch) - added
        if self.on_flush is not None:
            self.on_flush(self.result)
