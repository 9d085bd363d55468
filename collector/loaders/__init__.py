"""Trace-dump loaders: read OTLP JSON/protobuf, Jaeger JSON, Zipkin v2 JSON and Parquet files into the store.

`load_paths` is the one entry point (the `load`, `analyze`, `check` and `demo` commands and the
dashboard's upload page call it). The format is detected from the content, not the extension,
and `.gz` is decompressed transparently. Each file's spans go to the store in Arrow chunks, one
transaction per chunk; a broken line or record is reported as `path:line` (or `path: record N`)
and skipped, and everything else loads.
"""

from __future__ import annotations

import collections
import gzip
import io
import json
import multiprocessing
import os
import sys
import time
import types
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import duckdb
import orjson

from choreoscope.collector.export_decode import from_ipc
from choreoscope.collector.loaders import jaeger, otlp_json, otlp_proto, parquet, zipkin
from choreoscope.collector.loaders.sink import CHUNK_SPANS, CollectSink, FileResult, FileSink

FORMATS = ("otlp-json", "otlp-proto", "jaeger", "zipkin", "parquet")
TRIED = ("OTLP JSON ({\"resourceSpans\"}, {\"result\"}, {\"batches\"}), OTLP protobuf (TracesData, "
         "length-prefixed), Jaeger JSON ({\"data\": [traces]}), Zipkin v2 JSON (a list of spans), Parquet "
         "(choreoscope export, otel_traces)")
GZIP_MAGIC = b"\x1f\x8b"
PROGRESS_MIN_BYTES = 4 * 1024 * 1024
# JSON-lines files from this size are parsed by worker processes (one per core), in tasks of
# about TASK_BYTES of lines; smaller ones do not repay the workers' start-up (~0.5 s).
PARALLEL_MIN_BYTES = 16 * 1024 * 1024
TASK_BYTES = 2 * 1024 * 1024

__all__ = ["FORMATS", "FileResult", "LoadResult", "expand_paths", "load_file", "load_paths"]


@dataclass
class LoadResult:
    """What a `load_paths` call did, per file and in total."""

    files: list[FileResult] = field(default_factory=list)

    @property
    def spans_loaded(self) -> int:
        return sum(f.spans_loaded for f in self.files)

    @property
    def duplicates_skipped(self) -> int:
        return sum(f.duplicates_skipped for f in self.files)

    @property
    def spans_rejected(self) -> int:
        return sum(f.spans_rejected for f in self.files)

    @property
    def errors(self) -> list[str]:
        return [e for f in self.files for e in f.errors]

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.files)


def expand_paths(paths: Iterable[str | os.PathLike]) -> list[str]:
    """Files as given; a directory stands for the files under it (sorted, hidden ones skipped)."""
    out: list[str] = []
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                out.extend(os.path.join(root, f) for f in sorted(files) if not f.startswith("."))
        else:
            out.append(p)
    return out


def load_paths(
    con: duckdb.DuckDBPyConnection,
    paths: Iterable[str | os.PathLike],
    fmt: str = "auto",
    progress: bool = False,
    *,
    chunk_spans: int = CHUNK_SPANS,
    workers: int | None = None,
) -> LoadResult:
    """Load every file (directories expanded) into the store behind `con`; never raises for bad input.

    Each chunk of spans is committed in its own transaction, so call this outside a transaction.
    With `progress`, a bar is drawn on stderr for large files when stderr is a terminal.
    `workers`: processes parsing a JSON-lines file (None: one per core for files of
    PARALLEL_MIN_BYTES and more; 0: parse in this process). The rows are the same either way.
    """
    result = LoadResult()
    for path in expand_paths(paths):
        result.files.append(load_file(con, path, fmt, progress=progress, chunk_spans=chunk_spans,
                                      workers=workers))
    return result


