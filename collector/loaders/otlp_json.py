"""OTLP JSON dumps: the Collector file exporter's lines, whole documents, and API envelopes.

Accepted shapes (each may be one line of a JSON-lines file or a whole, pretty-printed file):
`{"resourceSpans": [...]}` (file exporter, OTLP/HTTP JSON), Jaeger's v3 API envelope
`{"result": {"resourceSpans": [...]}}`, Tempo's `{"batches": [...]}`, and the pre-1.0 name
`instrumentationLibrarySpans`. Lines holding `resourceMetrics` / `resourceLogs` are not traces
and are skipped without complaint. Each ResourceSpans is decoded on its own, and if one fails
its spans are retried one by one, so a bad span costs only itself.
"""

from __future__ import annotations

import base64
import binascii

from google.protobuf import json_format

from choreoscope.collector import semconv as sc
from choreoscope.collector.loaders.sink import FileSink
from choreoscope.collector.otlp import add_resource_spans, traces_data_from_json
from choreoscope.collector.spanbatch import Link

NON_TRACE_KEYS = ("resourceMetrics", "resourceLogs", "resourceProfiles")


def resource_spans_of(obj) -> list | None:
    """The list of ResourceSpans (as JSON dicts) an OTLP-ish document holds, or None if it is not one."""
    if not isinstance(obj, dict):
        return None
    if "resourceSpans" in obj:
        return obj["resourceSpans"] or []
    result = obj.get("result")
    if isinstance(result, dict) and "resourceSpans" in result:
        return result["resourceSpans"] or []
    if isinstance(obj.get("batches"), list):
        return obj["batches"]
    return None


def is_non_trace_signal(obj) -> bool:
    return isinstance(obj, dict) and "resourceSpans" not in obj and any(k in obj for k in NON_TRACE_KEYS)


def _modernise(rs: dict) -> dict:
    """Rename the pre-1.0 `instrumentationLibrarySpans`/`instrumentationLibrary` to scope names."""
    if "instrumentationLibrarySpans" in rs and "scopeSpans" not in rs:
        rs = dict(rs)
        rs["scopeSpans"] = [
            {("scope" if k == "instrumentationLibrary" else k): v for k, v in ils.items()}
            for ils in rs.pop("instrumentationLibrarySpans") or []
            if isinstance(ils, dict)
        ]
    return rs


def load_resource_spans(items: list, sink: FileSink, where: str) -> None:
    """Decode and add each ResourceSpans; `where` is the line number or "" for a whole document."""
    if not isinstance(items, list):
        sink.error(where, f"resourceSpans must be a list, found {type(items).__name__}")
        return
    for i, rs in enumerate(items):
        place = f"{where}: resourceSpans[{i}]" if where else f"resourceSpans[{i}]"
        if not isinstance(rs, dict):
            sink.error(place, f"expected an object, found {type(rs).__name__}")
            continue
        rs = _modernise(rs)
        batch = sink.batch
        marks = (len(batch.rows), len(batch.link_rows), len(batch.rejected))
        try:
            _add_resource_spans_fast(rs, sink, place)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError, binascii.Error):
            # Something unusual: undo the partial walk and let the protobuf decoder name the problem.
            # (OverflowError: int() of an Infinity, which Python's JSON reads, as a time or a count.)
            del batch.rows[marks[0]:], batch.link_rows[marks[1]:], batch.rejected[marks[2]:]
        else:
            sink.maybe_flush()
            continue
        try:
            data = traces_data_from_json({"resourceSpans": [rs]})
        except (json_format.ParseError, ValueError, TypeError) as exc:
            _load_span_by_span(rs, sink, place, exc)
            continue
        add_resource_spans(sink.batch, data.resource_spans, where=f"{sink.result.path}:{place}: ")
        sink.maybe_flush()


_KIND_NAMES = {f"SPAN_KIND_{k}": k for k in sc.SPAN_KINDS}
_STATUS_NAMES = {f"STATUS_CODE_{k}": k for k in sc.STATUS_CODES}


