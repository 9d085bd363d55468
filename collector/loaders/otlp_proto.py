"""OTLP protobuf dumps: one `TracesData` / `ExportTraceServiceRequest`, or the Collector file
exporter's proto format (each message preceded by its length, 4 bytes big-endian, repeated).

Both messages carry `resource_spans` as field 1, so one decoder reads either. A serialized
message starts with that field's tag byte 0x0a; a length-prefixed file starts with the high byte
of a length, which is 0x00 for any message under 16 MiB — that is how the two are told apart.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

from google.protobuf.message import DecodeError
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from choreoscope.collector.loaders.sink import FileSink
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
    add_resource_spans(sink.batch, msg.resource_spans, where=f"{sink.result.path}: ")
    sink.flush()
    return True


def _load_framed(stream: BinaryIO, sink: FileSink) -> bool:
    offset = 0
    frame = 0
    while True:
        prefix = stream.read(4)
        if not prefix:
            return frame > 0
        frame += 1
        where = f"frame {frame} (byte {offset})"
        if len(prefix) < 4:
            if frame == 1:
                return False
            sink.error(where, f"file ends inside a length prefix ({len(prefix)} of 4 bytes); truncated file?")
            return True
        (length,) = struct.unpack(">I", prefix)
        if length > MAX_FRAME:
            if frame == 1:
                return False
            sink.error(where, f"length prefix {length} is implausible; the rest of the file was not read")
            return True
        body = stream.read(length)
        if len(body) < length:
            if frame == 1 and len(body) == 0:
                return False
            sink.error(where, f"message claims {length} bytes but only {len(body)} remain; "
                              "truncated file? The frames before it were loaded")
            return True
        msg = TracesData()
        try:
            msg.ParseFromString(body)
        except DecodeError as exc:
            if frame == 1:
                return False
            sink.error(where, f"not a valid OTLP protobuf message ({exc}); skipped")
        else:
            add_resource_spans(sink.batch, msg.resource_spans, where=f"{sink.result.path}:{where}: ")
            sink.maybe_flush()
        offset += 4 + length
