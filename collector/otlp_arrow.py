"""A columnar decode of OTLP protobuf export requests: the receiver's fast path (issue #12).

`decode_export` (collector/export_decode.py) turns each request into store rows by walking the
upb message in Python (collector/otlp.py `add_resource_spans` -> `SpanBatch.add`), ~16-18 µs a span
of 10 attributes. Here ptars (Rust) decodes the serialized request straight into a nested Arrow
record batch, and the rows are made from its columns by Arrow compute and numpy: a call per column
per request, no Python loop over spans or attributes. Python runs only per resource (its few
attributes, by spanbatch's own `_json`/`_text`), per distinct attribute key (its JSON, its typed
column), and for the few spans spanbatch's rules apply to (below).

`tables` is also the JSON-lines loader's (collector/loaders/otlp_json_arrow.py gives it Arrow's parse
of OTLP JSON in ptars' shape: ids as hex text, array items parsed, resources made by the JSON walk's
own code); the conditions below hold for it too.

It must give exactly the rows the walk gives, so it takes only requests whose every span it can
reproduce exactly; `decode_protobuf` returns None for any other (and for any body ptars cannot
decode), and the caller walks it. It takes a request when:

- ids: every trace id is 16 bytes, span id 8, neither all zeros; a parent of 0 or 8 bytes (all
  zeros: no parent); link ids alike (the walk rejects any other span: rejections are its to word);
- times are within the int64 nanosecond range the store holds;
- attribute values (span, event, link) are strings, ints, bools, doubles, or arrays of those (one
  level): no bytes, maps, nested arrays, empty values, `string_value_strindex`, nor a value with
  two oneof members on the wire (ptars keeps both, upb the last). Resource values may be anything
  but nested deeper than one level (they are made by the walk's own `any_value`); scope
  attributes (not stored) hold no array or map (ptars leaves their items unparsed, upb validates
  them);
- nothing the LIMITS (collector/spanbatch.py) would cut: at most 128 attributes a span, event and
  link (counted after repeated keys), 128 events and links a span, attributes and events JSON of at
  most 25,000 characters (no value can be longer, nor nested deeper than one level: nothing is
  truncated or dropped);
- no `null` in any JSON text (spanbatch._json hands such text to the json module, which writes NaN,
  non-ASCII and floats differently; NaN and infinities come out as `null` here too), and no link
  twice on one span (the walk stores it once).

A key sent twice in one list is a Python dict's: its first place, its last value. The JSON text is
what orjson writes (spanbatch._json): compact, keys in the order sent (each distinct key written by
orjson itself), strings escaped as orjson escapes them (\\" \\\\ \\b \\f \\n \\r \\t, other control
characters \\u00xx, everything else as UTF-8), doubles formatted by orjson itself (over a numpy
array, in one call). The typed columns are `_typed_values`' pick (per column the newest name set,
an empty string not set) converted as `_str`/`_int`/`_messaging_operation` do, the values Arrow
would convert differently (a double's repr, text to int, non-ASCII case mapping, str(list)) by
those functions themselves; then spanbatch's rules, each by its own code on the spans it applies
to: `_destination_name` (ARN and URL destinations, SQS without one), `_destination_override`
(templates, temporary destinations) and `_from_query_text` (statements without a collection).

Cost (bench/ingest.py requests of 10 attributes, process CPU): ptars' decode and the ~100 Arrow
calls cost ~2 ms a request whatever its size (ptars alone ~0.5-0.8 ms a call: it builds every
column of the nested schema), then ~4 µs a span: at 100 spans a request no better than the walk,
at 512 about half of it, at 1,000 about 40%. So only bodies of MIN_BYTES or more come here, alone
or together: a decode worker takes the requests waiting for it in one pass (`decode_protobuf_many`).
bench/ingest.py's 100-span requests (37 KB), one core: walked 26 µs a span, in passes of 8 of them
12 µs; in bench/ingest.py (16 exports in flight, alternating runs) the parse-only sink 41.5-42.0k
-> 55.5-56.1k spans/s, serve --no-dashboard 26.7-27.9k -> 28.0-28.6k (its group commits bound it).
"""

from __future__ import annotations

import os

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from choreoscope.collector import semconv as sc
from choreoscope.collector import spanbatch as sb
from choreoscope.collector.otlp import any_value
from choreoscope.collector.store import LINK_ARROW_SCHEMA, SPAN_ARROW_SCHEMA

try:  # an optional speed-up: without ptars every request is walked as before
    import ptars
except ImportError:  # pragma: no cover - ptars is a dependency
    ptars = None

# Below this many bytes a request is walked: the ~2 ms a request this path costs whatever its size
# is repaid from ~150-170 spans of 10 attributes (~55-62 KB; SDK-shaped spans alike). 64 KiB.
# CHOREOSCOPE_COLUMNAR_MIN_BYTES sets it (0: every protobuf body tries this path first; a huge number:
# never). tests/test_otlp_arrow.py calls decode_protobuf directly, whatever the size.
MIN_BYTES = int(os.environ.get("CHOREOSCOPE_COLUMNAR_MIN_BYTES", str(64 * 1024)))

_MAX_NS = sb._MAX_NS  # the store's bounds, spanbatch's own
_MAX_COUNT = sb._MAX_COUNT
_STRING = pa.string()


class Fallback(Exception):
    """The request holds something this path does not reproduce exactly: walk it instead."""


_handlers = None


def _get_handlers():
    global _handlers
    if _handlers is None:
        pool = ptars.HandlerPool([ExportTraceServiceRequest.DESCRIPTOR.file])
        _handlers = (pool.get_for_message(ExportTraceServiceRequest.DESCRIPTOR),
                     pool.get_for_message(AnyValue.DESCRIPTOR))
    return _handlers


