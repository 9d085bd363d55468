"""Parquet span tables: choreoscope's own export and the ClickHouse exporter's `otel_traces`.

Three layouts are recognised by their columns:

- `spans`: the store's `spans` columns, as `choreoscope export parquet` writes them. Each row goes
  through `SpanBatch.add` again (attributes, resource and events parsed from their JSON), keeping
  the row's `source`, so export -> load gives back the same rows. The dropped counts are taken as
  the sender's (an export older than store schema 3 has none: NULL); the limits cut nothing more
  from a row they already cut.
- `span_links`: the store's `span_links` columns. Link rows are already normalised: their ids are
  checked with the batch's `normalize_id` and they are inserted as they are.
- `otel_traces`: the table the OpenTelemetry Collector's ClickHouse exporter fills, as
  `SELECT * FROM otel_traces INTO OUTFILE 'x.parquet' FORMAT Parquet` writes it: `Timestamp`
  (DateTime64(9)) and `Duration` (ns), hex `TraceId`/`SpanId`/`ParentSpanId` (empty for a root),
  `SpanKind` `SPAN_KIND_SERVER` (older exporters) or `Server` (newer), `StatusCode`
  `STATUS_CODE_ERROR` or `Error`, `ResourceAttributes`/`SpanAttributes` as `Map(String, String)`,
  `ScopeName`/`ScopeVersion` (older exporters put them in the span attributes as
  `otel.scope.name`/`otel.scope.version`), and `Events`/`Links` as Nested columns: parallel
  arrays `Events.Timestamp`, `Events.Name`, `Events.Attributes`, `Links.TraceId`, … (or, with
  `flatten_nested = 0`, one list-of-struct column each).

The exporter keeps no dropped counts (they are stored NULL: unknown). It writes every attribute
value as text (`200`, `true`, `12.5`, arrays as JSON), so those spans' attributes are strings in
the store. The typed columns do not suffer: the integer ones (`http_status_code`,
`retry_attempt`) are parsed from text by the batch. The boolean
`messaging.destination.temporary`/`anonymous` are turned back into booleans here, because the
batch tests them for `true`.

The file is read in record batches of BATCH_ROWS rows, column by column (timestamps converted with
Arrow, events and links turned into Python only for the rows that have some); the Python work per
span is building its attribute dicts and the `SpanBatch.add` call.
"""

from __future__ import annotations

import json
from itertools import zip_longest

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from choreoscope.collector import semconv as sc
from choreoscope.collector.loaders.sink import FileSink
from choreoscope.collector.spanbatch import BadId, Link, normalize_id
from choreoscope.collector.store import (
    DROPPED_COUNT_COLUMNS,
    LINK_ARROW_SCHEMA,
    LINK_COLUMN_NAMES,
    SPAN_ARROW_SCHEMA,
    insert_arrow,
)

MAGIC = b"PAR1"
BATCH_ROWS = 8192

# The store columns a `spans` file must have: the raw span; the typed columns are derived again.
_SPAN_INPUT = ("trace_id", "span_id", "parent_span_id", "trace_state", "name", "kind", "start_ns", "end_ns",
               "status_code", "status_message", "scope_name", "scope_version", "attributes",
               "resource_attributes", "events", "source", *DROPPED_COUNT_COLUMNS)
_OTEL_REQUIRED = ("Timestamp", "TraceId", "SpanId")
_EVENT_FIELDS = ("Timestamp", "Name", "Attributes")
_LINK_FIELDS = ("TraceId", "SpanId", "TraceState", "Attributes")
_BOOLEAN_ATTRIBUTES = frozenset(sc.MESSAGING_DESTINATION_TEMPORARY)
_SCOPE_NAME_ATTR, _SCOPE_VERSION_ATTR = "otel.scope.name", "otel.scope.version"