def load_file(
    con: duckdb.DuckDBPyConnection,
    path: str | os.PathLike,
    fmt: str = "auto",
    *,
    progress: bool = False,
    chunk_spans: int = CHUNK_SPANS,
    workers: int | None = None,
) -> FileResult:
    """Load one dump file. Problems are recorded in the returned FileResult, never raised."""
    path = os.fspath(path)
    result = FileResult(path=path)
    if fmt != "auto" and fmt not in FORMATS:
        result.errors.append(f"{path}: unknown format {fmt!r}; choose one of auto, {', '.join(FORMATS)}")
        return result
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed by the `with raw` below, after the progress bar is set up
    except OSError as exc:
        result.errors.append(f"{path}: cannot open ({exc.strerror or exc})")
        return result
    bar = _Progress(path, raw) if progress and _wants_progress(path) else None
    sink = FileSink(con, result, chunk_spans=chunk_spans, on_flush=bar.update if bar else None)
    sink.workers = _workers_for(path, workers)
    try:
        with raw:
            _load_stream(raw, sink, fmt)
        sink.flush()
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        sink.flush()
        sink.error("", f"read failed ({exc}); the spans before this point were loaded")
    except RecursionError:
        # json.loads (and the walks after it) recurse once per nesting level
        sink.flush()
        sink.error("", "a JSON value is nested too deeply to read (hundreds of levels; trace dumps "
                       "nest a few); the spans before it were loaded, the rest of the file was not")
    finally:
        if bar:
            bar.done(result)
    return result


def _workers_for(path: str, workers: int | None) -> int:
    if workers is not None:
        return max(0, workers)
    cores = os.cpu_count() or 1
    try:
        big = os.path.getsize(path) >= PARALLEL_MIN_BYTES
    except OSError:
        big = False
    return cores if big and cores > 1 else 0


def _load_stream(raw: BinaryIO, sink: FileSink, fmt: str) -> None:
    compressed = raw.peek(2)[:2] == GZIP_MAGIC if hasattr(raw, "peek") else False
    stream: BinaryIO = io.BufferedReader(gzip.GzipFile(fileobj=raw)) if compressed else raw
    head = stream.peek(64)[:64]
    if head[:4] == parquet.MAGIC or fmt == "parquet":
        _load_parquet(stream, sink, fmt, head, compressed)
        return
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head:
        sink.error("", "the file is empty" + (" after decompression" if compressed else "")
                   + "; nothing to load")
        return
    if not stripped:
        # Peek again past leading whitespace to see if the file is whitespace only.
        rest = stream.read()
        if not rest.strip():
            sink.error("", "the file is empty (whitespace only); nothing to load")
            return
        stream = io.BufferedReader(io.BytesIO(rest))
        stripped = rest.lstrip()[:64]
    first = stripped[:1]
    if first in (b"{", b"[") and fmt != "otlp-proto":
        _load_json(stream, sink, fmt)
        return
    if fmt == "auto" and _looks_like_text(stripped):
        sink.result.format = "unknown"
        sink.error("", f"unknown format: text that is not JSON, not a trace dump (starts with "
                       f"{stripped[:16]!r}); tried {TRIED}")
        return
    if fmt in ("auto", "otlp-proto"):
        sink.result.format = "otlp-proto"
        if otlp_proto.load(stream, sink):
            return
    sink.result.format = "unknown"
    wanted = f"not {fmt}" if fmt != "auto" else "unknown format"
    sink.error("", f"{wanted}: tried {TRIED if fmt == 'auto' else fmt}; "
                   f"the file starts with {head[:16]!r}. Pass --format if detection is wrong")


def _load_parquet(stream: BinaryIO, sink: FileSink, fmt: str, head: bytes, compressed: bool) -> None:
    if head[:4] != parquet.MAGIC:
        sink.result.format = "unknown"
        sink.error("", f"not parquet: the file starts with {head[:16]!r}, not PAR1. Use --format auto")
        return
    if fmt not in ("auto", "parquet"):
        sink.result.format = "parquet"
        sink.error("", f"this is parquet, not {fmt} as requested; skipped. Use --format auto")
        return
    # Parquet is read from its footer: a gzipped file is decompressed into memory first.
    parquet.load(io.BytesIO(stream.read()) if compressed else stream, sink)


def _looks_like_text(head: bytes) -> bool:
    """Readable text (a README, CSV, YAML): protobuf dumps start with a field tag (0x0a) or a
    big-endian frame length (0x00 ...), never with a printable character."""
    return bool(head) and head[0] >= 0x20 and all(b >= 0x20 or b in b"\t\r\n" for b in head)


