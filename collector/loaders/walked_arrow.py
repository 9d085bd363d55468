"""Spans mapped in Python, stored by columns: the Jaeger and Zipkin loaders' fast path (issue #17).

The Jaeger and Zipkin loaders map each record to SpanBatch.add's neutral form (hex ids,
attribute dicts, kind and status names: a `SpanFields` row). `SpanBatch.add` then derives every
store column span by span (typed columns, JSON, limits), and its rows are converted to Arrow
after: about half the walk's CPU. Here a run of those rows is turned into columns in the shape
ptars gives an OTLP protobuf request (the proto's field names, ids as hex text, kinds and status
codes as the enums' numbers, one AnyValue member per value), and collector/otlp_arrow.py `tables`
derives the store columns from them: the one normalisation of columns the OTLP loaders use,
which gives the rows SpanBatch.add gives.

It must give exactly those rows, so `ColumnBatch.tables` raises (Fallback, BadId, an Arrow
error) and the caller walks the run into SpanBatch instead, which words any rejection, for a run
with a span that SpanBatch.add would reject or store its own way: `tables`'s conditions
(collector/otlp_arrow.py's docstring: no `null` in any JSON text, nothing the limits cut, no link
twice on one span, ...), and

- an id that normalize_id (as SpanBatch.add(id_pad=True) calls it) refuses;
- a start or end time missing (SpanBatch stores NULL, the proto shape has no NULL) or negative;
  a name, trace state, status message or scope that is not text (or empty);
- an attribute value that is not text, an integer of the int64 range, a bool or a float (lists,
  maps, bytes, None: SpanBatch writes those its own way), an attribute key that is not text;
- a link with a trace state or attributes (neither format has them), an event time that is not
  a non-negative integer.

`store_in_order` stores the runs' tables in order and walks a refused run in its place, so the
store's rows and the messages stay in file order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pyarrow as pa

from choreoscope.collector import otlp_arrow as oa
from choreoscope.collector import semconv as sc
from choreoscope.collector.loaders.sink import FileSink
from choreoscope.collector.spanbatch import (
    _HEX_SPAN,
    _HEX_TRACE,
    _ZERO_SPAN,
    _ZERO_TRACE,
    BadId,
    normalize_id,
)

Fallback = oa.Fallback
# False: every span is walked into SpanBatch (the tests compare the two paths)
COLUMNAR = True
# What a caller catches to walk its records instead: Fallback, an Arrow conversion's refusal, or
# what the loader's own mapping raises for a record the walk rejects (with its message).
ERRORS = (Fallback, pa.ArrowException, KeyError, TypeError, ValueError, AttributeError, OverflowError,
          IndexError)

KIND_CODES = {name: code for code, name in enumerate(sc.SPAN_KINDS)}
STATUS_CODES = {name: code for code, name in enumerate(sc.STATUS_CODES)}

_STRING, _INT64, _UINT64, _UINT32, _BOOL, _DOUBLE = (pa.string(), pa.int64(), pa.uint64(), pa.uint32(),
                                                     pa.bool_(), pa.float64())
_SCALAR_TYPES = frozenset((str, int, bool, float))
_EMPTY_ARRAY_TYPE = pa.struct([("values", pa.list_(pa.struct([])))])


def _key_values(dicts: list[dict]) -> pa.ListArray:
    """Attribute dicts (a span's, or an event's) as ptars gives `attributes`:
    list<struct<key, value: AnyValue>>, one AnyValue member set per value."""
    keys = [k for d in dicts for k in d]
    values = [v for d in dicts for v in d.values()]
    n = len(values)
    kinds = set(map(type, values))
    oa.fallback_if(not kinds <= _SCALAR_TYPES)
    members = []
    for kind, arrow_type in ((str, _STRING), (bool, _BOOL), (int, _INT64), (float, _DOUBLE)):
        if kind not in kinds:
            members.append(pa.nulls(n, arrow_type))
        elif len(kinds) == 1:
            members.append(pa.array(values, arrow_type))
        else:
            members.append(pa.array([v if type(v) is kind else None for v in values], arrow_type))
    any_value = pa.StructArray.from_arrays(
        [*members, pa.nulls(n, _EMPTY_ARRAY_TYPE), pa.nulls(n, _BOOL), pa.nulls(n, _BOOL), pa.nulls(n, _INT64)],
        names=oa.ANY_VALUE_FIELDS)
    pairs = pa.StructArray.from_arrays([pa.array(keys, _STRING), any_value], names=["key", "value"])
    return _list(list(map(len, dicts)), pairs)


def _offsets(lengths: list[int]) -> pa.Array:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(np.asarray(lengths, dtype=np.int64), out=offsets[1:])
    return pa.array(offsets)


def _list(lengths: list[int], values: pa.Array) -> pa.ListArray:
    return pa.ListArray.from_arrays(_offsets(lengths), values)


_HEX_DIGIT = np.zeros(256, dtype=bool)
_HEX_DIGIT[np.frombuffer(b"0123456789abcdef", dtype=np.uint8)] = True


def _stored_form(ids: pa.Array, width: int, *, parent: bool = False) -> bool:
    """Whether every id is lowercase hex of `width` bytes and not all zeros: as SpanBatch.add
    takes it (a parent may also be empty or all zeros: no parent, as otlp_arrow reads it)."""
    if ids.null_count or not len(ids):
        return not ids.null_count
    offsets = np.frombuffer(ids.buffers()[1], dtype=np.int32)[ids.offset:ids.offset + len(ids) + 1]
    lengths = np.diff(offsets)
    full = lengths == 2 * width
    if not (full | (lengths == 0)).all() if parent else not full.all():
        return False
    if offsets[-1] == offsets[0]:
        return True
    chars = np.frombuffer(ids.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]]
    if not _HEX_DIGIT[chars].all():
        return False
    return parent or bool((chars.reshape(-1, 2 * width) != 0x30).any(axis=1).all())


def _ids(ids: list, nbytes: int, what: str) -> pa.Array:
    """Trace or span ids as SpanBatch.add(id_pad=True) stores them; BadId for one it rejects."""
    if set(map(type, ids)) == {str}:  # (Arrow would take bytes as text too)
        out = pa.array(ids, _STRING)
        if _stored_form(out, nbytes):
            return out
    hex_id = _HEX_TRACE if nbytes == 16 else _HEX_SPAN
    zero = _ZERO_TRACE if nbytes == 16 else _ZERO_SPAN
    return pa.array([i if type(i) is str and hex_id(i) and i != zero else normalize_id(i, nbytes, what, pad=True)
                     for i in ids], _STRING)


def _parent_ids(ids: list) -> pa.Array:
    """Parent span ids as SpanBatch.add(id_pad=True) takes them ("": none); BadId as it rejects."""
    if set(map(type, ids)) <= {str, type(None)}:
        out = pa.array(["" if i is None else i for i in ids], _STRING)
        if _stored_form(out, 8, parent=True):
            return out
    return pa.array([_parent_id(p) for p in ids], _STRING)


def _parent_id(value) -> str:
    """A parent span id as SpanBatch.add(id_pad=True) takes it ("": none)."""
    if value is None or value == "" or value == b"":
        return ""
    if type(value) is str and _HEX_SPAN(value) and value != _ZERO_SPAN:
        return value
    try:
        return normalize_id(value, 8, "parent span id", pad=True)
    except BadId as exc:
        if "all zeros" not in str(exc):
            raise
        return ""


def _texts(values: list) -> pa.Array:
    """SpanBatch's `value or None` for a text column, as text ("": none); another type fails."""
    return pa.array([v or "" for v in values], _STRING)


