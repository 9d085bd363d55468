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

from collector.loaders.sink import FileSink
from collector.otlp import add_resource_spans, traces_data_from_json

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
        try:
            data = traces_data_from_json({"resourceSpans": [rs]})
        except (json_format.ParseError, ValueError, TypeError) as exc:
            _load_span_by_span(rs, sink, place, exc)
            continue
        add_resource_spans(sink.batch, data.resource_spans, where=f"{sink.result.path}:{place}: ")
        sink.maybe_flush()


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