def _load_json(stream: BinaryIO, sink: FileSink, fmt: str) -> None:
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace")
    first_line = text.readline()
    try:
        first_obj = _parse_line(first_line)
    except json.JSONDecodeError:
        first_obj = _NOT_PARSED
    if first_obj is _NOT_PARSED:
        body = first_line + text.read()
        try:
            doc = json.loads(body)
        except json.JSONDecodeError as exc:
            if _looks_like_lines(body):
                _load_lines(body.splitlines(True), sink, fmt)
                return
            sink.error(str(exc.lineno), f"not valid JSON ({exc.msg}, column {exc.colno}); nothing was loaded")
            return
        _load_json_value(doc, sink, fmt, where="")
        return
    # JSON lines (or a document that fits on one line).
    _load_json_value(first_obj, sink, fmt, where="1", lines=True)
    if sink.workers:
        _load_lines_parallel(text, sink, fmt, start=2)
    else:
        _load_lines(text, sink, fmt, start=2)


def _looks_like_lines(body: str) -> bool:
    """A JSON-lines file whose first line is broken: most other lines parse on their own."""
    lines = [ln for ln in body.splitlines()[1:20] if ln.strip()]
    if not lines:
        return False
    ok = 0
    for ln in lines:
        try:
            json.loads(ln)
            ok += 1
        except json.JSONDecodeError:
            pass
    return ok * 2 > len(lines)


def _load_lines(lines: Iterable[str], sink: FileSink, fmt: str, start: int = 1) -> None:
    """Load JSON lines, numbered from `start`; a broken line is reported and skipped."""
    for n, line in enumerate(lines, start=start):
        if not line.strip():
            continue
        try:
            obj = _parse_line(line)
        except json.JSONDecodeError as exc:
            sink.error(str(n), f"not valid JSON ({exc.msg}, column {exc.colno}); line skipped")
            continue
        except RecursionError:
            sink.error(str(n), "JSON nested too deeply to read; line skipped")
            continue
        _load_json_value(obj, sink, fmt, where=str(n), lines=True)


