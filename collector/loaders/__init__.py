"""Trace-dump loaders: read OTLP JSON/protobuf, Jaeger JSON, Zipkin v2 JSON and Parquet files into the store.

`load_paths` is the one entry point (the `load`, `analyze`, `check` and `demo` commands and the
dashboard's upload page call it). The format is detected from the content, not the extension,
and `.gz` is decompressed transparently. Each file's spans go to the store in Arrow chunks, one
transaction per chunk; a broken line or record is reported as `path:line` (or `path: record N`)
and skipped, and everything else loads.
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import io
import itertools
import json
import os
import sys
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import duckdb
import orjson

from choreoscope.collector.loaders import jaeger, otlp_json, otlp_json_arrow, otlp_proto, parquet, zipkin
from choreoscope.collector.loaders.parallel import (
    TASK_BYTES,
    close_pool,
    gc_paused,
    merge_format,
    one_store_thread,
    parse_pool,
    run_in_threads,
    run_tasks,
)
from choreoscope.collector.loaders.sink import CHUNK_SPANS, CollectSink, FileResult, FileSink
from choreoscope.collector.store import drop_repeated_spans, filled_in_memory

FORMATS = ("otlp-json", "otlp-proto", "jaeger", "zipkin", "parquet")
TRIED = ("OTLP JSON ({\"resourceSpans\"}, {\"result\"}, {\"batches\"}), OTLP protobuf (TracesData, "
         "length-prefixed), Jaeger JSON ({\"data\": [traces]}), Zipkin v2 JSON (a list of spans), Parquet "
         "(choreoscope export, otel_traces)")
GZIP_MAGIC = b"\x1f\x8b"
PROGRESS_MIN_BYTES = 4 * 1024 * 1024
# JSON-lines and protobuf files from this size are parsed by worker processes (one per core), in
# tasks of about TASK_BYTES; smaller ones do not repay the workers' start-up (~0.5 s).
PARALLEL_MIN_BYTES = 16 * 1024 * 1024
# Plain OTLP JSON lines are decoded in threads of the loading process up to this file size, by the
# worker processes beyond it. Bench dumps, back to back: 47 MB 1.2 s in threads against 2.0 s in
# processes, 477 MB 6.9 s against 9.8 s, but 1.4 GB 35-51 s against 30 s (why is not known yet:
# the decodes' Python glue holding the GIL against DuckDB's inserts is the suspect).
THREADED_MAX_BYTES = 512 * 1024 * 1024

__all__ = ["FORMATS", "FileResult", "LoadResult", "expand_paths", "load_file", "load_paths"]


@dataclass
class LoadResult:
    """What a `load_paths` call did, per file and in total."""

    files: list[FileResult] = field(default_factory=list)
    repeats_removed: int = 0  # copies removed after the load (`dedup_after`), counted in no file

    @property
    def spans_loaded(self) -> int:
        return sum(f.spans_loaded for f in self.files) - self.repeats_removed

    @property
    def duplicates_skipped(self) -> int:
        return sum(f.duplicates_skipped for f in self.files) + self.repeats_removed

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
    dedup_after: bool = False,
) -> LoadResult:
    """Load every file (directories expanded) into the store behind `con`; never raises for bad input.

    Each chunk of spans is committed in its own transaction, so call this outside a transaction.
    With `progress`, a bar is drawn on stderr for large files when stderr is a terminal.
    `workers`: processes parsing a JSON-lines file or a protobuf dump (None: one per core for
    files of PARALLEL_MIN_BYTES and more; 0: parse in this process). JSON lines whose first block
    is plain OTLP JSON are decoded by columns: in threads of this process when there are no
    workers or the file is under THREADED_MAX_BYTES, else in the workers. The rows are the same
    either way.
    `dedup_after`: store no span keys and remove spans stored twice once every file is loaded
    (`store.drop_repeated_spans`), for a store that is read, not added to (the analysis's
    in-memory store of dumps): the keys' index is a third of the storing process's work. The
    rows kept are the same (the first copy); the copies removed are counted in `repeats_removed`,
    not per file.
    """
    result = LoadResult()
    with filled_in_memory(con) if dedup_after else contextlib.nullcontext():
        for path in expand_paths(paths):
            result.files.append(load_file(con, path, fmt, progress=progress, chunk_spans=chunk_spans,
                                          workers=workers, keys=not dedup_after))
        if dedup_after:
            result.repeats_removed = drop_repeated_spans(con)
    return result


def load_file(
    con: duckdb.DuckDBPyConnection,
    path: str | os.PathLike,
    fmt: str = "auto",
    *,
    progress: bool = False,
    chunk_spans: int = CHUNK_SPANS,
    workers: int | None = None,
    keys: bool = True,
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
    sink = FileSink(con, result, chunk_spans=chunk_spans, on_flush=bar.update if bar else None, keys=keys)
    sink.workers = _workers_for(path, workers)
    try:
        with raw, gc_paused(), one_store_thread(con) if sink.workers else contextlib.nullcontext():
            _load_stream(raw, sink, fmt)
        sink.finish()
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        sink.finish()
        sink.error("", f"read failed ({exc}); the spans before this point were loaded")
    except RecursionError:
        # json.loads (and the walks after it) recurse once per nesting level
        sink.finish()
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
    return cores if _file_size(path) >= PARALLEL_MIN_BYTES and cores > 1 else 0


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
    first_line: str | bytes | None = _first_line_bytes(stream)
    if first_line is None:  # the text reader cuts the lines
        text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace")
        first_line = text.readline()
    else:  # the rest, when it is read as text (line 2 on: no BOM to drop)
        text = io.TextIOWrapper(stream, encoding="utf-8", errors="replace")
    try:
        first_obj = _parse_line(first_line)
    except json.JSONDecodeError:
        first_obj = _NOT_PARSED
    if first_obj is _NOT_PARSED:
        # a document over several lines (pretty-printed, as Jaeger's and Zipkin's APIs answer)
        raw_body = first_line + (stream.read() if type(first_line) is bytes else text.read())
        try:
            doc = _parse_line(raw_body)
        except json.JSONDecodeError:
            doc = _NOT_PARSED
        if doc is _NOT_PARSED:  # worded on the text the text reader gives (line ends as it reads them)
            body = raw_body if type(raw_body) is str else \
                io.TextIOWrapper(io.BytesIO(raw_body), encoding="utf-8", errors="replace").read()
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
    # JSON lines (or a document that fits on one line)
    _load_json_value(first_obj, sink, fmt, where="1", lines=True)
    rest = _rest_as_bytes(text)
    if rest is None:
        _load_lines(text, sink, fmt, start=2)
        return
    tasks = _tasks(rest, 2)
    task = next(tasks, None)
    if task is None:
        return
    path = sink.result.path
    columnar = otlp_json_arrow.decode_lines(task[2], path) if fmt in ("auto", "otlp-json") else None
    if columnar is not None:
        _keep_columnar(sink, columnar)
        if not sink.workers or _file_size(path) < THREADED_MAX_BYTES:
            # Plain OTLP JSON: the blocks are decoded by columns in threads; one the decode
            # leaves (odd lines) is walked in its place.
            numbered = ((first, block) for first, _, block in tasks)
            run_in_threads(lambda item: otlp_json_arrow.decode_lines(item[1], path), numbered,
                           lambda item: _walk_block(item[1], sink, fmt, item[0]), sink, _threads())
            return
    else:
        tasks = itertools.chain([task], tasks)
    if not sink.workers:
        for first, _last, block in tasks:
            _load_block(block, sink, fmt, first)
        return
    pool = parse_pool(sink.workers)
    try:
        run_tasks(pool, parse_lines_task, (
            (f"{first}-{last}", (path, fmt, sink.chunk_spans, first, block)) for first, last, block in tasks
        ), sink)
    finally:
        close_pool(pool)


def _file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _threads() -> int:
    """Decode threads: one per core and one more (the loading process's own thread mostly waits
    on DuckDB's inserts; 1M bench spans: 8.0 s with two threads on two cores, 7.1 s with three)."""
    return (os.cpu_count() or 1) + 1


def _rest_as_bytes(text: io.TextIOWrapper) -> BinaryIO | None:
    """The binary stream under `text`, positioned after what `text` has returned, so the rest of
    the file goes to the parse workers undecoded (decoding is theirs). None (keep reading `text`)
    when the position is not a plain byte offset (decoder state) or the stream cannot seek."""
    try:
        if not text.buffer.seekable():
            return None
        cookie = text.tell()
    except (OSError, ValueError):
        return None
    if cookie >= 1 << 64:  # TextIOWrapper packs decoder state above the byte offset
        return None
    stream = text.detach()
    stream.seek(cookie)
    return stream


def _first_line_bytes(stream: BinaryIO) -> bytes | None:
    """The file's first line as bytes (a UTF-8 BOM dropped), read past the text reader: a Jaeger
    or Zipkin document on one line is the whole file, and decoding it into text only for orjson
    to read it back cost 1.33 + 9.87 s of a 1M-span Jaeger dump (714 MB) against 0.47 + 8.18 s
    so (the whole load into memory, twice each alternating: 32.1-35.2 s against 35.0-36.1; a
    pretty-printed 1M-span Zipkin list, read so and parsed by orjson before json, 19.4-21.8 s
    against 21.3-23.4). None, the stream back where it was, when the line holds a CR (the text
    reader ends a line there too) or when the stream cannot go back."""
    try:
        if not stream.seekable():
            return None
        start = stream.tell()
    except (OSError, ValueError):
        return None
    line = stream.readline()
    if b"\r" in line:
        stream.seek(start)
        return None
    return line[len(codecs.BOM_UTF8):] if start == 0 and line.startswith(codecs.BOM_UTF8) else line


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


def _load_lines(lines: Iterable[str | bytes], sink: FileSink, fmt: str, start: int = 1) -> None:
    """Load JSON lines (text, or bytes without CR), numbered from `start`; a broken line is
    reported and skipped."""
    for n, line in enumerate(lines, start=start):
        if not line or line.isspace():  # (strip would copy a 1 MB line)
            continue
        try:
            obj = _parse_line(line)
        except json.JSONDecodeError as exc:
            if type(line) is bytes and line.decode("utf-8", "replace").isspace():
                continue  # blank as text (U+0085, U+2028, ...), which bytes.isspace does not know
            sink.error(str(n), f"not valid JSON ({exc.msg}, column {exc.colno}); line skipped")
            continue
        except RecursionError:
            sink.error(str(n), "JSON nested too deeply to read; line skipped")
            continue
        _load_json_value(obj, sink, fmt, where=str(n), lines=True)


def _parse_line(line: str | bytes):
    """One JSON line: orjson (4x faster), or json where orjson refuses what json reads (NaN,
    integers beyond 64 bits, lone surrogates) and for the error message of a broken line. A
    line of bytes that orjson refuses is decoded as the text reader would (bad bytes replaced)
    and read as that text is: orjson reads valid UTF-8 bytes as it reads their text."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        if type(line) is bytes:
            return _parse_line(line.decode("utf-8", "replace"))
        return json.loads(line)


def _tasks(stream: BinaryIO, start: int) -> Iterator[tuple[int, int, bytes]]:
    """(numbers of the first and last line, bytes of those whole lines) in runs of about
    TASK_BYTES. Lines are counted as the text reader counts them (universal newlines: LF, CRLF
    and a lone CR end a line)."""
    first = start
    while block := stream.read(TASK_BYTES):
        if not block.endswith(b"\n"):
            block += stream.readline()  # to the end of the line (a CRLF is not split)
        ends = block.count(b"\n")
        if b"\r" in block:
            ends += block.count(b"\r") - block.count(b"\r\n")
        unended = not block.endswith((b"\n", b"\r"))  # the file's last line, without a newline
        yield first, first + ends - 1 + unended, block
        first += ends


def parse_lines_task(path: str, fmt: str, chunk_spans: int, first: int, block: bytes) -> tuple:
    """A parse worker's task: `_load_block` into a CollectSink. Returns the Arrow chunks, the
    messages (naming `path` and the line), the rejected count and the formats seen."""
    result = FileResult(path=path)
    sink = CollectSink(result, chunk_spans=chunk_spans)
    with gc_paused():
        _load_block(block, sink, fmt, first)
        sink.flush()
    return sink.chunks, result.errors, result.spans_rejected, result.format


def _load_block(block: bytes, sink: FileSink, fmt: str, first: int) -> None:
    """Whole lines of a JSON-lines file (bytes), the first numbered `first`: decoded by columns
    when they are plain OTLP JSON (collector/loaders/otlp_json_arrow.py: the same rows, ~3x less
    CPU), else walked line by line as the text reader would give them (UTF-8, bad bytes replaced,
    universal newlines)."""
    if fmt in ("auto", "otlp-json"):
        decoded = otlp_json_arrow.decode_lines(block, sink.result.path)
        if decoded is not None:
            _keep_columnar(sink, decoded)
            return
    _walk_block(block, sink, fmt, first)


def _keep_columnar(sink: FileSink, decoded: tuple) -> None:
    merge_format(sink, "otlp-json")
    sink.keep_after_batch(*decoded)


def _walk_block(block: bytes, sink: FileSink, fmt: str, first: int) -> None:
    # Without a CR the lines are the block's LF-ended byte runs, parsed as bytes: decoding the
    # block and splitting it as text cost an eighth of the task. (A CR ends a line too: text then.)
    lines = block.splitlines(True) if b"\r" not in block else io.StringIO(block.decode("utf-8", "replace"), newline=None)
    _load_lines(lines, sink, fmt, start=first)


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
