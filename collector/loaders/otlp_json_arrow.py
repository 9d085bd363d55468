"""A columnar decode of OTLP JSON lines: the dump loader's fast path (issue #17).

The JSON loader walks each parsed line in Python (collector/loaders/otlp_json.py) into
`SpanBatch.add`, ~20 µs of CPU a span. Here Arrow's JSON reader (C++) parses a block of whole
lines into a nested Arrow table, which is given the shape ptars gives a protobuf request (the
proto's field names, ids as text, integers and enums cast, missing fields as proto3 defaults),
and collector/otlp_arrow.py `tables` makes the store rows from its columns: one normalisation of
columns for both wire formats, as `SpanBatch.add` is one for the walks.

It must give exactly the rows the walk gives, so a block comes here only if every line of it is
plain OTLP JSON the walk would take without a question; `decode_lines` returns None for any other
block and the caller walks it line by line (which words every error with its line). A block is
walked when it has:

- a line that is blank, not one JSON object, or holds `null` anywhere (Arrow reads null and
  absent alike; the walk does not), a CR (the walk reads universal newlines), bytes that are not
  UTF-8, a key twice in one object, or a field whose type changes between lines (Arrow refuses
  those);
- a line that is not `{"resourceSpans": [...]}` exactly (envelopes, Jaeger, Zipkin, metrics,
  the pre-1.0 `instrumentationLibrarySpans`);
- a value of a type the walk would convert its own way: ids not lowercase hex of their width,
  times or counts not integers (or integer text), an enum name it does not know, an attribute
  value member of another type than OTLP's (ints as integers or integer text);
- anything otlp_arrow's own conditions send to the walk (its module docstring).
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from choreoscope.collector import otlp_arrow as oa
from choreoscope.collector import semconv as sc
from choreoscope.collector.loaders.otlp_json import key_values

# a blank line (spaces and tabs at most) between two newlines: Arrow skips it, the walk counts it.
# (Patterns that start with a literal: re then looks for it as a string search does.)
_BLANK_LINE = re.compile(rb"\n[ \t]*\n")
_NULL = re.compile(rb"null")

_STRING, _INT64, _UINT64, _BOOL, _DOUBLE = pa.string(), pa.int64(), pa.uint64(), pa.bool_(), pa.float64()
_UINT32 = pa.uint32()  # the proto's counts
_RS_FIELDS = {"resource", "scopeSpans", "schemaUrl"}
_ANY_VALUE_MEMBERS = {"stringValue", "intValue", "boolValue", "doubleValue", "arrayValue", "kvlistValue",
                      "bytesValue"}


def decode_lines(block: bytes, source: str) -> tuple[pa.Table, pa.Table] | None:
    """The span and link tables the walk makes of these whole lines (none rejected), or None
    when they must be walked (see the module docstring)."""
    if b"\r" in block or _has_null_token(block) or _has_blank_line(block) or not _is_utf8(block):
        return None
    lines = block.count(b"\n") + (not block.endswith(b"\n"))
    try:
        read = pj.read_json(pa.BufferReader(block), read_options=pj.ReadOptions(
            use_threads=False, block_size=len(block) + 1))
    except Exception:  # noqa: BLE001 - Arrow's parse errors: the walk words them
        return None
    if read.column_names != ["resourceSpans"] or read.num_rows != lines:
        return None  # another shape, or two objects on a line (Arrow reads both)
    try:
        column = read.column(0).combine_chunks()
        if not pa.types.is_list(column.type) or not pa.types.is_struct(column.type.value_type) or column.null_count:
            return None  # a line without resourceSpans (`{}`) is the walk's to report
        batch, resources = _shaped(column)
        return oa.tables(batch, source, resources=resources)
    except (oa.Fallback, pa.ArrowException, ValueError, TypeError, OverflowError, KeyError):
        return None


def _is_utf8(block: bytes) -> bool:
    """Arrow's reader takes strings' bytes as they are, the walk replaces bad ones (U+FFFD); and a
    surrogate escaped (\\ud800) is the walk's (it falls back to the json module for lone ones)."""
    if block.isascii():
        return _SURROGATE_ESCAPE.search(block) is None
    try:
        block.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return _SURROGATE_ESCAPE.search(block) is None


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _has_null_token(block: bytes) -> bool:
    """Whether `null` is in the block as a JSON token (after a colon, a bracket or a comma: a
    string holding such text only costs a walk)."""
    if b"null" not in block:
        return False
    for found in _NULL.finditer(block):
        before = found.start()
        while before and block[before - 1] in b" \t\n":
            before -= 1
        if before and block[before - 1] in b":[,":
            return True
    return False