class SpanFields(NamedTuple):
    """SpanBatch.add's keyword arguments (but `id_pad`, taken as True, and `where`), as a row."""

    trace_id: object
    span_id: object
    parent_span_id: object
    trace_state: object
    name: object
    kind: str
    start_ns: object
    end_ns: object
    status_code: str
    status_message: object
    attributes: dict
    resource_attributes: dict
    scope_name: object
    scope_version: object
    events: list
    links: list
    dropped_attributes_count: int
    dropped_events_count: int
    dropped_links_count: int


FIELDS = SpanFields._fields


class ColumnBatch:
    """Spans in SpanBatch.add's neutral form (`SpanFields`), kept until `tables` makes the store
    rows: the rows SpanBatch.add and its `to_arrow` would make, in the order added."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.rows: list[tuple] = []  # SpanFields rows (plain tuples will do)

    def __len__(self) -> int:
        return len(self.rows)

    def tables(self) -> tuple[pa.Table, pa.Table]:
        """The span and link tables (collector/otlp_arrow.py `tables`); raises Fallback, BadId or
        an Arrow error (a value of the wrong type or range) for what the walk must do."""
        n = len(self.rows)
        column = dict(zip(FIELDS, map(list, zip(*self.rows))))
        starts, ends = pa.array(column["start_ns"], _UINT64), pa.array(column["end_ns"], _UINT64)
        oa.fallback_if(starts.null_count or ends.null_count)  # SpanBatch stores NULL, the proto 0
        oa.fallback_if(any(type(t) is not int for t in column["start_ns"]))
        oa.fallback_if(any(type(t) is not int for t in column["end_ns"]))
        events = [e for s in column["events"] if s for e in s]
        event_names = [e["name"] for e in events]
        event_times = [e["time_ns"] for e in events]
        oa.fallback_if(any(type(e) is not str for e in event_names) or any(type(t) is not int for t in event_times))
        event_array = pa.StructArray.from_arrays([
            pa.array(event_times, _UINT64), pa.array(event_names, _STRING),
            _key_values([e["attributes"] for e in events]), pa.repeat(pa.scalar(0, _UINT32), len(events)),
        ], names=["time_unix_nano", "name", "attributes", "dropped_attributes_count"])
        links = [lk for s in column["links"] if s for lk in s]
        oa.fallback_if(any(lk.trace_state or lk.attributes for lk in links))
        m = len(links)
        link_array = pa.StructArray.from_arrays([
            _ids([lk.trace_id for lk in links], 16, "link trace id"),
            _ids([lk.span_id for lk in links], 8, "link span id"),
            pa.repeat(pa.scalar("", _STRING), m), _key_values([{}] * m), pa.repeat(pa.scalar(0, _UINT32), m),
        ], names=["trace_id", "span_id", "trace_state", "attributes", "dropped_attributes_count"])
        span_array = pa.StructArray.from_arrays([
            _ids(column["trace_id"], 16, "trace id"), _ids(column["span_id"], 8, "span id"),
            _parent_ids(column["parent_span_id"]),
            _texts(column["trace_state"]), _texts(column["name"]),
            pa.array([KIND_CODES[k] for k in column["kind"]], _INT64), starts, ends,
            _key_values(column["attributes"]), pa.array(column["dropped_attributes_count"], _UINT32),
            _list([len(e) if e else 0 for e in column["events"]], event_array),
            pa.array(column["dropped_events_count"], _UINT32),
            _list([len(lk) if lk else 0 for lk in column["links"]], link_array),
            pa.array(column["dropped_links_count"], _UINT32),
            pa.StructArray.from_arrays([pa.array([STATUS_CODES[c] for c in column["status_code"]], _INT64),
                                        _texts(column["status_message"])], names=["code", "message"]),
        ], names=["trace_id", "span_id", "parent_span_id", "trace_state", "name", "kind",
                  "start_time_unix_nano", "end_time_unix_nano", "attributes", "dropped_attributes_count",
                  "events", "dropped_events_count", "links", "dropped_links_count", "status"])
        # resource spans: runs of spans of one resource; scope spans: runs of one scope in them
        resources, rs_lengths, scopes, ss_lengths = [], [], [], []
        last_resource, last_scope = None, None
        for resource, scope in zip(column["resource_attributes"],
                                   zip(column["scope_name"], column["scope_version"])):
            if resource is not last_resource:
                resources.append(resource)
                rs_lengths.append(0)
                last_resource, last_scope = resource, None
            if scope != last_scope:
                scopes.append(scope)
                ss_lengths.append(0)
                rs_lengths[-1] += 1
                last_scope = scope
            ss_lengths[-1] += 1
        n_ss = len(scopes)
        scope = pa.StructArray.from_arrays([
            _texts([s[0] for s in scopes]), _texts([s[1] for s in scopes]),
            _list([0] * n_ss, pa.array([], pa.struct([("key", _STRING)]))),
        ], names=["name", "version", "attributes"])
        ss = pa.StructArray.from_arrays([scope, _list(ss_lengths, span_array)], names=["scope", "spans"])
        rs = pa.StructArray.from_arrays([_list(rs_lengths, ss)], names=["scope_spans"])
        batch = pa.RecordBatch.from_arrays([_list([len(resources)], rs)], names=["resource_spans"])
        assert len(span_array) == n
        return oa.tables(batch, self.source, resources=_resource_columns(resources))


def _resource_columns(resources: list[dict]) -> tuple[list[str], list[list]]:
    """oa.resource_columns, once per distinct resource dict (spans of one process share one)."""
    first: dict[int, int] = {}
    index = [first.setdefault(id(r), len(first)) for r in resources]
    distinct = list({id(r): r for r in resources}.values())
    texts, services = oa.resource_columns([r or {} for r in distinct])
    if len(distinct) == len(resources):
        return texts, services
    return [texts[i] for i in index], [[column[i] for i in index] for column in services]


def runs(sizes: list[int], chunk_spans: int) -> list[tuple[int, int]]:
    """(start, end) of consecutive items whose sizes (spans) add up to `chunk_spans` or more
    (the last run: what is left)."""
    out, start, total = [], 0, 0
    for i, size in enumerate(sizes):
        total += size
        if total >= chunk_spans:
            out.append((start, i + 1))
            start, total = i + 1, 0
    if start < len(sizes):
        out.append((start, len(sizes)))
    return out


def store_in_order(items: list, decode: Callable, walk: Callable, sink: FileSink) -> None:
    """`decode(item)` each item (store tables, or None) and keep the tables in the sink, in item
    order; an item `decode` leaves (None) is `walk(item)`ed in its place (into the sink's batch).
    (Not in a thread beside the store's inserts, as parallel.run_in_threads does for the OTLP
    decodes: these decodes are Python, and DuckDB's insert of Arrow tables takes the GIL often
    enough that the two did not overlap; measured: 1.0 s of inserts and 1.8 s of Python, 2.7 s
    together in two threads.)"""
    for item in items:
        decoded = decode(item)
        if decoded is None:
            walk(item)
        else:
            sink.keep_after_batch(*decoded)
