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
from choreoscope.collector.loaders import walked_arrow
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
    out = {}
    for t in tags:
        key = t["key"]
        # tag_value, inline for the two types nearly every tag has
        kind = t.get("type", "string")
        if kind == "string":
            out[key] = t.get("value")
        elif kind == "int64" and type(value := t.get("value")) is int:
            out[key] = value
        else:
            out[key] = tag_value(t)
    return out


def load_traces(traces: list, sink: FileSink, where: str, first: int = 0) -> None:
    """Add the spans of these traces (`first`: the first one's index in the document, for the
    messages). Runs of traces of CHUNK_SPANS spans or more are stored by columns
    (collector/loaders/walked_arrow.py); a run that path cannot reproduce exactly is walked span
    by span into the sink's batch, which words any problem."""
    if not walked_arrow.COLUMNAR:
        _walk_traces(traces, sink, where, first)
        return
    path = sink.result.path
    walked_arrow.store_in_order(
        walked_arrow.runs([_size(t) for t in traces], sink.chunk_spans),
        lambda run: _columns(traces[run[0]:run[1]], path),
        lambda run: _walk_traces(traces[run[0]:run[1]], sink, where, first + run[0]), sink)


def _size(trace: dict) -> int:
    spans = trace.get("spans")
    return len(spans) if isinstance(spans, list) else 1


def _columns(traces: list, path: str):
    """The store tables of these traces' spans, or None when they must be walked."""
    batch = walked_arrow.ColumnBatch(path)
    resources: dict = {}
    try:
        for trace in traces:
            processes = trace.get("processes") or {}
            spans = trace.get("spans") or []
            if not isinstance(spans, list):
                return None
            batch.rows.extend(span_fields(span, processes, resources) for span in spans)
        return batch.tables() if len(batch) else None
    except walked_arrow.ERRORS:  # a span the walk rejects, or a value the columns do not take
        return None


def _walk_traces(traces: list, sink: FileSink, where: str, first: int) -> None:
    resources: dict = {}
    for ti, trace in enumerate(traces, start=first):
        processes = trace.get("processes") or {}
        spans = trace.get("spans") or []
        if not isinstance(spans, list):
            sink.error(f"{where}trace {ti}", f"not a Jaeger trace (`spans` is {type(spans).__name__}, "
                                            "not a list); skipped")
            continue
        for si, span in enumerate(spans):
            place = f"{where}trace {ti} span {si}"
            try:
                sink.batch.add(**dict(zip(walked_arrow.FIELDS, span_fields(span, processes, resources))), id_pad=True,
                               where=f"{sink.result.path}:{place} (span {span.get('spanID')!r}, "
                                     f"{span.get('operationName')!r})")
            except (KeyError, TypeError, ValueError, AttributeError, OverflowError, IndexError) as exc:
                sink.error(place, f"not a valid Jaeger span ({type(exc).__name__}: {exc}); skipped")
                sink.result.spans_rejected += 1
            sink.maybe_flush()


def _resource(process, resources: dict) -> dict:
    """The process's serviceName and tags as the resource; one dict per process (`resources`
    holds them by the process object's id and keeps the object, so the id is not reused)."""
    hit = resources.get(id(process))
    if hit is not None and hit[0] is process:
        return hit[1]
    resource = tags_to_dict(process.get("tags"))
    if process.get("serviceName"):
        resource[sc.SERVICE_NAME] = process["serviceName"]
    if all(type(v) is str for v in resource.values()):
        # every trace repeats its processes: one dict per content too (text values only: 1 and True
        # are equal keys), so the resource's JSON is made once
        resource = resources.setdefault(tuple(resource.items()), resource)
    resources[id(process)] = (process, resource)
    return resource


def span_fields(span: dict, processes: dict, resources: dict) -> tuple:
    """One Jaeger span as `SpanBatch.add`'s fields (ids as sent: `id_pad` normalises them).
    Raises KeyError, TypeError, ValueError, ... for a span that is not valid Jaeger JSON."""
    trace_id = span["traceID"]
    attrs = tags_to_dict(span.get("tags"))
    process = span.get("process") or processes.get(span.get("processID")) or {}
    resource = _resource(process, resources)

    parent = None
    links: list[Link] = []
    refs = span.get("references")
    if refs:
        refs = [r for r in refs if isinstance(r, dict)]
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

    get = attrs.get
    kind = _KINDS.get(str(get(sc.JAEGER_SPAN_KIND, "")).lower(), "UNSPECIFIED")
    status = str(get(sc.JAEGER_STATUS_CODE, "")).upper()
    if status not in ("OK", "ERROR"):
        status = "ERROR" if get(sc.JAEGER_ERROR) in (True, "true") else "UNSET"
    events = []
    for log in span.get("logs") or []:
        fields = tags_to_dict(log.get("fields"))
        name = fields.pop(sc.JAEGER_EVENT_NAME, "")
        events.append({"name": str(name), "time_ns": int(log["timestamp"]) * 1000, "attributes": fields})
    start_us = int(span["startTime"])
    duration_us = int(span.get("duration") or 0)
    trace_state = get(sc.JAEGER_TRACE_STATE)
    status_message = get(sc.JAEGER_STATUS_DESCRIPTION)
    scope_name = sc.first(attrs, sc.JAEGER_SCOPE_NAME)
    scope_version = sc.first(attrs, sc.JAEGER_SCOPE_VERSION)
    # the attributes: the tags but those the fields above consumed (attrs is this span's own dict)
    for key in attrs.keys() & _CONSUMED_TAGS:
        del attrs[key]
    if sc.JAEGER_ERROR in attrs and _is_bool(attrs[sc.JAEGER_ERROR]):
        del attrs[sc.JAEGER_ERROR]
    dropped_attributes, dropped_events, dropped_links = pop_non_otlp_dropped(attrs)
    # a walked_arrow.SpanFields row, as a plain tuple (a NamedTuple costs ~1 µs more a span)
    return (trace_id, span["spanID"], parent["spanID"] if parent else None, trace_state,
            span.get("operationName", ""), kind, start_us * 1000, (start_us + duration_us) * 1000, status,
            status_message, attrs, resource, scope_name, scope_version, events, links, dropped_attributes,
            dropped_events, dropped_links)


def _is_bool(value) -> bool:
    """`error` tags that only flag the status (true/false) are consumed; a message string stays."""
    return isinstance(value, bool) or str(value).lower() in ("true", "false")


def _same_id(a, b) -> bool:
    if not isinstance(a, str) or not isinstance(b, str):
        return False
    return a == b or a.lower().lstrip("0") == b.lower().lstrip("0")