def _has_blank_line(block: bytes) -> bool:
    if _FIRST_BLANK.match(block) or _BLANK_LINE.search(block):
        return True
    if block.endswith((b" ", b"\t")):  # a last line without its newline
        rest = block.rstrip(b" \t")
        return not rest or rest.endswith(b"\n")
    return False


_FIRST_BLANK = re.compile(rb"[ \t]*(?:\n|\Z)")


# --- Arrow's JSON columns in ptars' shape ---------------------------------------------------

def _member(struct: pa.StructArray, name: str):
    """A struct's child with the struct's nulls applied, or None if no line has the field."""
    if struct.type.get_field_index(name) < 0:
        return None
    return oa.struct_field(struct, name)


def _items(lists) -> tuple[np.ndarray, pa.Array | None]:
    """(offsets from 0, the flat items) of a list array (null lists are empty), or of None."""
    if lists is None:
        return None, None
    oa.fallback_if(not pa.types.is_list(lists.type))
    offsets = lists.offsets.to_numpy()
    return offsets - offsets[0], oa.flat_items(lists)


def _list(offsets: np.ndarray | None, n: int, values: pa.Array) -> pa.ListArray:
    if offsets is None:
        offsets = np.zeros(n + 1, dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)


def _text(struct: pa.StructArray, name: str, n: int) -> pa.Array:
    """A string field, "" where it is absent (proto3's default, the walk's `get(name, "")`)."""
    values = _member(struct, name)
    if values is None:
        return pa.repeat(pa.scalar("", _STRING), n)
    oa.fallback_if(values.type != _STRING)
    return values.fill_null("")


def _integer(struct: pa.StructArray, name: str, n: int, to=_UINT64) -> pa.Array:
    """An integer field (a JSON integer or integer text: the walk's `int()`), 0 where absent.
    Negative or out-of-range values fail the cast: the walk rejects or refuses them."""
    values = _member(struct, name)
    if values is None:
        return pa.repeat(pa.scalar(0, to), n)
    oa.fallback_if(values.type not in (_INT64, _STRING))
    return values.cast(to).fill_null(0)


def _enum(struct: pa.StructArray, name: str, n: int, names: tuple[str, ...], prefix: str) -> pa.Array:
    """An enum as the walk's `_enum`: an integer, or its name (PREFIX_NAME), 0 where absent."""
    values = _member(struct, name)
    if values is None:
        return pa.repeat(pa.scalar(0, _INT64), n)
    if values.type == _STRING:
        known = pa.array([prefix + k for k in names], _STRING)
        codes = pc.index_in(values, value_set=known)
        oa.fallback_if(codes.null_count != values.null_count)  # a name the walk does not know
        return codes.cast(_INT64).fill_null(0)
    oa.fallback_if(values.type != _INT64)
    return values.fill_null(0)


