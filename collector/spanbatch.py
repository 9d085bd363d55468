"""Normalise spans from any source into column batches for the store.

Every loader and the receiver hand spans to `SpanBatch.add` in one neutral form (hex ids,
attribute dicts, kind and status names), so the typed columns are derived in exactly one place.
A span that cannot be stored (bad ids) is rejected with a reason instead of sinking its batch.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
import pyarrow as pa

from choreoscope.collector import semconv as sc
from choreoscope.collector.sql_text import parse_statement
from choreoscope.collector.store import LINK_ARROW_SCHEMA, SPAN_ARROW_SCHEMA

_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_ZERO_IDS = {16: _ZERO_TRACE, 8: _ZERO_SPAN}
# An id already in its stored form (lowercase hex of the right width): OTLP JSON's hot path.
_HEX_ID = {16: re.compile("[0-9a-f]{32}").fullmatch, 8: re.compile("[0-9a-f]{16}").fullmatch}
_HEX_TRACE, _HEX_SPAN = _HEX_ID[16], _HEX_ID[8]


class BadId(ValueError):
    """An id that is not a valid W3C trace or span id."""


class BadSpan(ValueError):
    """A span the store cannot hold as sent (e.g. a timestamp beyond the int64 nanosecond range)."""


_MAX_NS = 2**63 - 1  # BIGINT; OTLP's fixed64 times allow more


def normalize_id(value, nbytes: int, what: str, *, pad: bool = False) -> str:
    """A trace (16 bytes) or span (8 bytes) id as lowercase hex, from bytes, hex or base64.

    `pad` left-pads shorter hex ids with zeros (Zipkin's 64-bit trace ids).
    """
    if type(value) is bytes and len(value) == nbytes:  # protobuf ids: the receiver's hot path
        text = value.hex()
        if text == _ZERO_IDS[nbytes]:
            raise BadId(f"{what} is all zeros")
        return text
    if type(value) is str and _HEX_ID[nbytes](value):  # the same text the general path gives
        if value == _ZERO_IDS[nbytes]:
            raise BadId(f"{what} is all zeros")
        return value
    if isinstance(value, (bytes, bytearray)):
        if len(value) != nbytes:
            raise BadId(f"{what} has {len(value)} bytes, expected {nbytes}")
        text = bytes(value).hex()
    elif isinstance(value, str):
        text = value.strip().lower()
        width = nbytes * 2
        if len(text) == width or (pad and 0 < len(text) < width):
            try:
                int(text, 16)
            except ValueError:
                text = _from_base64(value, nbytes, what)
            else:
                text = text.rjust(width, "0")
        else:
            text = _from_base64(value, nbytes, what)
    else:
        raise BadId(f"{what} has unsupported type {type(value).__name__}")
    if text == "0" * (nbytes * 2):
        raise BadId(f"{what} is all zeros")
    return text


def _from_base64(value: str, nbytes: int, what: str) -> str:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadId(f"{what} {value!r} is neither {nbytes * 2} hex digits nor base64") from None
    if len(raw) != nbytes:
        raise BadId(f"{what} {value!r} decodes to {len(raw)} bytes, expected {nbytes}")
    return raw.hex()


def _text(value) -> str | None:
    if value is None or isinstance(value, (list, dict, bytes, bytearray)):
        return None
    return value if isinstance(value, str) else str(value)


INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def _int(value) -> int | None:
    """An INTEGER typed column's value (HTTP status, retry attempt), or None when it is not an
    integer in the column's int32 range: a status of 2^40 is not a status, and it must not fail the
    batch's Arrow conversion (the attribute stays as sent in the attributes JSON)."""
    if value is None:
        return None
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if INT32_MIN <= number <= INT32_MAX else None


def _json_default(value):
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode()
    return str(value)


# One encoder for every call: json.dumps with options builds a new encoder each time, which
# costs more than encoding a span's attributes.
_json_std = json.JSONEncoder(separators=(",", ":"), default=_json_default).encode


def _json(value) -> str:
    """`value` as compact JSON text. orjson does it ~10x faster than json (2.5 µs a span of
    10 attributes, a sixth of decoding); json still does what orjson would write differently:
    NaN/Infinity (orjson writes null, losing them: any `null` goes to json), integers beyond
    64 bits and strings that are not valid UTF-8 (orjson refuses them). Non-ASCII text is
    written as UTF-8 rather than \\u escapes: the same JSON value."""
    try:
        out = orjson.dumps(value, default=_json_default)
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return _json_std(value)
    if b"null" in out:
        return _json_std(value)
    return out.decode()

# The typed columns filled from span attributes, in row order, each with the names it may
# arrive under (newest first). `_typed_values` finds them in one pass over the span's keys.
_TYPED_ATTRIBUTES = (
    sc.MESSAGING_SYSTEM, sc.MESSAGING_EVENT_NAME, sc.MESSAGING_OPERATION, sc.MESSAGING_MESSAGE_ID,
    sc.MESSAGING_CONSUMER_GROUP, sc.DB_SYSTEM, sc.DB_COLLECTION, sc.DB_OPERATION, sc.RPC_SYSTEM,
    sc.RPC_SERVICE, sc.RPC_METHOD, sc.HTTP_METHOD, sc.HTTP_ROUTE, sc.HTTP_STATUS_CODE,
    sc.SERVER_ADDRESS, sc.PEER_SERVICE, sc.RETRY_ATTEMPT,
)
_TYPED_NAME_INDEX = {
    name: (column, rank) for column, names in enumerate(_TYPED_ATTRIBUTES) for rank, name in enumerate(names)
}
_TYPED_NAMES = frozenset(_TYPED_NAME_INDEX)
_NO_TYPED_VALUES = (None,) * len(_TYPED_ATTRIBUTES)


def _messaging_operation(value) -> str:
    op = str(value).lower()
    return sc.MESSAGING_OPERATION_VALUES.get(op, op)


def _str(value) -> str | None:
    """Text for a typed column; an array or map value is no name (it stays in the JSON)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, dict, bytes, bytearray)):
        return None
    return str(value)


# How each typed column's value is made from the attribute value, in _TYPED_ATTRIBUTES order.
_TYPED_CONVERTERS = tuple(
    _int if names in (sc.HTTP_STATUS_CODE, sc.RETRY_ATTEMPT)
    else _messaging_operation if names == sc.MESSAGING_OPERATION
    else _str
    for names in _TYPED_ATTRIBUTES
)


def _typed_values(attrs: dict) -> tuple | list:
    """The typed column values, in _TYPED_ATTRIBUTES order: for each, the value `sc.first` picks
    (first non-empty name), as text (or int for the integer columns), messaging operation
    mapped to the current names. Touches only the columns the span has names for (a span
    usually has two or three)."""
    hits = attrs.keys() & _TYPED_NAMES
    if not hits:
        return _NO_TYPED_VALUES
    values = [None] * len(_TYPED_ATTRIBUTES)
    ranks: dict[int, int] = {}  # column -> rank of the name its value came from
    for name in hits:
        value = attrs[name]
        if value is None or value == "":
            continue
        column, rank = _TYPED_NAME_INDEX[name]
        if ranks.get(column, rank) < rank:
            continue  # a newer name of this column is present and set
        ranks[column] = rank
        values[column] = value
    for column in ranks:
        values[column] = _TYPED_CONVERTERS[column](values[column])
    return values


_DESTINATION_COLUMN = _TYPED_ATTRIBUTES.index(sc.MESSAGING_EVENT_NAME)
_SYSTEM_COLUMN = _TYPED_ATTRIBUTES.index(sc.MESSAGING_SYSTEM)
_ARN_NAMED_SERVICES = frozenset(("sns", "sqs"))


def _short_destination(value: str) -> str:
    """The name a team uses for a destination recorded as a full id: an SNS topic or SQS queue
    ARN (`arn:aws:sns:us-east-1:123456789012:order-events`, what botocore records) becomes its
    resource name (`order-events`), an SQS queue URL (`https://sqs.../123456789012/inventory-q`)
    its last path segment. Anything else is returned as it is. The full id stays in the
    attributes JSON (`aws.sns.topic.arn`, `messaging.destination(.name)`, `aws.queue_url`)."""
    if value.startswith("arn:"):
        parts = value.split(":", 5)
        if len(parts) == 6 and parts[2] in _ARN_NAMED_SERVICES and parts[5]:
            return parts[5]
        return value
    scheme, sep, rest = value.partition("://")
    if sep and scheme in ("http", "https"):
        path = rest.partition("?")[0].rstrip("/")
        if "/" in path:
            return path.rsplit("/", 1)[1]
    return value


def _destination_name(values, attrs: dict):
    """The typed `messaging_destination` column: the name a team calls the event by.

    - RabbitMQ: the routing key when one is recorded (`messaging.rabbitmq.destination.routing_key`
      new, `messaging.rabbitmq.routing_key` old, e.g. amqplib), else the exchange or queue in
      `messaging.destination(.name)`. On a topic or direct exchange every event shares the exchange
      (`pay`): naming events by it would collapse `payment.requested`, `payment.succeeded` and
      `refund.requested` into one. The exchange stays in the attributes JSON. (pika records no
      routing key at all: its spans keep the exchange.) The routing key's priority is the order of
      `sc.MESSAGING_EVENT_NAME`; this function only shortens ids.
    - SNS/SQS: topic and queue ARNs and SQS queue URLs become the topic or queue name
      (`_short_destination`); an SQS span with no destination name gets the queue's name from
      its queue URL (`aws.queue_url`, `messaging.url`).
    A template or temporary destination (`_destination_override`) still wins afterwards."""
    value = values[_DESTINATION_COLUMN]
    if value is None:
        if values[_SYSTEM_COLUMN] != sc.MESSAGING_SYSTEM_SQS:
            return values
        url = _str(sc.first(attrs, sc.MESSAGING_QUEUE_URL))
        short = _short_destination(url) if url else None
        if short is None or short == url:
            return values
    else:
        short = _short_destination(value)
        if short is value:
            return values
    values = list(values)
    values[_DESTINATION_COLUMN] = short
    return values
_DESTINATION_OVERRIDES = frozenset((sc.MESSAGING_DESTINATION_TEMPLATE, *sc.MESSAGING_DESTINATION_TEMPORARY))


def _destination_override(values, attrs: dict) -> list:
    """The destination column from the template, or TEMPORARY_DESTINATION for a temporary or
    anonymous destination, so per-request queues do not each become an event of their own."""
    raw = attrs.get(sc.MESSAGING_DESTINATION_TEMPLATE)
    template = _str(raw) if raw is not None else None
    temporary = any(attrs.get(name) is True for name in sc.MESSAGING_DESTINATION_TEMPORARY)
    if not template and not temporary:
        return values
    values = list(values)
    values[_DESTINATION_COLUMN] = template or sc.TEMPORARY_DESTINATION
    return values


_DB_SYSTEM_COLUMN = _TYPED_ATTRIBUTES.index(sc.DB_SYSTEM)
_DB_COLLECTION_COLUMN = _TYPED_ATTRIBUTES.index(sc.DB_COLLECTION)
_DB_OPERATION_COLUMN = _TYPED_ATTRIBUTES.index(sc.DB_OPERATION)
_QUERY_TEXT_OLD, _QUERY_TEXT_NEW = sc.DB_QUERY_TEXT[1], sc.DB_QUERY_TEXT[0]


def _from_query_text(values, attrs: dict):
    """db_collection (first table written, else first read) and db_operation from the statement
    text, for the many instrumentations that record the table only there. One cached lookup per
    span (collector/sql_text.py). A recorded table is kept. A recorded operation is kept, except
    SQLAlchemy's `<verb> <db.name>` ("INSERT shop.sqlite"), which becomes the verb; a session `SET`
    is not filled in (the analysis counts SET as a key-value write)."""
    facts = parse_statement(sc.first(attrs, sc.DB_QUERY_TEXT), values[_DB_SYSTEM_COLUMN])
    if facts is None:
        return values
    values = list(values)
    if facts.table is not None:
        values[_DB_COLLECTION_COLUMN] = facts.table
    recorded = values[_DB_OPERATION_COLUMN]
    if recorded is None:
        if facts.operation != "SET":
            values[_DB_OPERATION_COLUMN] = facts.operation
    elif recorded == f"{facts.operation} {sc.first(attrs, sc.DB_NAMESPACE)}":
        values[_DB_OPERATION_COLUMN] = facts.operation
    return values


@dataclass
class Link:
    trace_id: str
    span_id: str
    trace_state: str | None = None
    attributes: dict = field(default_factory=dict)


@dataclass
class SpanBatch:
    """Accumulates normalised span rows and link rows; `to_arrow` makes the insertable tables."""

    source: str = ""
    rows: list[tuple] = field(default_factory=list)
    link_rows: list[tuple] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    # The last resource seen and its JSON: spans of one resource share the dict, so it is encoded
    # once (the reference is held, so identity cannot be confused with a new dict).
    _last_resource: dict | None = field(default=None, repr=False)
    _last_resource_json: str = field(default="{}", repr=False)
    _last_service: tuple = field(default=(sc.UNKNOWN_SERVICE, None, None, None), repr=False)

    def __len__(self) -> int:
        return len(self.rows)

    def add(
        self,
        *,
        trace_id,
        span_id,
        parent_span_id=None,
        trace_state: str | None = None,
        name: str = "",
        kind: str = "UNSPECIFIED",
        start_ns: int | None = None,
        end_ns: int | None = None,
        status_code: str = "UNSET",
        status_message: str | None = None,
        attributes: dict | None = None,
        resource_attributes: dict | None = None,
        scope_name: str | None = None,
        scope_version: str | None = None,
        events: list | None = None,
        links: list[Link] | None = None,
        id_pad: bool = False,
        where: str | Callable[[], str] = "",
    ) -> bool:
        """Add one span. Returns False (and records why in `rejected`) if it cannot be stored.
        `where` names the span in that message; a callable is only called for a rejected span
        (a dump loader's place, with the span's name, costs more to format than to check)."""
        try:
            # ids already in their stored form (OTLP JSON) are taken as they are, as normalize_id would
            if type(trace_id) is str and _HEX_TRACE(trace_id) and trace_id != _ZERO_TRACE:
                tid = trace_id
            else:
                tid = normalize_id(trace_id, 16, "trace id", pad=id_pad)
            if type(span_id) is str and _HEX_SPAN(span_id) and span_id != _ZERO_SPAN:
                sid = span_id
            else:
                sid = normalize_id(span_id, 8, "span id", pad=id_pad)
            pid = None
            if type(parent_span_id) is str and _HEX_SPAN(parent_span_id) and parent_span_id != _ZERO_SPAN:
                pid = parent_span_id
            elif parent_span_id not in (None, "", b""):
                try:
                    pid = normalize_id(parent_span_id, 8, "parent span id", pad=id_pad)
                except BadId as exc:
                    if "all zeros" not in str(exc):
                        raise
            link_rows = []
            for link in links or ():
                link_rows.append(
                    (
                        tid,
                        sid,
                        normalize_id(link.trace_id, 16, "link trace id", pad=id_pad),
                        normalize_id(link.span_id, 8, "link span id", pad=id_pad),
                        link.trace_state or None,
                        _json(link.attributes or {}),
                    )
                )
            if not ((start_ns is None or 0 <= start_ns <= _MAX_NS) and (end_ns is None or 0 <= end_ns <= _MAX_NS)):
                for label, ns in (("start time", start_ns), ("end time", end_ns)):
                    if ns is not None and not 0 <= ns <= _MAX_NS:
                        raise BadSpan(f"{label} {ns} ns is outside the range the store holds (0 to 2^63-1)")
        except (BadId, BadSpan) as exc:
            if callable(where):
                where = where()
            self.rejected.append(f"{where}: {exc}" if where else str(exc))
            return False
        attrs = attributes or {}
        typed = _typed_values(attrs)
        destination = typed[_DESTINATION_COLUMN]
        if (destination is None and typed[_SYSTEM_COLUMN] is not None) or (
                destination is not None and (destination.startswith("arn:") or "://" in destination)):
            typed = _destination_name(typed, attrs)
        if not _DESTINATION_OVERRIDES.isdisjoint(attrs):
            typed = _destination_override(typed, attrs)
        if typed[_DB_COLLECTION_COLUMN] is None and (_QUERY_TEXT_OLD in attrs or _QUERY_TEXT_NEW in attrs):
            typed = _from_query_text(typed, attrs)
        res = resource_attributes or {}
        if res is not self._last_resource:
            self._last_resource = res
            self._last_resource_json = _json(res)
            self._last_service = (
                _text(res.get(sc.SERVICE_NAME)) or sc.UNKNOWN_SERVICE,
                _text(res.get(sc.SERVICE_VERSION)),
                _text(res.get(sc.SERVICE_NAMESPACE)),
                _text(res.get(sc.SERVICE_INSTANCE_ID)),
            )
        self.rows.append(
            (
                tid,
                sid,
                pid,
                trace_state or None,
                name or "",
                kind,
                start_ns,
                end_ns,
                status_code,
                status_message or None,
                *self._last_service,  # service_name .. service_instance_id
                scope_name or None,
                scope_version or None,
                *typed,  # messaging_system .. retry_attempt
                _json(attrs),
                self._last_resource_json,
                _json(events) if events else "[]",
                self.source,
            )
        )
        self.link_rows.extend(link_rows)
        return True

    def to_arrow(self) -> tuple[pa.Table, pa.Table]:
        """The span and link rows as Arrow tables in the store's column order."""
        return _table(self.rows, SPAN_ARROW_SCHEMA), _table(self.link_rows, LINK_ARROW_SCHEMA)


def _table(rows: list[tuple], schema: pa.Schema) -> pa.Table:
    if not rows:
        return schema.empty_table()
    n = len(rows)
    columns = [list(col) for col in zip(*rows)]  # pa.array converts lists ~20x faster than tuples
    # Most typed columns are empty for most spans; pa.nulls skips converting them.
    return pa.Table.from_arrays(
        [pa.nulls(n, f.type) if col.count(None) == n else pa.array(col, type=f.type)
         for col, f in zip(columns, schema)], schema=schema
    )