def _any_value(value: dict):
    """An OTLP JSON AnyValue as the same Python value `collector.otlp.any_value` gives."""
    if not value:
        return None
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return int(value["intValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "arrayValue" in value:
        return [_any_value(v) for v in (value["arrayValue"] or {}).get("values", [])]
    if "kvlistValue" in value:
        return key_values((value["kvlistValue"] or {}).get("values"))
    if "bytesValue" in value:
        return base64.b64decode(value["bytesValue"], validate=True)
    raise ValueError(f"unknown AnyValue {sorted(value)}")


def key_values(kvs) -> dict:
    """OTLP JSON KeyValues as the walk's dict (a key sent twice: its first place, its last value)."""
    out = {}
    for kv in kvs or ():
        key = kv["key"]
        value = kv.get("value")
        # Most values are strings: read them inline (`_any_value` gives the same for them).
        text = value.get("stringValue") if value else None
        out[key] = text if text is not None else _any_value(value)
    return out


def _enum(value, names: dict, table: tuple) -> str:
    if isinstance(value, int):
        return table[value] if 0 <= value < len(table) else table[0]
    if value is None:
        return table[0]
    return names[value]


def _add_resource_spans_fast(rs: dict, sink: FileSink, place: str) -> None:
    """Walk one OTLP JSON ResourceSpans straight into the batch — the same fields, in the same
    form, as `collector.otlp.add_resource_spans` gives from the decoded message, several times
    faster than protobuf's JSON parser. Raises on anything unusual (the caller then falls back
    to the exact decoder)."""
    res = key_values((rs.get("resource") or {}).get("attributes"))
    where = f"{sink.result.path}:{place}: "
    add = sink.batch.add
    for ss in rs.get("scopeSpans") or ():
        scope = ss.get("scope") or {}
        scope_name = scope.get("name", "")
        scope_version = scope.get("version", "")
        for span in ss.get("spans") or ():
            get = span.get
            status = get("status") or _EMPTY
            kind = get("kind")
            code = status.get("code")
            events = get("events")
            links = get("links")
            # the sender's dropped attributes: the span's own, and its events' and links' (as
            # collector.otlp sums them; a count the exact decoder would refuse raises here too)
            dropped_attributes = int(get("droppedAttributesCount", 0))
            if events:
                dropped_attributes += sum(int(e.get("droppedAttributesCount", 0)) for e in events)
            if links:
                dropped_attributes += sum(int(lk.get("droppedAttributesCount", 0)) for lk in links)
            add(
                trace_id=get("traceId", ""),
                span_id=get("spanId", ""),
                parent_span_id=get("parentSpanId") or None,
                trace_state=get("traceState", ""),
                name=get("name", ""),
                kind=_enum(kind, _KIND_NAMES, sc.SPAN_KINDS),
                start_ns=int(get("startTimeUnixNano", 0)),
                end_ns=int(get("endTimeUnixNano", 0)),
                status_code=_enum(code, _STATUS_NAMES, sc.STATUS_CODES),
                status_message=status.get("message", ""),
                attributes=key_values(get("attributes")),
                resource_attributes=res,
                scope_name=scope_name,
                scope_version=scope_version,
                events=[
                    {"name": e.get("name", ""), "time_ns": int(e.get("timeUnixNano", 0)),
                     "attributes": key_values(e.get("attributes"))}
                    for e in events
                ] if events else None,
                links=[
                    Link(lk.get("traceId", ""), lk.get("spanId", ""), lk.get("traceState", ""),
                         key_values(lk.get("attributes")))
                    for lk in links
                ] if links else None,
                dropped_attributes_count=dropped_attributes,
                dropped_events_count=int(get("droppedEventsCount", 0)),
                dropped_links_count=int(get("droppedLinksCount", 0)),
                where=_SpanPlace(where, span),
            )


_EMPTY: dict = {}


class _SpanPlace:
    """A span's place for a rejection message, formatted only if the span is rejected."""

    __slots__ = ("prefix", "span")

    def __init__(self, prefix: str, span: dict) -> None:
        self.prefix = prefix
        self.span = span

    def __call__(self) -> str:
        return f"{self.prefix}span {self.span.get('spanId', '') or '?'} ({self.span.get('name', '')!r})"


def _load_span_by_span(rs: dict, sink: FileSink, place: str, first_error: Exception) -> None:
    """A ResourceSpans failed to decode: keep every span that decodes, report each that does not."""
    scope_spans = rs.get("scopeSpans")
    if not isinstance(scope_spans, list):
        sink.error(place, f"not valid OTLP JSON ({first_error}); skipped")
        return
    resource = rs.get("resource") or {}
    for j, ss in enumerate(scope_spans):
        spans = ss.get("spans") if isinstance(ss, dict) else None
        if not isinstance(spans, list):
            sink.error(f"{place}.scopeSpans[{j}]", f"not valid OTLP JSON ({first_error}); skipped")
            continue
        for k, span in enumerate(spans):
            single = {"resource": resource, "scopeSpans": [{"scope": ss.get("scope") or {}, "spans": [span]}]}
            try:
                data = traces_data_from_json({"resourceSpans": [single]})
            except (json_format.ParseError, ValueError, TypeError) as exc:
                name = span.get("name") if isinstance(span, dict) else None
                span_id = _hex(span.get("spanId")) if isinstance(span, dict) else None
                sink.error(f"{place}.scopeSpans[{j}].spans[{k}]",
                           f"span {span_id} ({name!r}) is not valid OTLP JSON: {exc}; skipped")
                sink.result.spans_rejected += 1
                continue
            add_resource_spans(sink.batch, data.resource_spans, where=f"{sink.result.path}:{place}: ")
    sink.maybe_flush()


def _hex(span_id) -> str:
    """A span id for an error message: ids were turned to base64 for the decoder; show them as hex."""
    if isinstance(span_id, str) and len(span_id) == 12:
        try:
            return base64.b64decode(span_id, validate=True).hex()
        except (binascii.Error, ValueError):
            pass
    return repr(span_id)