def _parse_line(line: str):
    """One JSON line: orjson (4x faster), or json where orjson refuses what json reads (NaN,
    integers beyond 64 bits, lone surrogates) and for the error message of a broken line."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return json.loads(line)


def _tasks(lines: Iterable[str], start: int) -> Iterator[tuple[int, list[str]]]:
    """(number of the first line, lines) in runs of about TASK_BYTES characters."""
    run: list[str] = []
    size = 0
    first = start
    for n, line in enumerate(lines, start=start):
        if not run:
            first = n
        run.append(line)
        size += len(line)
        if size >= TASK_BYTES:
            yield first, run
            run, size = [], 0
    if run:
        yield first, run


def parse_lines_task(path: str, fmt: str, chunk_spans: int, first: int, lines: list[str]) -> tuple:
    """A parse worker's task: the same `_load_lines` walk into a CollectSink. Returns the Arrow
    chunks, the messages (naming `path` and the line), the rejected count and the formats seen."""
    result = FileResult(path=path)
    sink = CollectSink(result, chunk_spans=chunk_spans)
    _load_lines(lines, sink, fmt, start=first)
    sink.flush()
    return sink.chunks, result.errors, result.spans_rejected, result.format


def _merge_format(result: FileResult, formats: str) -> None:
    for found in formats.split("+"):
        if found == "unknown":
            continue
        if result.format == "unknown":
            result.format = found
        elif result.format != found and found not in result.format:
            result.format += f"+{found}"


def _load_lines_parallel(lines: Iterable[str], sink: FileSink, fmt: str, start: int) -> None:
    """`_load_lines` with the parsing and normalising spread over `sink.workers` processes. This
    process only reads lines and stores the workers' Arrow chunks, in file order (messages too),
    while the workers parse the next ones; at most two tasks per worker are in flight."""
    sink.flush()
    pool = _parse_pool(sink.workers)
    pending: collections.deque = collections.deque()
    path = sink.result.path

    def store_next() -> None:
        first, last, job = pending.popleft()
        try:
            chunks, errors, rejected, formats = job.get()
        except Exception as exc:  # noqa: BLE001 - a worker that died costs only its lines
            sink.error(f"{first}-{last}", f"could not be parsed ({exc!r}); lines skipped")
            return
        _merge_format(sink.result, formats)
        for spans, links in chunks:
            sink.store_arrow(from_ipc(spans), from_ipc(links))
            if sink.on_flush is not None:
                sink.on_flush(sink.result)
        sink.result.errors.extend(errors)
        sink.result.spans_rejected += rejected

    try:
        for first, run in _tasks(lines, start):
            job = pool.apply_async(parse_lines_task, (path, fmt, sink.chunk_spans, first, run))
            pending.append((first, first + len(run) - 1, job))
            if len(pending) > 2 * sink.workers:
                store_next()
        while pending:
            store_next()
    finally:
        pool.terminate()
        pool.join()


def _parse_pool(workers: int):
    """Spawned (not forked: DuckDB's threads) worker processes. A spawned worker re-imports the
    parent's __main__ (under Streamlit, the dashboard script); the workers need only collector
    code, so they start with an empty __main__."""
    ctx = multiprocessing.get_context("spawn")
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        return ctx.Pool(workers)
    finally:
        if main is not None:
            sys.modules["__main__"] = main


_NOT_PARSED = object()


def _load_json_value(obj, sink: FileSink, fmt: str, where: str, lines: bool = False) -> None:
    """Classify one JSON value (a line or a whole document) and hand it to its loader."""
    rs = otlp_json.resource_spans_of(obj)
    found = None
    if rs is not None:
        found = "otlp-json"
    elif otlp_json.is_non_trace_signal(obj):
        if fmt in ("auto", "otlp-json"):
            if sink.result.format == "unknown":
                sink.result.format = "otlp-json"
            return  # metrics or logs in a file-exporter dump: not ours, not an error
        found = "otlp-json"
    else:
        traces = jaeger.traces_of(obj)
        if traces is not None:
            found = "jaeger"
        else:
            records = zipkin.spans_of(obj)
            if records is not None:
                found = "zipkin"
    if found is None:
        what = f"keys {sorted(obj)[:6]}" if isinstance(obj, dict) else (
            "an empty list" if obj == [] else f"a {type(obj).__name__}")
        msg = f"{'line' if lines else 'document'} is not a trace dump in any known format ({what}); tried {TRIED}"
        sink.error(where, msg + ("; line skipped" if lines else ""))
        return
    if fmt != "auto" and found != fmt:
        sink.error(where, f"this is {found}, not {fmt} as requested; skipped. Use --format auto")
        return
    if sink.result.format == "unknown":
        sink.result.format = found
    elif sink.result.format != found and found not in sink.result.format:
        sink.result.format += f"+{found}"
    if found == "otlp-json":
        otlp_json.load_resource_spans(rs, sink, where)
    elif found == "jaeger":
        jaeger.load_traces(traces, sink, f"{where}: " if where else "")
    else:
        if lines and where != "1":
            sink.error(where, "Zipkin spans must be one JSON document, not JSON lines; line skipped")
            return
        zipkin.load_records(records, sink)


def _wants_progress(path: str) -> bool:
    try:
        return sys.stderr.isatty() and os.path.getsize(path) >= PROGRESS_MIN_BYTES
    except OSError:
        return False


class _Progress:
    """A one-line progress bar on stderr, by bytes read from the (possibly compressed) file."""

    WIDTH = 30

    def __init__(self, path: str, raw: BinaryIO) -> None:
        self.path = os.path.basename(path)
        self.raw = raw
        self.total = max(1, os.path.getsize(path))
        self.last = 0.0

    def update(self, result: FileResult) -> None:
        now = time.monotonic()
        if now - self.last < 0.2:
            return
        self.last = now
        try:
            pos = self.raw.tell()
        except (OSError, ValueError):
            return
        frac = min(1.0, pos / self.total)
        filled = int(frac * self.WIDTH)
        sys.stderr.write(f"\r{self.path} [{'#' * filled}{'.' * (self.WIDTH - filled)}] "
                         f"{frac:4.0%} {result.spans_loaded:,} spans")
        sys.stderr.flush()

    def done(self, result: FileResult) -> None:
        if self.last:
            sys.stderr.write(f"\r{self.path} [{'#' * self.WIDTH}] 100% {result.spans_loaded:,} spans\n")
            sys.stderr.flush()
