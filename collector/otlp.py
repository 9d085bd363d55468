"""OTLP trace data (protobuf messages, or OTLP JSON turned into them) into a `SpanBatch`.

The receiver and the OTLP dump loaders share this walk, so a span exported live and the same
span read from a Collector file-exporter dump become identical rows.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, TracesData

from choreoscope.collector import semconv as sc
from choreoscope.collector.spanbatch import Link, SpanBatch


def any_value(value: AnyValue):
    """An OTLP AnyValue as a plain Python value (bytes stay bytes; JSON encodes them base64)."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, which)


_SCALARS = frozenset({"string_value", "bool_value", "int_value", "double_value", "bytes_value"})


def key_values(kvs) -> dict:
    """OTLP KeyValues as a dict (the hot loop of decoding: scalars are read inline)."""
    out = {}
    for kv in kvs:
        value = kv.value
        # Most attributes are non-empty strings: a set oneof member is the only one that reads
        # as non-empty, so one read answers for them without WhichOneof.
        text = value.string_value
        if text:
            out[kv.key] = text
        else:
            which = value.WhichOneof("value")
            out[kv.key] = getattr(value, which) if which in _SCALARS else any_value(value)
    return out


def add_resource_spans(batch: SpanBatch, resource_spans: Iterable[ResourceSpans], where: str = "") -> int:
    """Add every span of `resource_spans` to `batch`. Returns how many were rejected."""
    rejected = 0
    kinds = sc.SPAN_KINDS
    statuses = sc.STATUS_CODES
    for rs in resource_spans:
        res = key_values(rs.resource.attributes)
        for ss in rs.scope_spans:
            scope_name = ss.scope.name
            scope_version = ss.scope.version
            for span in ss.spans:
                # the sender's dropped attributes: the span's own, and its events' and links'
                dropped_attributes = span.dropped_attributes_count
                events = links = None
                if span.events:
                    events = [
                        {"name": e.name, "time_ns": e.time_unix_nano, "attributes": key_values(e.attributes)}
                        for e in span.events
                    ]
                    dropped_attributes += sum(e.dropped_attributes_count for e in span.events)
                if span.links:
                    links = [
                        Link(l.trace_id, l.span_id, l.trace_state, key_values(l.attributes)) for l in span.links
                    ]
                    dropped_attributes += sum(l.dropped_attributes_count for l in span.links)
                kind = span.kind
                status = span.status
                code = status.code
                ok = batch.add(
                    trace_id=span.trace_id,
                    span_id=span.span_id,
                    parent_span_id=span.parent_span_id or None,
                    trace_state=span.trace_state,
                    name=span.name,
                    kind=kinds[kind] if 0 <= kind < len(kinds) else "UNSPECIFIED",
                    start_ns=span.start_time_unix_nano,
                    end_ns=span.end_time_unix_nano,
                    status_code=statuses[code] if 0 <= code < 3 else "UNSET",
                    status_message=status.message,
                    attributes=key_values(span.attributes),
                    resource_attributes=res,
                    scope_name=scope_name,
                    scope_version=scope_version,
                    events=events,
                    links=links,
                    dropped_attributes_count=dropped_attributes,
                    dropped_events_count=span.dropped_events_count,
                    dropped_links_count=span.dropped_links_count,
                )
                if not ok:
                    rejected += 1
                    # where the span is, only worked out for the rare rejected one
                    batch.rejected[-1] = (
                        f"{where}span {span.span_id.hex() or '?'} ({span.name!r}): {batch.rejected[-1]}"
                    )
    return rejected


_ID_KEYS = {"traceId", "spanId", "parentSpanId"}


def _hex_ids_to_base64(node):
    """OTLP JSON writes ids as hex; protobuf's JSON mapping wants base64. Convert in place."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_KEYS and isinstance(value, str) and value:
                node[key] = _id_to_base64(value)
            else:
                _hex_ids_to_base64(value)
    elif isinstance(node, list):
        for item in node:
            _hex_ids_to_base64(item)
    return node


def _id_to_base64(value: str) -> str:
    if len(value) in (16, 32):
        try:
            return base64.b64encode(bytes.fromhex(value)).decode()
        except ValueError:
            pass
    return value  # already base64 (some exporters), or invalid: SpanBatch rejects it later


def _parse_dict(obj: dict, message):
    try:
        return json_format.ParseDict(_hex_ids_to_base64(obj), message, ignore_unknown_fields=True)
    except RecursionError:
        # ParseDict stops at 100 levels, but the id walk before it (and ParseDict itself when the
        # stack is already deep) can run out first; deep nesting is the document's fault.
        raise json_format.ParseError("nested too deeply (OTLP JSON nests a few levels; attribute "
                                     "values at most 100)") from None
    except (TypeError, AttributeError, OverflowError) as exc:
        # a JSON value of an unexpected shape that ParseDict does not turn into a ParseError
        raise json_format.ParseError(f"{type(exc).__name__}: {exc}") from None


def traces_data_from_json(obj: dict) -> TracesData:
    """Parse an OTLP JSON document ({"resourceSpans": [...]}) into a TracesData message.

    Raises google.protobuf.json_format.ParseError on a document that is not OTLP JSON.
    """
    return _parse_dict(obj, TracesData())


def export_request_from_json(obj: dict) -> ExportTraceServiceRequest:
    """Parse an OTLP/HTTP JSON request body into an ExportTraceServiceRequest (or ParseError)."""
    return _parse_dict(obj, ExportTraceServiceRequest())


# What decoding a hostile body can raise besides BadRequest/TooLarge: the standard library's JSON
# parser raises RecursionError on deep nesting, and protobuf's upb raises SystemError when the
# Python stack runs out inside it. The receivers answer these 400 / INVALID_ARGUMENT: the body
# caused them. (RuntimeError itself is not here: a lost decode worker or a closed pool is ours.)
UNDECODABLE = (RecursionError, SystemError, UnicodeError, OverflowError, TypeError, KeyError,
               IndexError, ValueError)


def undecodable_message(exc: BaseException) -> str:
    """The 400 message for one of UNDECODABLE."""
    if isinstance(exc, RecursionError | SystemError):
        return "body is nested too deeply to decode (OTLP nests a few levels)"
    return f"body is not a valid OTLP export request ({type(exc).__name__}: {exc})"