def layout_of(names) -> str | None:
    """`spans`, `span_links` or `otel_traces` for a file with these column names, else None."""
    names = set(names)
    if all(c in names for c in _OTEL_REQUIRED):
        return "otel_traces"
    if set(LINK_COLUMN_NAMES) <= names and "start_ns" not in names:
        return "span_links"
    if all(c in names for c in ("trace_id", "span_id", "start_ns", "end_ns", "attributes")):
        return "spans"
    return None


def load(stream, sink: FileSink) -> None:
    """Load one Parquet file (a seekable binary stream) into the sink."""
    try:
        pf = pq.ParquetFile(stream)
    except (pa.ArrowException, OSError) as exc:
        sink.error("", f"not a readable Parquet file ({exc}); nothing was loaded")
        return
    names = pf.schema_arrow.names
    layout = layout_of(names)
    if layout is None:
        sink.error("", f"a Parquet file, but its columns ({', '.join(names[:12])}"
                       f"{', …' if len(names) > 12 else ''}) are neither choreoscope's `spans`/`span_links` "
                       "export nor the ClickHouse exporter's otel_traces table; nothing was loaded")
        return
    sink.result.format = f"parquet ({layout})"
    wanted = {"spans": _SPAN_INPUT, "span_links": LINK_COLUMN_NAMES, "otel_traces": None}[layout]
    columns = None if wanted is None else [c for c in wanted if c in names]
    add_batch = {"spans": _add_store_spans, "span_links": _add_store_links, "otel_traces": _add_otel_traces}[layout]
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=columns):
            add_batch(batch, sink, row)
            row += batch.num_rows
            sink.maybe_flush()
    except (pa.ArrowException, OSError, ValueError, TypeError) as exc:
        sink.error(f"row {row}", f"cannot read the Parquet file from here on ({exc}); the rows before were loaded")


def _list(batch: pa.RecordBatch, name: str, default=None) -> list:
    """One column as Python values (`default` for each row if the column is absent)."""
    i = batch.schema.get_field_index(name)
    if i < 0:
        return [default] * batch.num_rows
    return batch.column(i).to_pylist()


def _epoch_ns(arr: pa.Array) -> pa.Array:
    """Timestamps (any unit, any time zone) or integers of nanoseconds as int64 nanoseconds."""
    if pa.types.is_timestamp(arr.type):
        if arr.type.unit != "ns":
            arr = arr.cast(pa.timestamp("ns", tz=arr.type.tz))
        return arr.cast(pa.int64())
    if pa.types.is_integer(arr.type):
        return arr.cast(pa.int64())
    raise ValueError(f"a time column of type {arr.type} (expected a timestamp or integer nanoseconds)")


def _epoch_ns_lists(arr: pa.Array) -> pa.Array:
    """A list column of timestamps as lists of int64 nanoseconds."""
    return pa.ListArray.from_arrays(arr.offsets, _epoch_ns(arr.values),
                                    mask=arr.is_null() if arr.null_count else None)


def _nested(batch: pa.RecordBatch, prefix: str, fields: tuple[str, ...]) -> dict[str, pa.Array] | None:
    """A Nested column's parallel arrays: `Events.Name`, … as ClickHouse flattens them, or the
    fields of one list<struct> column `Events`. None if the file has neither."""
    schema = batch.schema
    if any(schema.get_field_index(f"{prefix}.{f}") >= 0 for f in fields):
        return {f: batch.column(i) for f in fields if (i := schema.get_field_index(f"{prefix}.{f}")) >= 0}
    i = schema.get_field_index(prefix)
    if i < 0:
        return None
    col = batch.column(i)
    if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)) or not pa.types.is_struct(
            col.type.value_type):
        raise ValueError(f"column {prefix} is {col.type}, expected a Nested column (list of struct)")
    values = col.values
    return {f: pa.ListArray.from_arrays(col.offsets, values.field(f)) for f in fields
            if values.type.get_field_index(f) >= 0}


