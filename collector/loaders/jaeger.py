"""Jaeger JSON: the query API's `{"data": [trace, ...]}` (also what the UI downloads), a bare
trace `{"traceID", "spans", "processes"}`, or a list of traces.

Mapping, as Jaeger's own OTLP translator does it in reverse: the first CHILD_OF reference in the
same trace is the parent (else the first FOLLOWS_FROM in the same trace); every other reference
is a link. Typed tags become attributes; `span.kind`, `otel.status_code`/`error`,
`otel.status_description`, `otel.scope.*` and `w3c.tracestate` become the fields they encode.
The process's serviceName and tags are the resource; logs are events (field `event` = name);
microseconds become nanoseconds. Ids shorter than 32/16 hex digits (64-bit trace ids, or Jaeger
dropping leading zeros) are left-padded.
"""

from __future__ import annotations

import base64

from choreoscope.collector import semconv as sc
from choreoscope.collector.loaders.sink import FileSink
from choreoscope.collector.spanbatch import Link, pop_non_otlp_dropped

_KINDS = {"client": "CLIENT", "server": "SERVER", "producer": "PRODUCER", "consumer": "CONSUMER",
          "internal": "INTERNAL"}
_CONSUMED_TAGS = {sc.JAEGER_SPAN_KIND, sc.JAEGER_STATUS_CODE, sc.JAEGER_STATUS_DESCRIPTION,
                  sc.JAEGER_TRACE_STATE, *sc.JAEGER_SCOPE_NAME, *sc.JAEGER_SCOPE_VERSION}


class JaegerFormatError(ValueError):
    pass


def traces_of(obj) -> list | None:
    """The Jaeger traces a JSON document holds, or None if it is not Jaeger JSON."""
    if isinstance(obj, dict):
        if isinstance(obj.get("data"), list) and all(_is_trace(t) for t in obj["data"]):
            return obj["data"]
        if _is_trace(obj):
            return [obj]
    if isinstance(obj, list) and obj and all(_is_trace(t) for t in obj):
        return obj
    return None


def _is_trace(obj) -> bool:
    return isinstance(obj, dict) and "spans" in obj and ("traceID" in obj or "processes" in obj)


def tag_value(tag: dict):
    """A Jaeger typed tag's value as a Python value."""
    kind = str(tag.get("type", "string")).lower()
    value = tag.get("value")
    if kind in ("int64", "int"):
        return int(value)
    if kind in ("float64", "float"):
        return float(value)
    if kind == "bool":
        return value if isinstance(value, bool) else str(value).lower() == "true"
    if kind == "binary":
        return base64.b64decode(value) if isinstance(value, str) else value
    return value


def tags_to_dict(tags) -> dict:
    if not tags:
        return {}
    if isinstance(tags, dict):  # some exporters write {"key": value}
        return dict(tags)
    return {t["key"]: tag_value(t) for t in tags}


def load_traces(traces: list, sink: FileSink, where: str) -> None:
    for ti, trace in enumerate(traces):
        processes = trace.get("processes") or {}
        spans = trace.get("spans") or []
        if not isinstance(spans, list):
            sink.error(f"{where}trace {ti}", f"not a Jaeger trace (`spans` is {type(spans).__name__}, "
                                            "not a list); skipped")
            continue
        for si, span in enumerate(spans):
            place = f"{where}trace {ti} span {si}"
            try:
                _add_span(span, processes, sink, place)
            except (KeyError, TypeError, ValueError, AttributeError, OverflowError, IndexError) as exc:
                sink.error(place, f"not a valid Jaeger span ({type(exc).__name__}: {exc}); skipped")
                sink.result.spans_rejected += 1
            sink.maybe_flush()


def _add_span(span: dict, processes: dict, sink: FileSink, place: str) -> None:
    trace_id = span["traceID"]
    attrs = tags_to_dict(span.get("tags"))
    process = span.get("process") or processes.get(span.get("processID")) or {}
    resource = tags_to_dict(process.get("tags"))
    if process.get("serviceName"):
        resource[sc.SERVICE_NAME] = process["serviceName"]

    parent = None
    links: list[Link] = []
    refs = [r for r in span.get("references") or [] if isinstance(r, dict)]
    same_trace = [r for r in refs if _same_id(r.get("traceID"), trace_id)]
    for ref_type in ("CHILD_OF", "FOLLOWS_FROM"):
        for r in same_trace:
            if str(r.get("refType", "CHILD_OF")).upper() == ref_type:
                parent = r
                break
        if parent is not None:
            break
    for r in refs:
        if r is not parent:
            links.append(Link(r["traceID"], r["spanID"]))

    kind = _KINDS.get(str(attrs.get(sc.JAEGER_SPAN_KIND, "")).lower(), "UNSPECIFIED")
    status = str(attrs.get(sc.JAEGER_STATUS_CODE, "")).upper()
    if status not in ("OK", "ERROR"):
        status = "ERROR" if attrs.get(sc.JAEGER_ERROR) in (True, "true") else "UNSET"
    events = []
    for log in span.get("logs") or []:
        fields = tags_to_dict(log.get("fields"))
        name = fields.pop(sc.JAEGER_EVENT_NAME, "")
        events.append({"name": str(name), "time_ns": int(log["timestamp"]) * 1000, "attributes": fields})
    start_us = int(span["startTime"])
    duration_us = int(span.get("duration") or 0)
    attributes = {k: v for k, v in attrs.items()
                  if k not in _CONSUMED_TAGS and not (k == sc.JAEGER_ERROR and _is_bool(v))}
    dropped_attributes, dropped_events, dropped_links = pop_non_otlp_dropped(attributes)
    sink.batch.add(
        trace_id=trace_id,
        span_id=span["spanID"],
        parent_span_id=parent["spanID"] if parent else None,
        trace_state=attrs.get(sc.JAEGER_TRACE_STATE),
        name=span.get("operationName", ""),
        kind=kind,
        start_ns=start_us * 1000,
        end_ns=(start_us + duration_us) * 1000,
        status_code=status,
        status_message=attrs.get(sc.JAEGER_STATUS_DESCRIPTION),
        attributes=attributes,
        resource_attributes=resource,
        scope_name=sc.first(attrs, sc.JAEGER_SCOPE_NAME),
        scope_version=sc.first(attrs, sc.JAEGER_SCOPE_VERSION),
        events=events,
        links=links,
        dropped_attributes_count=dropped_attributes,
        dropped_events_count=dropped_events,
        dropped_links_count=dropped_links,
        id_pad=True,
        where=f"{sink.result.path}:{place} (span {span.get('spanID')!r}, {span.get('operationName')!r})",
    )


def _is_bool(value) -> bool:
    """`error` tags that only flag the status (true/false) are consumed; a message string stays."""
    return isinstance(value, bool) or str(value).lower() in ("true", "false")


def _same_id(a, b) -> bool:
    if not isinstance(a, str) or not isinstance(b, str):
        return False
    return a.lower().lstrip("0") == b.lower().lstrip("0")