def available() -> bool:
    return ptars is not None


# --- small helpers ---------------------------------------------------------------------------

def struct_field(arr, name: str):
    """A struct child with the struct's own nulls applied (`field` alone does not apply them,
    and costs far less: most structs here have no nulls)."""
    return arr.field(name) if arr.null_count == 0 else pc.struct_field(arr, name)


def fallback_if(condition) -> None:
    if condition:
        raise Fallback


def _any(mask) -> bool:
    """Whether a boolean array has a true (nulls are not)."""
    if isinstance(mask, pa.ChunkedArray):
        mask = mask.combine_chunks()
    return mask.true_count > 0


def flat_items(list_arr: pa.ListArray) -> pa.Array:
    """The items of list_arr's lists, aligned with its offsets (a null list's items too)."""
    offsets = list_arr.offsets
    first = offsets[0].as_py()
    return list_arr.values.slice(first, offsets[-1].as_py() - first)


def _lengths(list_arr) -> np.ndarray:
    return np.diff(list_arr.offsets.to_numpy())


def _parents(lengths: np.ndarray) -> np.ndarray:
    """For each item of lists of these lengths, the index of its list."""
    return np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)


def _grouped(lengths: np.ndarray, values: pa.Array) -> pa.ListArray:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def _numpy(arr) -> np.ndarray:
    return arr.to_numpy(zero_copy_only=False)


# orjson's escapes (spanbatch._json): \" \\ and the short ones, other control characters \u00xx
_ESCAPE = {0x22: '\\"', 0x5C: "\\\\", 0x08: "\\b", 0x0C: "\\f", 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}
_ESCAPE.update({c: f"\\u{c:04x}" for c in range(0x20) if c not in _ESCAPE})


def _quoted(strings: pa.Array) -> pa.Array:
    """Each string as orjson writes it: quoted, with orjson's escapes."""
    data = strings.buffers()[2] if len(strings) else None
    if data is not None and data.size:
        raw = np.frombuffer(data, dtype=np.uint8)  # (the whole buffer: a superset of the slice's)
        special = raw[(raw < 0x20) | (raw == 0x22) | (raw == 0x5C)]
        if len(special):
            present = set(np.unique(special).tolist())
            if 0x5C in present:  # the backslash first: the other escapes add backslashes
                strings = pc.replace_substring(strings, "\\", "\\\\")
            for c in sorted(present - {0x5C}):
                strings = pc.replace_substring(strings, chr(c), _ESCAPE[c])
    return pc.binary_join_element_wise('"', strings, '"', "")


def _doubles_json(doubles: pa.Array) -> pa.Array:
    """Each double as orjson writes it (null where `doubles` is null); NaN and infinities come
    out as `null`, which sends the request to the walk."""
    values = _numpy(doubles.fill_null(0.0))
    text = orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1].decode()
    parts = pc.split_pattern(pa.array([text], _STRING), ",")[0].values
    return pc.if_else(doubles.is_valid(), parts, _NULL_STRING)


_HEX = np.array([f"{i:02x}".encode() for i in range(256)], dtype="S2")