def _sparse(arrays: dict[str, pa.Array] | None, fields: tuple[str, ...]) -> dict[int, tuple]:
    """{row: (field lists…)} for the rows whose Nested column is not empty: most spans have no
    events or links, and converting only the others to Python is much cheaper."""
    if not arrays:
        return {}
    lengths = None
    for arr in arrays.values():
        n = pc.list_value_length(arr).fill_null(0)
        lengths = n if lengths is None else pc.max_element_wise(lengths, n)
    rows = pc.indices_nonzero(lengths)
    if not len(rows):
        return {}
    cols = [arrays[f].take(rows).to_pylist() if f in arrays else [None] * len(rows) for f in fields]
    return dict(zip(rows.to_pylist(), zip(*cols)))


def _name_map(strip: str, names: tuple[str, ...], default: str):
    """SPAN_KIND_SERVER / Server / SERVER -> SERVER (and the status codes alike), memoised."""
    memo: dict = {}

    def convert(value):
        try:
            return memo[value]
        except KeyError:
            text = (value or "").upper()
            text = text.removeprefix(strip)
            memo[value] = out = text if text in names else default
            return out
    return convert


def _kind_converter():
    return _name_map("SPAN_KIND_", sc.SPAN_KINDS, sc.SPAN_KINDS[0])


def _status_converter():
    return _name_map("STATUS_CODE_", sc.STATUS_CODES, sc.STATUS_CODES[0])


def _restore_booleans(attrs: dict) -> dict:
    for name in _BOOLEAN_ATTRIBUTES & attrs.keys():
        if attrs[name] in ("true", "false"):
            attrs[name] = attrs[name] == "true"
    return attrs


def _add_otel_traces(batch: pa.RecordBatch, sink: FileSink, first_row: int) -> None:
    n = batch.num_rows
    schema = batch.schema
    start = _epoch_ns(batch.column(schema.get_field_index("Timestamp"))).to_pylist()
    duration = _list(batch, "Duration", 0)
    trace_ids, span_ids, parents = _list(batch, "TraceId"), _list(batch, "SpanId"), _list(batch, "ParentSpanId")
    states, names = _list(batch, "TraceState"), _list(batch, "SpanName", "")
    kinds, statuses, messages = _list(batch, "SpanKind"), _list(batch, "StatusCode"), _list(batch, "StatusMessage")
    services, resources, span_attrs = _list(batch, "ServiceName"), _list(batch, "ResourceAttributes"), \
        _list(batch, "SpanAttributes")
    scope_in_columns = schema.get_field_index("ScopeName") >= 0
    scope_names, scope_versions = _list(batch, "ScopeName"), _list(batch, "ScopeVersion")
    events = _nested(batch, "Events", _EVENT_FIELDS)
    if events and "Timestamp" in events:
        events["Timestamp"] = _epoch_ns_lists(events["Timestamp"])
    events_of, links_of = _sparse(events, _EVENT_FIELDS), _sparse(_nested(batch, "Links", _LINK_FIELDS), _LINK_FIELDS)
    kind_of, status_of = _kind_converter(), _status_converter()
    add = sink.batch.add
    path = sink.result.path
    last_res_items, last_service, res = None, None, {}
    for i in range(n):
        res_items, service = resources[i], services[i]
        if res_items != last_res_items or service != last_service:
            res = dict(res_items or ())
            if service and sc.SERVICE_NAME not in res:
                res[sc.SERVICE_NAME] = service
            last_res_items, last_service = res_items, service
        attrs = dict(span_attrs[i] or ())
        if not _BOOLEAN_ATTRIBUTES.isdisjoint(attrs):
            _restore_booleans(attrs)
        if scope_in_columns:
            scope_name, scope_version = scope_names[i], scope_versions[i]
        else:
            scope_name, scope_version = attrs.pop(_SCOPE_NAME_ATTR, None), attrs.pop(_SCOPE_VERSION_ATTR, None)
        span_events = span_links = None
        if i in events_of:
            span_events = [
                {"name": name or "", "time_ns": t, "attributes": _restore_booleans(dict(a or ()))}
                for t, name, a in zip_longest(*(c or () for c in events_of[i]))
            ]
        if i in links_of:
            span_links = [Link(t or "", s or "", st or None, dict(a or ()))
                          for t, s, st, a in zip_longest(*(c or () for c in links_of[i]))]
        begin = start[i]
        add(
            trace_id=trace_ids[i] or "", span_id=span_ids[i] or "", parent_span_id=parents[i] or None,
            trace_state=states[i], name=names[i] or "", kind=kind_of(kinds[i]),
            start_ns=begin, end_ns=None if begin is None else begin + (duration[i] or 0),
            status_code=status_of(statuses[i]), status_message=messages[i],
            attributes=attrs, resource_attributes=res, scope_name=scope_name, scope_version=scope_version,
            events=span_events, links=span_links,
            # the exporter's table has no columns for the sender's dropped counts
            dropped_attributes_count=None, dropped_events_count=None, dropped_links_count=None,
            where=f"{path}: row {first_row + i}: span {span_ids[i]!r} ({names[i]!r})",
        )