def _any_values(values) -> pa.StructArray:
    """AnyValues (Arrow's struct of the members the lines use) as ptars' struct: every member,
    typed as the proto has them. A null value stays null (otlp_arrow sends it to the walk)."""
    oa.fallback_if(not pa.types.is_struct(values.type))
    oa.fallback_if({f.name for f in values.type} - _ANY_VALUE_MEMBERS)  # the walk's "unknown AnyValue"
    n = len(values)
    sv = _member(values, "stringValue")
    iv = _member(values, "intValue")
    bv = _member(values, "boolValue")
    dv = _member(values, "doubleValue")
    av = _member(values, "arrayValue")
    kv = _member(values, "kvlistValue")  # (only whether they are set is read: the walk takes them)
    by = _member(values, "bytesValue")
    oa.fallback_if(sv is not None and sv.type != _STRING)
    oa.fallback_if(iv is not None and iv.type not in (_INT64, _STRING))
    oa.fallback_if(bv is not None and bv.type != _BOOL)
    oa.fallback_if(dv is not None and dv.type not in (_DOUBLE, _INT64))
    if av is not None:
        oa.fallback_if(not pa.types.is_struct(av.type))
        offsets, items = _items(_member(av, "values"))
        if items is None:
            items = pa.array([], pa.struct([]))
        av = pa.StructArray.from_arrays([_list(offsets, n, _any_values(items))], names=["values"],
                                        mask=av.is_null())
    members = [
        sv if sv is not None else pa.nulls(n, _STRING),
        bv if bv is not None else pa.nulls(n, _BOOL),
        iv.cast(_INT64) if iv is not None else pa.nulls(n, _INT64),
        dv.cast(_DOUBLE) if dv is not None else pa.nulls(n, _DOUBLE),
        av if av is not None else pa.nulls(n, pa.struct([("values", pa.list_(pa.struct([])))])),
        kv if kv is not None else pa.nulls(n, _BOOL),
        by if by is not None else pa.nulls(n, _BOOL),
        pa.nulls(n, _INT64),
    ]
    return pa.StructArray.from_arrays(members, names=oa.ANY_VALUE_FIELDS,
                                      mask=values.is_null() if values.null_count else None)


def _attributes(struct: pa.StructArray, n: int) -> pa.ListArray:
    """`attributes`: lists of (key, AnyValue)."""
    offsets, kvs = _items(_member(struct, "attributes"))
    if kvs is None or not len(kvs):
        empty = pa.StructArray.from_arrays([pa.array([], _STRING), _any_values(pa.array([], pa.struct([])))],
                                           names=["key", "value"])
        return _list(offsets, n, empty)
    oa.fallback_if(not pa.types.is_struct(kvs.type))
    keys = _member(kvs, "key")
    oa.fallback_if(keys is None or keys.type != _STRING or keys.null_count)  # the walk's kv["key"]
    value = _member(kvs, "value")
    oa.fallback_if(value is None)  # no value anywhere: the walk's None
    return _list(offsets, n, pa.StructArray.from_arrays([keys, _any_values(value)], names=["key", "value"]))


def _records(struct, fields) -> tuple[np.ndarray | None, pa.StructArray]:
    """A repeated message (events, links) as a struct of its fields, made by `fields(items, m)`."""
    offsets, items = _items(struct)
    if items is None or not len(items):
        return offsets, fields(pa.array([], pa.struct([("name", _STRING)])), 0)
    oa.fallback_if(not pa.types.is_struct(items.type))
    return offsets, fields(items, len(items))


def _event_fields(events: pa.StructArray, m: int) -> pa.StructArray:
    return pa.StructArray.from_arrays(
        [_integer(events, "timeUnixNano", m), _text(events, "name", m), _attributes(events, m),
         _integer(events, "droppedAttributesCount", m, _UINT32)],
        names=["time_unix_nano", "name", "attributes", "dropped_attributes_count"])


def _link_fields(links: pa.StructArray, m: int) -> pa.StructArray:
    return pa.StructArray.from_arrays(
        [_text(links, "traceId", m), _text(links, "spanId", m), _text(links, "traceState", m),
         _attributes(links, m), _integer(links, "droppedAttributesCount", m, _UINT32)],
        names=["trace_id", "span_id", "trace_state", "attributes", "dropped_attributes_count"])