def _id_bytes(ids: pa.Array, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(each id's bytes, `width` a row: zeros for an empty id; each id's length) of a binary
    array, from its buffers (no Arrow kernel: an id column is a few numpy operations)."""
    n = len(ids)
    offsets = np.frombuffer(ids.buffers()[1], dtype=np.int32)[ids.offset:ids.offset + n + 1]
    lengths = np.diff(offsets)
    data = ids.buffers()[2]
    raw = np.zeros((n, width), dtype=np.uint8)
    if data is not None and data.size:
        data = np.frombuffer(data, dtype=np.uint8)
        full = lengths == width
        if full.all() and offsets[-1] - offsets[0] == n * width:
            raw = data[offsets[0]:offsets[-1]].reshape(n, width)
        elif full.any():
            starts = offsets[:-1][full]
            raw[full] = data[starts[:, None] + np.arange(width)]
    return raw, lengths


def _hex_rows(raw: np.ndarray) -> pa.Array:
    """Rows of id bytes as lowercase hex."""
    n, width = raw.shape
    text = _HEX[raw].tobytes()
    offsets = np.arange(0, 2 * width * n + 1, 2 * width, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(text))


def _ids(ids: pa.Array, width: int) -> pa.Array:
    """Ids that must be valid (`width` bytes, not all zeros: the walk rejects the span) as hex.
    Ids already given as text (OTLP JSON) must be in their stored form: lowercase hex."""
    if pa.types.is_string(ids.type):
        return _hex_ids(ids, width, parent=False)
    raw, lengths = _id_bytes(ids, width)
    fallback_if((lengths != width).any() or not raw.any(axis=1).all())
    return _hex_rows(raw)


_HEX_DIGIT = np.zeros(256, dtype=bool)
_HEX_DIGIT[np.frombuffer(b"0123456789abcdef", dtype=np.uint8)] = True


def _hex_ids(ids: pa.Array, width: int, *, parent: bool) -> pa.Array:
    """Text ids as they are stored (the walk's fast path: `width` bytes as lowercase hex, not all
    zeros); a parent may also be empty, and empty or all zeros is no parent (null). Any other
    text (upper case, base64, another width) is the walk's to normalise or reject."""
    n = len(ids)
    fallback_if(ids.null_count)
    offsets = np.frombuffer(ids.buffers()[1], dtype=np.int32)[ids.offset:ids.offset + n + 1]
    lengths = np.diff(offsets)
    full = lengths == 2 * width
    fallback_if(not (full | (lengths == 0)).all() if parent else not full.all())
    data = ids.buffers()[2]
    if data is None or offsets[-1] == offsets[0]:
        return pa.nulls(n, _STRING)
    chars = np.frombuffer(data, dtype=np.uint8)[offsets[0]:offsets[-1]]
    fallback_if(not _HEX_DIGIT[chars].all())
    if full.all():
        zero = ~(chars.reshape(n, 2 * width) != 0x30).any(axis=1)
    else:
        zero = ~full
        starts = offsets[:-1][full] - offsets[0]
        zero[full] = ~(chars[starts[:, None] + np.arange(2 * width)] != 0x30).any(axis=1)
    fallback_if(not parent and zero.any())
    return pc.if_else(pa.array(zero), _NULL_STRING, ids) if zero.any() else ids


def _parent_ids(ids: pa.Array) -> pa.Array:
    """Parent span ids: none (empty or all zeros) as null; any other length is the walk's."""
    if pa.types.is_string(ids.type):
        return _hex_ids(ids, 8, parent=True)
    raw, lengths = _id_bytes(ids, 8)
    fallback_if(((lengths != 0) & (lengths != 8)).any())
    hexed = _hex_rows(raw)
    none = ~raw.any(axis=1)
    return pc.if_else(pa.array(none), _NULL_STRING, hexed) if none.any() else hexed


def _dict_semantics(parents: np.ndarray, codes: np.ndarray, n_codes: int):
    """None when no key (code) occurs twice in one list; else (the items a dict keeps: each key's
    first place, and for each the item whose value it holds there: the key's last one)."""
    n = len(codes)
    if n < 2:
        return None
    combined = parents * (n_codes + 1) + codes
    order = np.argsort(combined, kind="stable")
    ordered = combined[order]
    same = ordered[1:] == ordered[:-1]
    if not same.any():
        return None
    starts = np.flatnonzero(np.concatenate(([True], ~same)))
    ends = np.concatenate((starts[1:], [n])) - 1
    first, last = order[starts], order[ends]
    source = np.arange(n)
    source[first] = last
    keep = np.zeros(n, dtype=bool)
    keep[first] = True
    return keep, source[keep]


# --- attribute values -----------------------------------------------------------------------

_NULL_STRING = pa.scalar(None, _STRING)
ANY_VALUE_FIELDS = ["string_value", "bool_value", "int_value", "double_value", "array_value",
                     "kvlist_value", "bytes_value", "string_value_strindex"]


def _scalars(values: pa.StructArray, *, allow_arrays: bool):
    """The JSON text of each AnyValue of `values` (a struct array), and the members the typed
    columns read: (json, string_value, int_value, bool_value, double_value, array_value)."""
    n = len(values)
    fallback_if(values.null_count)  # no value: None in the walk, `null` in its JSON
    sv, bv, iv, dv, av, kv, by, si = (values.field(name) for name in ANY_VALUE_FIELDS)
    fallback_if(kv.null_count != n or by.null_count != n or si.null_count != n)
    arrays = n - av.null_count
    fallback_if(arrays and not allow_arrays)
    # Each value has a member (no null in the coalesce below) and there are n in all: exactly one
    # each. (ptars keeps every oneof member sent, upb the last one.)
    fallback_if(5 * n - sv.null_count - bv.null_count - iv.null_count - dv.null_count - av.null_count != n)
    parts = []
    if sv.null_count != n:
        parts.append(_quoted(sv))
    if iv.null_count != n:
        parts.append(pc.cast(iv, _STRING))
    if bv.null_count != n:
        parts.append(pc.if_else(bv, "true", "false"))
    if dv.null_count != n:
        parts.append(_doubles_json(dv))
    if arrays:
        parts.append(_array_json(av))
    if not parts:
        json = pa.array([], _STRING)
    else:
        json = parts[0] if len(parts) == 1 else pc.coalesce(*parts)
        fallback_if(json.null_count)  # an empty value
    return json, sv, iv, bv, dv, av


def _array_json(av: pa.StructArray) -> pa.Array:
    """The JSON text of each array value (null where `av` is null): one level of scalars, the
    items (serialized AnyValues: ptars stops at the recursion) decoded by ptars in one call."""
    items_list = struct_field(av, "values")
    items = flat_items(items_list)
    if pa.types.is_struct(items.type):  # items already parsed (OTLP JSON)
        item_json = _scalars(items, allow_arrays=False)[0]
    elif len(items):
        try:
            batch = _get_handlers()[1].array_to_record_batch(items)
        except Exception:  # noqa: BLE001 - a malformed item: upb's parse words the error
            raise Fallback from None
        except BaseException as exc:
            if not _is_panic(exc):
                raise
            raise Fallback from None
        decoded = pa.StructArray.from_arrays(batch.columns, names=ANY_VALUE_FIELDS)
        item_json = _scalars(decoded, allow_arrays=False)[0]
    else:
        item_json = pa.array([], _STRING)
    joined = pc.binary_join(_grouped(_lengths(items_list), item_json), ",")
    return pc.if_else(av.is_valid(), pc.binary_join_element_wise("[", joined, "]", ""), _NULL_STRING)


class _Attrs:
    """One level of OTLP attributes (a list array of KeyValue lists) as the walk's dicts: the JSON
    of each, and their keys (`names`, `codes`) and values, flat (`parents`: their list), for the
    typed columns."""

    def __init__(self, lists: pa.ListArray, max_count: int):
        n_lists = len(lists)
        flat = flat_items(lists)
        lengths = _lengths(lists)
        parents = _parents(lengths)
        if len(flat):
            encoded = pc.dictionary_encode(flat.field("key"))
            names = encoded.dictionary.to_pylist()
            codes = _numpy(encoded.indices).astype(np.int64)
        else:
            names, codes = [], np.zeros(0, dtype=np.int64)
        # every value sent is checked, one its key's later value replaces too (upb parsed it)
        values = _scalars(struct_field(flat, "value"), allow_arrays=True)
        pick = _dict_semantics(parents, codes, len(names))
        if pick is not None:  # a key sent twice in one list: a dict's, the first place, the last value
            keep, source = pick
            take = pa.array(source)
            values = [pc.take(v, take) for v in values]
            codes, parents = codes[keep], parents[keep]
            lengths = np.bincount(parents, minlength=n_lists)
        fallback_if(n_lists and lengths.max() > max_count)
        self.names, self.codes, self.parents, self.lengths = names, codes, parents, lengths
        value_json, self.sv, self.iv, self.bv, self.dv, self.av = values
        if not len(codes):
            self.json = pa.repeat(pa.scalar("{}", _STRING), n_lists)
            return
        # a key as orjson writes it, once per distinct key
        keys_json = pa.array([orjson.dumps(name).decode() + ":" for name in names], _STRING)
        pairs = pc.binary_join_element_wise(keys_json.take(pa.array(codes)), value_json, "")
        joined = pc.binary_join(_grouped(lengths, pairs), ",")
        self.json = pc.binary_join_element_wise("{", joined, "}", "")
        fallback_if(_has_null(self.json))  # spanbatch._json hands such text to the json module


def _has_null(texts: pa.Array) -> bool:
    """Whether `null` is in any of the texts (in the buffer they are in: a superset at most)."""
    data = texts.buffers()[2] if len(texts) else None
    return data is not None and b"null" in data.to_pybytes()


def _check_length(texts: pa.Array) -> None:
    """No JSON text beyond the value length limit: then no value in it is either, and the walk
    cuts nothing (deeper than one level sends the request to the walk before). Characters are
    counted (Python's len) only when some text has more bytes than the limit."""
    if len(texts):
        offsets = np.frombuffer(texts.buffers()[1], dtype=np.int32)[texts.offset:texts.offset + len(texts) + 1]
        if np.diff(offsets).max() > sb.MAX_VALUE_LENGTH:
            fallback_if(pc.max(pc.utf8_length(texts)).as_py() > sb.MAX_VALUE_LENGTH)


# --- typed columns --------------------------------------------------------------------------

_TYPED = sb._TYPED_ATTRIBUTES
_N_TYPED = len(_TYPED)
_INT_COLUMNS = {_TYPED.index(sc.HTTP_STATUS_CODE), _TYPED.index(sc.RETRY_ATTEMPT)}
_OPERATION_COLUMN = _TYPED.index(sc.MESSAGING_OPERATION)
_DESTINATION_COLUMN = sb._DESTINATION_COLUMN
_SYSTEM_COLUMN = sb._SYSTEM_COLUMN
_COLLECTION_COLUMN = sb._DB_COLLECTION_COLUMN
_QUERY_NAMES = frozenset((sb._QUERY_TEXT_OLD, sb._QUERY_TEXT_NEW))
_OPERATION_FROM = pa.array(list(sc.MESSAGING_OPERATION_VALUES), _STRING)
_OPERATION_TO = pa.array(list(sc.MESSAGING_OPERATION_VALUES.values()), _STRING)
_NO_COLUMN = (-1, 0)


def _typed_columns(attrs: _Attrs, n_spans: int) -> list:
    """The typed columns (messaging_system .. retry_attempt; None: all null) as `_typed_values`
    and then spanbatch's rules make them, in the walk's order: `_destination_name` (ARNs, URLs,
    SQS queue URLs), `_destination_override` (templates, temporary destinations), and
    `_from_query_text` (statements without a collection). Those rules run as spanbatch's own
    code, on the few spans they apply to."""
    out = _picked_columns(attrs, n_spans)
    names = attrs.names
    destination, system = out[_DESTINATION_COLUMN], out[_SYSTEM_COLUMN]
    named = np.zeros(n_spans, dtype=bool)
    if destination is not None:  # an ARN or a URL: _destination_name shortens it
        named |= _numpy(pc.or_(pc.starts_with(destination, "arn:"),
                               pc.match_substring(destination, "://")).fill_null(False))
    if system is not None:  # SQS with no destination: named from its queue URL
        sqs = pc.equal(system, sc.MESSAGING_SYSTEM_SQS).fill_null(False)
        if destination is not None:
            sqs = pc.and_(sqs, destination.is_null())
        named |= _numpy(sqs)
    if named.any():
        _by_spanbatch(out, attrs, np.flatnonzero(named), _QUEUE_URL_KEYS, (_SYSTEM_COLUMN, _DESTINATION_COLUMN),
                      sb._destination_name)
    if not sb._DESTINATION_OVERRIDES.isdisjoint(names):
        _by_spanbatch(out, attrs, _spans_with(attrs, sb._DESTINATION_OVERRIDES), sb._DESTINATION_OVERRIDES,
                      (_DESTINATION_COLUMN,), sb._destination_override)
    if not _QUERY_NAMES.isdisjoint(names):  # a statement and no collection: sql_text parses it
        query_spans = np.zeros(n_spans, dtype=bool)
        query_spans[_spans_with(attrs, _QUERY_NAMES)] = True
        collection = out[_COLLECTION_COLUMN]
        if collection is not None:
            query_spans &= ~_numpy(collection.is_valid())
        if query_spans.any():
            _by_spanbatch(out, attrs, np.flatnonzero(query_spans), _STATEMENT_KEYS, _STATEMENT_COLUMNS,
                          sb._from_query_text)
    return out


def _spans_with(attrs: _Attrs, keys) -> np.ndarray:
    """The spans (indices) with any of these attribute keys."""
    return np.unique(attrs.parents[np.array([name in keys for name in attrs.names], dtype=bool)[attrs.codes]])


def _picked_columns(attrs: _Attrs, n_spans: int) -> list:
    """The typed columns as `_typed_values` makes them: per span and column the value of its
    newest name that is set, converted (`_str`, `_int`, `_messaging_operation`)."""
    names = attrs.names
    out = [None] * _N_TYPED
    found = [sb._TYPED_NAME_INDEX.get(name, _NO_COLUMN) for name in names]
    if not names or all(column < 0 for column, _ in found):
        return out
    column_of = np.array([column for column, _ in found], dtype=np.int64)
    rank_of = np.array([rank for _, rank in found], dtype=np.int64)
    codes = attrs.codes
    columns = column_of[codes]
    # an empty string is no value (sc.first); the value is never None here
    empty = _numpy(pc.equal(attrs.sv, "").fill_null(False))
    rows = np.flatnonzero((columns >= 0) & ~empty)
    span, column, rank = attrs.parents[rows], columns[rows], rank_of[codes[rows]]
    order = np.lexsort((rank, column, span))  # per span and column the newest name first
    span, column, rows = span[order], column[order], rows[order]
    first = np.ones(len(rows), dtype=bool)
    first[1:] = (span[1:] != span[:-1]) | (column[1:] != column[:-1])
    span, column, rows = span[first], column[first], rows[first]
    take = pa.array(rows)

    def picked(values: pa.Array) -> pa.Array:
        if values.null_count == len(values):
            return pa.nulls(len(rows), values.type)
        return values.take(take)

    sv, iv, bv, dv, av = (picked(v) for v in (attrs.sv, attrs.iv, attrs.bv, attrs.dv, attrs.av))
    parts = [sv]
    if iv.null_count != len(iv):
        parts.append(pc.cast(iv, _STRING))
    if bv.null_count != len(bv):
        parts.append(pc.if_else(bv, "True", "False"))
    text = pc.coalesce(*parts) if len(parts) > 1 else sv  # _str (an array: None)
    if dv.null_count != len(dv):  # str(float): Python's repr, for these few values
        text = _python_where(text, dv, str)
    for c in np.unique(column).tolist():  # the typed columns the request has (a few)
        index = np.full(n_spans, -1, dtype=np.int64)
        mine = np.flatnonzero(column == c)
        index[span[mine]] = mine
        per_span = pa.array(index, mask=index < 0)
        if c in _INT_COLUMNS:
            out[c] = _int_column(*(v.take(per_span) for v in (sv, iv, bv, dv)))
            continue
        values = text.take(per_span)
        if c == _OPERATION_COLUMN:
            lower = pc.ascii_lower(values)
            mapped = pc.coalesce(pc.take(_OPERATION_TO, pc.index_in(lower, value_set=_OPERATION_FROM)), lower)
            # str.lower beyond ASCII, str(list).lower(): Python's, value by value, for these few
            odd = pc.or_(pc.invert(pc.string_is_ascii(values)).fill_null(False),
                         av.take(per_span).is_valid())
            if _any(odd):
                where = pc.and_(odd, per_span.is_valid())
                rows_odd = pc.filter(per_span, where)
                raw = _py_values(*(v.take(rows_odd) for v in (sv, iv, bv, dv, av)))
                mapped = pc.replace_with_mask(mapped, where, pa.array(
                    [sb._messaging_operation(v) for v in raw], _STRING))
            values = mapped
        out[c] = values
    return out


def _small_attrs(attrs: _Attrs, spans: np.ndarray, keys) -> dict[int, dict]:
    """For the spans (indices), their attributes of these keys as the walk's dict has them
    (scalars: an array here is the walk's)."""
    wanted = np.array([name in keys for name in attrs.names], dtype=bool)[attrs.codes]
    rows = np.flatnonzero(wanted & np.isin(attrs.parents, spans))
    take = pa.array(rows)
    small: dict[int, dict] = {}
    values = _py_values(*(v.take(take) for v in (attrs.sv, attrs.iv, attrs.bv, attrs.dv, attrs.av)))
    for row, value in zip(rows.tolist(), values):
        small.setdefault(int(attrs.parents[row]), {})[attrs.names[attrs.codes[row]]] = value
    return small


def _py_values(sv, iv, bv, dv, av) -> list:
    """The values (one member set each, as `_scalars` left them) as `key_values` makes them:
    Python scalars, an array as the list `any_value` makes of its items (parsed by upb)."""
    columns = [v.to_pylist() for v in (sv, iv, bv, dv)]
    arrays = av.to_pylist() if av.null_count != len(av) else [None] * len(av)
    out = []
    for array, *members in zip(arrays, *columns):
        if array is not None:
            out.append([_item_value(item) for item in array["values"]])
        else:
            out.append(next((v for v in members if v is not None), None))
    return out


def _item_value(item):
    """An array item as `any_value` makes it: serialized (ptars) and parsed by upb, or already
    parsed (OTLP JSON: a scalar AnyValue struct with one member set)."""
    if isinstance(item, bytes):
        return any_value(AnyValue.FromString(item))
    return next(v for v in item.values() if v is not None)


def _by_spanbatch(out: list, attrs: _Attrs, spans: np.ndarray, keys, columns: tuple[int, ...], rule) -> None:
    """Typed columns of some spans (indices, ascending) by one of spanbatch's own rules: `rule`
    (values, attrs) -> values reads `columns` of the typed values and `keys` of the attributes.
    It runs once for each distinct input (spans of one statement, say, have the same)."""
    firsts, inverse = _same_inputs(out, attrs, spans, keys, columns)
    spans_run = spans[firsts]
    small = _small_attrs(attrs, spans_run, keys)
    index = pa.array(spans_run)
    current = [[None] * len(spans_run) if out[c] is None else out[c].take(index).to_pylist() for c in columns]
    results = [[] for _ in columns]
    for i, span in enumerate(spans_run.tolist()):
        values = [None] * _N_TYPED
        for c, column in zip(columns, current):
            values[c] = column[i]
        values = rule(values, small.get(span, {}))
        for c, result in zip(columns, results):
            result.append(values[c])
    mask = np.zeros(len(attrs.lengths), dtype=bool)
    mask[spans] = True
    spread = pa.array(inverse)
    for c, new in zip(columns, results):
        if out[c] is None and all(v is None for v in new):
            continue
        base = out[c] if out[c] is not None else pa.nulls(len(mask), _STRING)
        out[c] = pc.replace_with_mask(base, pa.array(mask), pa.array(new, _STRING).take(spread))


def _same_inputs(out: list, attrs: _Attrs, spans: np.ndarray, keys, columns) -> tuple[np.ndarray, np.ndarray]:
    """(for each distinct input of a rule, its first span's position in `spans`; for each span,
    the position of its input among those). The input: the `columns` of the typed values and each
    of `keys`' values, each member by its own code. Doubles and arrays are never taken as equal
    to another (-0.0 and 0.0 hash alike, and a rule may tell them apart)."""
    n = len(spans)
    index = pa.array(spans)
    codes = []
    for c in columns:
        if out[c] is not None:
            codes.append(_numpy(pc.dictionary_encode(out[c].take(index)).indices.fill_null(-1)).astype(np.int64))
    position = np.full(len(attrs.lengths), -1, dtype=np.int64)
    position[spans] = np.arange(n)
    owner_of_row = position[attrs.parents]
    for code, name in enumerate(attrs.names):
        if name not in keys:
            continue
        rows = np.flatnonzero((attrs.codes == code) & (owner_of_row >= 0))
        if not len(rows):
            continue
        owners, take = owner_of_row[rows], pa.array(rows)
        for member in (attrs.sv, attrs.iv, attrs.bv, attrs.dv, attrs.av):
            if member.null_count == len(member):
                continue
            values = member.take(take)
            code_of = np.full(n, -1, dtype=np.int64)
            if member is attrs.sv or member is attrs.iv or member is attrs.bv:
                code_of[owners] = _numpy(pc.dictionary_encode(values).indices.fill_null(-1))
            else:
                code_of[owners] = np.where(_numpy(values.is_valid()), n + np.arange(len(rows)), -1)
            codes.append(code_of)
    if not codes:
        return np.zeros(min(n, 1), dtype=np.int64), np.zeros(n, dtype=np.int64)
    _, firsts, inverse = np.unique(np.column_stack(codes), axis=0, return_index=True, return_inverse=True)
    return firsts, inverse.reshape(-1)


_STATEMENT_KEYS = frozenset((*sc.DB_QUERY_TEXT, *sc.DB_NAMESPACE))
_STATEMENT_COLUMNS = (sb._DB_SYSTEM_COLUMN, _COLLECTION_COLUMN, sb._DB_OPERATION_COLUMN)
_QUEUE_URL_KEYS = frozenset(sc.MESSAGING_QUEUE_URL)


def _python_where(values: pa.Array, inputs: pa.Array, convert) -> pa.Array:
    """`values`, with convert(input) where `inputs` is not null: spanbatch's own conversion for
    the few values Arrow would not give the same (a double's repr, Unicode case mapping)."""
    where = inputs.is_valid()
    converted = [convert(v) for v in inputs.drop_null().to_pylist()]
    return pc.replace_with_mask(values, where, pa.array(converted, values.type))


def _int_column(sv: pa.Array, iv: pa.Array, bv: pa.Array, dv: pa.Array) -> pa.Array:
    """An INTEGER column as `_int` makes it: an int in the int32 range, else None (ints and bools
    here; text and doubles by `_int` itself, value by value)."""
    if bv.null_count != len(bv):  # int(True) == 1
        iv = pc.coalesce(iv, pc.cast(bv, pa.int64()))
    in_range = pc.and_(pc.greater_equal(iv, sb.INT32_MIN), pc.less_equal(iv, sb.INT32_MAX))
    out = pc.if_else(in_range, iv, pa.scalar(None, pa.int64()))
    if sv.null_count != len(sv):
        out = _python_where(out, sv, sb._int)
    if dv.null_count != len(dv):
        out = _python_where(out, dv, sb._int)
    return out.cast(pa.int32())


# --- resources ------------------------------------------------------------------------------

def _py_value(value: dict | None):
    """A resource attribute's value (ptars' struct as a dict) as `key_values` makes it."""
    if value is None:
        return None
    members = [(name, v) for name, v in value.items() if v is not None]
    if not members:
        return None
    fallback_if(len(members) > 1)
    kind, v = members[0]
    if kind == "array_value":
        out = []
        for item in v["values"]:
            parsed = AnyValue.FromString(item)
            fallback_if(parsed.WhichOneof("value") in _NESTED)  # upb's depth limit is the walk's
            out.append(any_value(parsed))
        return out
    if kind == "kvlist_value":
        out = {}
        for item in v["values"]:
            parsed = KeyValue.FromString(item)
            fallback_if(parsed.value.WhichOneof("value") in _NESTED)
            out[parsed.key] = any_value(parsed.value)
        return out
    return v


_NESTED = ("array_value", "kvlist_value")


def _resources(rs: pa.StructArray) -> tuple[list[str], list[list]]:
    """Each resource's attributes JSON and its service fields (service_name .. instance id), by
    spanbatch's own code: a request has a resource or a few, each with a few attributes."""
    resources = []
    for attributes in struct_field(struct_field(rs, "resource"), "attributes").to_pylist():
        res = {}
        for kv in attributes or ():
            res[kv["key"]] = _py_value(kv["value"])
        resources.append(res)
    return resource_columns(resources)


def resource_columns(resources: list[dict]) -> tuple[list[str], list[list]]:
    """Resources' attributes (as the walk's dicts) as their JSON and service fields."""
    texts, services = [], [[], [], [], []]
    for res in resources:
        texts.append(sb._json(res))
        for column, name in zip(services, _SERVICE_KEYS):
            column.append(sb._text(res.get(name)))
        services[0][-1] = services[0][-1] or sc.UNKNOWN_SERVICE
    return texts, services


_SERVICE_KEYS = (sc.SERVICE_NAME, sc.SERVICE_VERSION, sc.SERVICE_NAMESPACE, sc.SERVICE_INSTANCE_ID)


# --- the request ----------------------------------------------------------------------------

_KINDS = pa.array(sc.SPAN_KINDS, _STRING)
_STATUSES = pa.array(sc.STATUS_CODES, _STRING)


def _enum(values: pa.Array, names: pa.Array) -> pa.Array:
    """The walk's `names[v] if 0 <= v < len(names) else names[0]`."""
    values = _numpy(values.fill_null(0))
    values = np.where((values >= 0) & (values < len(names)), values, 0)
    return names.take(pa.array(values))


def _empty_to_null(texts: pa.Array) -> pa.Array:
    """`text or None`."""
    if texts.null_count == 0 and len(texts):
        offsets = np.frombuffer(texts.buffers()[1], dtype=np.int32)[texts.offset:texts.offset + len(texts) + 1]
        if offsets[-1] == offsets[0]:  # all empty (trace states, status messages: usually)
            return pa.nulls(len(texts), _STRING)
    return pc.if_else(pc.equal(texts, "").fill_null(True), _NULL_STRING, texts)


def _spread(values: pa.Array, parents: np.ndarray, n: int) -> pa.Array:
    """Per item, its parent's value (a request has one resource and one scope, usually)."""
    if len(values) == 1:
        return pa.repeat(values[0], n)
    return values.take(pa.array(parents))


def _sum_by(values: pa.Array, lengths: np.ndarray) -> np.ndarray:
    """Per list, the sum of its items' `values`."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    sums = np.concatenate(([0], np.cumsum(_numpy(values).astype(np.int64))))
    return sums[offsets[1:]] - sums[offsets[:-1]]


def _count(values: np.ndarray) -> pa.Array:
    """A dropped count as stored (spanbatch._total): at most 2^31-1."""
    return pa.array(np.minimum(values.astype(np.int64), _MAX_COUNT).astype(np.int32))


def _is_panic(exc: BaseException) -> bool:
    """A Rust panic in ptars (pyo3's PanicException, a BaseException): the body's fault."""
    return type(exc).__name__ == "PanicException"


def decode_protobuf(body: bytes, source: str) -> tuple[pa.Table, pa.Table] | None:
    """The span and link tables `decode_export` makes of this serialized request (no span of it
    rejected), or None when the request must be walked instead (see the module docstring). Any
    body ptars refuses is walked too: the walk's parse says what is wrong with it."""
    decoded = decode_protobuf_many([body], source)
    return None if decoded is None else decoded[0]


def decode_protobuf_many(bodies: list[bytes], source: str) -> list[tuple[pa.Table, pa.Table]] | None:
    """`decode_protobuf` of several requests in one pass: each request's (spans, links), as each
    alone would give them, or None when any of them must be walked (the caller then decodes each
    on its own). ptars and the Arrow calls cost ~2 ms a pass whatever its size, so requests of
    100 spans, each too small to repay it (MIN_BYTES), repay it together: a decode worker takes
    the requests waiting for it in one pass (export_decode.DecodePool)."""
    if ptars is None:
        return None
    try:
        batch = _get_handlers()[0].list_to_record_batch(bodies)
    except Exception:  # noqa: BLE001 - malformed: upb's parse words the error
        return None
    except BaseException as exc:  # ptars 0.0.25 panics on some truncated bodies (a PanicException)
        if not _is_panic(exc):
            raise
        return None
    try:
        spans, links = tables(batch, source)
        if len(bodies) == 1:
            return [(spans, links)]
        return _split(batch, spans, links)
    except (Fallback, DecodeError):
        return None
    except (pa.ArrowException, ValueError, TypeError, OverflowError):
        # something of the body's this path did not foresee: the walk's to judge
        return None


def _split(batch: pa.RecordBatch, spans: pa.Table, links: pa.Table) -> list[tuple[pa.Table, pa.Table]]:
    """`tables`' rows of a batch of several requests, apart per request (its rows are in request
    order, a span's links in its span's order: `tables` rejects no span)."""
    requests = batch.column(0)
    rs = flat_items(requests)
    ss_list = struct_field(rs, "scope_spans")
    span_list = struct_field(flat_items(ss_list), "spans")
    per_rs = np.bincount(_parents(_lengths(ss_list)), weights=_lengths(span_list), minlength=len(rs))
    per_request = np.bincount(_parents(_lengths(requests)), weights=per_rs, minlength=len(requests))
    span_ends = np.cumsum(per_request.astype(np.int64))
    link_ends = np.zeros(len(requests), dtype=np.int64)
    if links.num_rows:
        link_counts = np.cumsum(_lengths(flat_items(span_list).field("links")))
        link_ends = np.where(span_ends > 0, link_counts[np.maximum(span_ends - 1, 0)], 0)
    out, span_start, link_start = [], 0, 0
    for span_end, link_end in zip(span_ends.tolist(), link_ends.tolist()):
        out.append((spans.slice(span_start, span_end - span_start), links.slice(link_start, link_end - link_start)))
        span_start, link_start = span_end, link_end
    return out


def tables(batch: pa.RecordBatch, source: str, resources=None) -> tuple[pa.Table, pa.Table]:
    """The span and link tables of a decoded batch: ptars' (a column of requests' resource spans,
    the proto's field names and types), or one of that shape another front end made
    (collector/loaders/otlp_json_arrow.py: ids as hex text, array items parsed, `resources` as the
    resource columns). Raises Fallback for anything the walk must do."""
    rs = flat_items(batch.column(0))
    resource_json, services = resources if resources is not None else _resources(rs)
    ss_list = struct_field(rs, "scope_spans")
    ss = flat_items(ss_list)
    ss_lengths = _lengths(ss_list)
    scope = struct_field(ss, "scope")
    scope_attributes = struct_field(scope, "attributes")
    if len(flat_items(scope_attributes)):  # not stored; their nested values upb validated
        values = struct_field(flat_items(scope_attributes), "value")
        fallback_if(values.null_count != len(values) and (
            struct_field(values, "array_value").null_count != len(values)
            or struct_field(values, "kvlist_value").null_count != len(values)))
    span_list = struct_field(ss, "spans")
    spans = flat_items(span_list)
    n = len(spans)
    if not n:
        return SPAN_ARROW_SCHEMA.empty_table(), LINK_ARROW_SCHEMA.empty_table()
    span_lengths = _lengths(span_list)
    span_ss = _parents(span_lengths)
    span_rs = _parents(ss_lengths)[span_ss]

    trace_id = _ids(spans.field("trace_id"), 16)
    span_id = _ids(spans.field("span_id"), 8)
    parent_id = _parent_ids(spans.field("parent_span_id"))

    start = spans.field("start_time_unix_nano")
    end = spans.field("end_time_unix_nano")
    fallback_if(pc.max(start).as_py() > _MAX_NS or pc.max(end).as_py() > _MAX_NS)

    attrs = _Attrs(spans.field("attributes"), sb.MAX_ATTRIBUTES)
    _check_length(attrs.json)
    typed = _typed_columns(attrs, n)
    dropped_attributes = _numpy(spans.field("dropped_attributes_count")).astype(np.int64)

    event_list = spans.field("events")
    event_counts = _lengths(event_list)
    if event_counts.any():
        fallback_if(event_counts.max() > sb.MAX_EVENTS)
        events = flat_items(event_list)
        event_attrs = _Attrs(events.field("attributes"), sb.MAX_EVENT_ATTRIBUTES)
        event_json = pc.binary_join_element_wise(
            '{"name":', _quoted(events.field("name")),
            ',"time_ns":', pc.cast(events.field("time_unix_nano"), _STRING),
            ',"attributes":', event_attrs.json, "}", "")
        joined = pc.binary_join(_grouped(event_counts, event_json), ",")
        events_json = pc.binary_join_element_wise("[", joined, "]", "")
        _check_length(events_json)
        fallback_if(_has_null(events_json))
        dropped_attributes += _sum_by(events.field("dropped_attributes_count"), event_counts)
    else:
        events_json = pa.repeat(pa.scalar("[]", _STRING), n)

    link_list = spans.field("links")
    link_counts = _lengths(link_list)
    links_table = LINK_ARROW_SCHEMA.empty_table()
    if link_counts.any():
        fallback_if(link_counts.max() > sb.MAX_LINKS)
        links = flat_items(link_list)
        link_span = _parents(link_counts)
        linked_trace = _ids(links.field("trace_id"), 16)
        linked_span = _ids(links.field("span_id"), 8)
        target = pc.dictionary_encode(pc.binary_join_element_wise(linked_trace, linked_span, ""))
        # a span's repeated link: the walk stores it once
        fallback_if(_dict_semantics(link_span, _numpy(target.indices).astype(np.int64), len(target.dictionary)))
        link_attrs = _Attrs(links.field("attributes"), sb.MAX_LINK_ATTRIBUTES)
        _check_length(link_attrs.json)
        dropped_attributes += _sum_by(links.field("dropped_attributes_count"), link_counts)
        owner = pa.array(link_span)
        links_table = pa.Table.from_arrays(
            [trace_id.take(owner), span_id.take(owner), linked_trace, linked_span,
             _empty_to_null(links.field("trace_state")), link_attrs.json], schema=LINK_ARROW_SCHEMA)

    status = spans.field("status")
    service_columns = [_spread(pa.array(column, _STRING), span_rs, n) for column in services]
    columns = [
        trace_id, span_id, parent_id,
        _empty_to_null(spans.field("trace_state")),
        spans.field("name"),
        _enum(spans.field("kind"), _KINDS),
        start.cast(pa.int64()), end.cast(pa.int64()),
        _enum(struct_field(status, "code"), _STATUSES),
        _empty_to_null(struct_field(status, "message")),
        *service_columns,
        _spread(_empty_to_null(struct_field(scope, "name")), span_ss, n),
        _spread(_empty_to_null(struct_field(scope, "version")), span_ss, n),
        *typed,
        attrs.json,
        _spread(pa.array(resource_json, _STRING), span_rs, n),
        events_json,
        pa.repeat(pa.scalar(source, _STRING), n),
        _count(dropped_attributes),
        _count(_numpy(spans.field("dropped_events_count"))),
        _count(_numpy(spans.field("dropped_links_count"))),
    ]
    arrays = [pa.nulls(n, f.type) if column is None else column.cast(f.type) if column.type != f.type
              else column for column, f in zip(columns, SPAN_ARROW_SCHEMA)]
    return pa.Table.from_arrays(arrays, schema=SPAN_ARROW_SCHEMA), links_table
