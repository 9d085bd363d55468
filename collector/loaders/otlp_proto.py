"""OTLP protobuf dumps: one `TracesData` / `ExportTraceServiceRequest`, or the Collector file
exporter's proto format (each message preceded by its length, 4 bytes big-endian, repeated).

Both messages carry `resource_spans` as field 1, so one decoder reads either. A serialized
message starts with that field's tag byte 0x0a; a length-prefixed file starts with the high byte
of a length, which is 0x00 for any message under 16 MiB — that is how the two are told apart.
Big files are decoded and walked by parse workers (`loaders.parallel`): frames in groups, a
single message as its ResourceSpans in groups.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from google.protobuf.message import DecodeError
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from choreoscope.collector import otlp_arrow
from choreoscope.collector.loaders.parallel import TASK_BYTES, close_pool, gc_paused, parse_pool, run_tasks
from choreoscope.collector.loaders.sink import CollectSink, FileResult, FileSink
from choreoscope.collector.otlp import add_resource_spans

FIELD1_TAG = 0x0A
MAX_FRAME = 1 << 30


def load(stream: BinaryIO, sink: FileSink) -> bool:
    """Add the spans of a proto dump. Returns False if the content is not OTLP protobuf at all."""
    head = stream.peek(5)[:5] if hasattr(stream, "peek") else b""
    if head[:1] == bytes([FIELD1_TAG]):
        return _load_single(stream.read(), sink)
    return _load_framed(stream, sink)


def _load_single(data: bytes, sink: FileSink) -> bool:
    msg = TracesData()
    try:
        msg.ParseFromString(data)
    except DecodeError as exc:
        sink.error("", f"not a valid OTLP protobuf message ({exc}); the file may be truncated "
                       f"({len(data)} bytes). Nothing was loaded from it")
        return True
    if not msg.resource_spans:
        return False
    if sink.workers and len(msg.resource_spans) > 1:
        # The whole message decoded (C, fast): its ResourceSpans are walked by the workers.
        _in_workers(_message_tasks(msg, sink), sink)
        return True
    add_resource_spans(sink.batch, msg.resource_spans, where=f"{sink.result.path}: ")
    sink.flush()
    return True


def _read_frames(stream: BinaryIO) -> Iterator[tuple[str, bytes | None, tuple[str, bool] | None]]:
    """(place, body, None) for each frame, or (place, None, (problem, first_means_not_proto))
    for the problem that ends the reading, where place is "frame N (byte offset)"."""
    offset = 0
    frame = 0
    while True:
        prefix = stream.read(4)
        if not prefix:
            return
        frame += 1
        where = f"frame {frame} (byte {offset})"
        if len(prefix) < 4:
            yield where, None, (f"file ends inside a length prefix ({len(prefix)} of 4 bytes); truncated file?", True)
            return
        (length,) = struct.unpack(">I", prefix)
        if length > MAX_FRAME:
            yield where, None, (f"length prefix {length} is implausible; the rest of the file was not read", True)
            return
        body = stream.read(length)
        if len(body) < length:
            problem = (f"message claims {length} bytes but only {len(body)} remain; truncated file? "
                       "The frames before it were loaded")
            yield where, None, (problem, len(body) == 0)
            return
        yield where, body, None
        offset += 4 + length


def _load_framed(stream: BinaryIO, sink: FileSink) -> bool:
    frames = _read_frames(stream)
    first = next(frames, None)
    if first is None:
        return False
    where, body, problem = first
    if problem is not None:
        if problem[1]:
            return False
        sink.error(where, problem[0])
        return True
    msg = TracesData()
    try:
        msg.ParseFromString(body)
    except DecodeError:
        return False
    add_resource_spans(sink.batch, msg.resource_spans, where=f"{sink.result.path}:{where}: ")
    sink.maybe_flush()
    if sink.workers:
        problems: list[tuple[str, str]] = []
        _in_workers(_frame_tasks(frames, sink, problems), sink)
        for where, message in problems:
            sink.error(where, message)
        return True
    for where, body, problem in frames:
        if problem is not None:
            sink.error(where, problem[0])
            return True
        add_frame(body, sink, where)
    return True


def add_frame(body: bytes, sink: FileSink, where: str) -> None:
    """Decode one message and add its spans; a message that does not decode is reported. A
    message as large as the receiver's columnar decode pays for (collector/otlp_arrow.py) is
    decoded by columns when it can be (the same rows), else walked."""
    if len(body) >= otlp_arrow.MIN_BYTES:
        decoded = otlp_arrow.decode_protobuf(body, sink.result.path)
        if decoded is not None:
            sink.keep_after_batch(*decoded)
            return
    msg = TracesData()
    try:
        msg.ParseFromString(body)
    except DecodeError as exc:
        sink.error(where, f"not a valid OTLP protobuf message ({exc}); skipped")
    else:
        place = f"{sink.result.path}:{where}: " if where else f"{sink.result.path}: "
        add_resource_spans(sink.batch, msg.resource_spans, where=place)
        sink.maybe_flush()


def parse_frames_task(path: str, chunk_spans: int, frames: list[tuple[str, bytes]]) -> tuple:
    """A parse worker's task: `add_frame` for each (place, message bytes) into a CollectSink."""
    result = FileResult(path=path)
    sink = CollectSink(result, chunk_spans=chunk_spans)
    with gc_paused():
        for where, body in frames:
            add_frame(body, sink, where)
        sink.flush()
    return sink.chunks, result.errors, result.spans_rejected, result.format


def _in_workers(tasks: Iterable, sink: FileSink) -> None:
    pool = parse_pool(sink.workers)
    try:
        run_tasks(pool, parse_frames_task, tasks, sink)
    finally:
        close_pool(pool)


def _frame_tasks(frames: Iterator, sink: FileSink, problems: list) -> Iterator[tuple[str, tuple]]:
    """The frames after the first in tasks of about TASK_BYTES; the problem that ends the
    reading goes to `problems` (reported after the frames before it are stored)."""
    run: list[tuple[str, bytes]] = []
    size = 0
    for where, body, problem in frames:
        if problem is not None:
            problems.append((where, problem[0]))
            break
        run.append((where, body))
        size += len(body)
        if size >= TASK_BYTES:
            yield _frames_task(run, sink)
            run, size = [], 0
    if run:
        yield _frames_task(run, sink)


def _frames_task(run: list[tuple[str, bytes]], sink: FileSink) -> tuple[str, tuple]:
    label = run[0][0] if len(run) == 1 else f"{run[0][0]} to {run[-1][0]}"
    return label, (sink.result.path, sink.chunk_spans, run)


def _message_tasks(msg: TracesData, sink: FileSink) -> Iterator[tuple[str, tuple]]:
    """A single message's ResourceSpans, re-serialized in groups of about TASK_BYTES."""
    group: list = []
    size = 0
    for rs in msg.resource_spans:
        group.append(rs)
        size += rs.ByteSize()
        if size >= TASK_BYTES:
            yield "", (sink.result.path, sink.chunk_spans, [("", TracesData(resource_spans=group).SerializeToString())])
            group, size = [], 0
    if group:
        yield "", (sink.result.path, sink.chunk_spans, [("", TracesData(resource_spans=group).SerializeToString())])