def _span_fields(spans: pa.StructArray, n: int) -> pa.StructArray:
    status = _member(spans, "status")
    if status is None:
        status = pa.nulls(n, pa.struct([("code", _INT64)]))
    oa.fallback_if(not pa.types.is_struct(status.type))
    event_offsets, events = _records(_member(spans, "events"), _event_fields)
    link_offsets, links = _records(_member(spans, "links"), _link_fields)
    names = ["trace_id", "span_id", "parent_span_id", "trace_state", "name", "kind",
             "start_time_unix_nano", "end_time_unix_nano", "attributes", "dropped_attributes_count",
             "events", "dropped_events_count", "links", "dropped_links_count", "status"]
    return pa.StructArray.from_arrays([
        _text(spans, "traceId", n), _text(spans, "spanId", n), _text(spans, "parentSpanId", n),
        _text(spans, "traceState", n), _text(spans, "name", n),
        _enum(spans, "kind", n, sc.SPAN_KINDS, "SPAN_KIND_"),
        _integer(spans, "startTimeUnixNano", n), _integer(spans, "endTimeUnixNano", n),
        _attributes(spans, n), _integer(spans, "droppedAttributesCount", n, _UINT32),
        _list(event_offsets, n, events), _integer(spans, "droppedEventsCount", n, _UINT32),
        _list(link_offsets, n, links), _integer(spans, "droppedLinksCount", n, _UINT32),
        pa.StructArray.from_arrays(
            [_enum(status, "code", n, sc.STATUS_CODES, "STATUS_CODE_"), _text(status, "message", n)],
            names=["code", "message"]),
    ], names=names)


def _shaped(column: pa.ListArray) -> tuple[pa.RecordBatch, tuple]:
    """The lines' resource spans in ptars' shape, and their resources as the walk makes them."""
    rs_offsets, rs = _items(column)
    oa.fallback_if(not pa.types.is_struct(rs.type) or {f.name for f in rs.type} - _RS_FIELDS)
    n_rs = len(rs)
    resource = _member(rs, "resource")
    resources = []
    if resource is not None:  # a line has a resource or a few, each a few attributes: the walk's own code
        oa.fallback_if(not pa.types.is_struct(resource.type))
        attributes = _member(resource, "attributes")
        for kvs in (attributes.to_pylist() if attributes is not None else [None] * n_rs):
            resources.append(key_values([_present(kv) for kv in kvs or ()]))
    else:
        resources = [{}] * n_rs
    ss_offsets, ss = _items(_member(rs, "scopeSpans"))
    if ss is None:
        ss = pa.array([], pa.struct([("spans", pa.list_(pa.struct([("name", _STRING)])))]))
    oa.fallback_if(not pa.types.is_struct(ss.type))
    n_ss = len(ss)
    scope = _member(ss, "scope")
    if scope is None:
        scope = pa.nulls(n_ss, pa.struct([("name", _STRING)]))
    oa.fallback_if(not pa.types.is_struct(scope.type))
    span_offsets, spans = _items(_member(ss, "spans"))
    if spans is None or not len(spans):
        spans = pa.array([], pa.struct([("name", _STRING)]))
    oa.fallback_if(not pa.types.is_struct(spans.type))
    scope_struct = pa.StructArray.from_arrays(
        [_text(scope, "name", n_ss), _text(scope, "version", n_ss),
         pa.ListArray.from_arrays(pa.array(np.zeros(n_ss + 1, dtype=np.int32)),
                                  pa.array([], pa.struct([("key", _STRING)])))],
        names=["name", "version", "attributes"])
    ss_struct = pa.StructArray.from_arrays(
        [scope_struct, _list(span_offsets, n_ss, _span_fields(spans, len(spans)))], names=["scope", "spans"])
    rs_struct = pa.StructArray.from_arrays([_list(ss_offsets, n_rs, ss_struct)], names=["scope_spans"])
    batch = pa.RecordBatch.from_arrays([_list(rs_offsets, len(column), rs_struct)], names=["resource_spans"])
    return batch, oa.resource_columns(resources)


def _present(value):
    """A value of Arrow's rows as the line had it: the members Arrow filled for other lines
    (None) removed."""
    if isinstance(value, dict):
        return {k: _present(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_present(v) for v in value]
    return value