def _loads(text, default):
    if text is None:
        return default
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # NaN, integers beyond 64 bits: what the store's json writes
        return json.loads(text)


def _add_store_spans(batch: pa.RecordBatch, sink: FileSink, first_row: int) -> None:
    cols = {name: _list(batch, name) for name in _SPAN_INPUT}
    path = sink.result.path
    spans = sink.batch
    last_res_text, res = None, {}
    for i, (tid, sid, pid, state, name, kind, start, end, status, message, scope_name, scope_version,
            attrs, res_text, events, source, dropped_attributes, dropped_events,
            dropped_links) in enumerate(zip(*cols.values())):
        if res_text != last_res_text:
            res, last_res_text = _loads(res_text, {}), res_text
        spans.source = source or path
        spans.add(
            trace_id=tid or "", span_id=sid or "", parent_span_id=pid, trace_state=state, name=name or "",
            kind=kind or sc.SPAN_KINDS[0], start_ns=start, end_ns=end, status_code=status or sc.STATUS_CODES[0],
            status_message=message, attributes=_loads(attrs, {}), resource_attributes=res,
            scope_name=scope_name, scope_version=scope_version, events=_loads(events, None),
            dropped_attributes_count=dropped_attributes, dropped_events_count=dropped_events,
            dropped_links_count=dropped_links,
            where=f"{path}: row {first_row + i}: span {sid!r} ({name!r})",
        )
    spans.source = path


def _add_store_links(batch: pa.RecordBatch, sink: FileSink, first_row: int) -> None:
    """Span links are stored as they are (ids checked); they need no span of this file."""
    rows = []
    for i, (tid, sid, ltid, lsid, state, attrs) in enumerate(zip(*(_list(batch, c) for c in LINK_COLUMN_NAMES))):
        try:
            rows.append((normalize_id(tid or "", 16, "trace id"), normalize_id(sid or "", 8, "span id"),
                         normalize_id(ltid or "", 16, "link trace id"), normalize_id(lsid or "", 8, "link span id"),
                         state or None, attrs if attrs is not None else "{}"))
        except BadId as exc:
            sink.error(f"row {first_row + i}", f"link skipped: {exc}")
    if not rows:
        return
    links = pa.Table.from_arrays([pa.array(list(c), type=f.type) for c, f in zip(zip(*rows), LINK_ARROW_SCHEMA)],
                                 schema=LINK_ARROW_SCHEMA)
    con = sink.con
    con.execute("BEGIN TRANSACTION")
    try:
        insert_arrow(con, SPAN_ARROW_SCHEMA.empty_table(), links)
        con.execute("COMMIT")
    except duckdb.Error as exc:
        con.execute("ROLLBACK")
        sink.error(f"row {first_row}", f"could not store {len(rows)} span links ({exc})")

