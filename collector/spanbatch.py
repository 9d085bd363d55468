"""Normalise spans from any source into column batches for the store.

Every loader and the receiver hand spans to `SpanBatch.add` in one neutral form (hex ids,
attribute dicts, kind and status names), so the typed columns are derived in exactly one place.
A span that cannot be stored (bad ids) is rejected with a reason instead of sinking its batch.
A span beyond the limits (LIMITS: attributes, events, links, value length and depth, as the
OpenTelemetry SDKs bound them) is stored cut to them, what was cut counted in its dropped_* columns.
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

# --- limits ---------------------------------------------------------------------------------
# What one span may hold, as the OpenTelemetry SDKs bound it at the source (the SDK spec's
# SpanLimits, https://opentelemetry.io/docs/specs/otel/trace/sdk/#span-limits, and attribute limits,
# https://opentelemetry.io/docs/specs/otel/common/#attribute-limits). A receiver must not trust the
# sender to have applied them: a custom or misconfigured exporter, a dump written by anything, or a
# hostile request can carry a million attributes or one value of megabytes, and every span's
# attributes are parsed again by each analysis stage that reads its JSON. Beyond a limit the extra
# items are dropped (the first ones, in the order sent, are kept) and long values truncated, and
# each is counted in the span's dropped_* column, added to the sender's own OTLP counts.

# OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT's default: an SDK never sends more attributes on one span.
MAX_ATTRIBUTES = 128
# OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT's and OTEL_LINK_ATTRIBUTE_COUNT_LIMIT's defaults.
MAX_EVENT_ATTRIBUTES = 128
MAX_LINK_ATTRIBUTES = 128
# OTEL_SPAN_EVENT_COUNT_LIMIT's and OTEL_SPAN_LINK_COUNT_LIMIT's defaults.
MAX_EVENTS = 128
MAX_LINKS = 128
# Characters of a string value (bytes of a bytes value), each element of an array or map on its
# own, as the SDK truncates them. The SDK spec sets no default (OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT
# is unlimited) and neither does the Collector; a receiver needs a bound. 25,000 is what the
# Datadog Agent, a receiver of OTLP from arbitrary senders, truncates span tag values to
# (pkg/trace/traceutil/truncate.go MaxMetaValLen): far above what the analysis reads (names,
# routes, ids, SQL statements of a few KB) and what Elastic APM keeps (1,024) or Jaeger clients
# sent (256), so real statements and most stack traces are kept whole, while one span's
# attributes stay below 128 x 25,000 characters.
MAX_VALUE_LENGTH = 25_000
# Levels of array/map nesting in one attribute value (a scalar is 0, [1] is 1, {"a": [1]} is 2).
# OTLP's AnyValue allows any depth, the SDKs' attribute API none (flat values and arrays of
# scalars). The receiver's protobuf decoder (upb) refuses a message nested beyond its default
# recursion limit of 100 messages, ~31 map or ~47 array levels of AnyValue (400 / INVALID_ARGUMENT,
# tests/test_limits.py), and protobuf's JSON parser (OTLP/HTTP JSON) alike; 32 keeps about every
# value they can decode, while the dump loaders, whose JSON has no such limit, cannot store a value
# the store's JSON functions and the analysis would have to recurse through (orjson stops at 255
# levels, the json module at the interpreter's recursion limit). A deeper value is not cut in the
# middle: the attribute is dropped.
MAX_VALUE_DEPTH = 32

LIMITS = {
    "attributes per span": MAX_ATTRIBUTES, "attributes per event": MAX_EVENT_ATTRIBUTES,
    "attributes per link": MAX_LINK_ATTRIBUTES, "events per span": MAX_EVENTS, "links per span": MAX_LINKS,
    "attribute value length": MAX_VALUE_LENGTH, "attribute value depth": MAX_VALUE_DEPTH,
}

def pop_non_otlp_dropped(attrs: dict) -> tuple[int, int, int]:
    """The dropped counts a Jaeger or Zipkin span carries as tags (0 when absent, as the mapping
    writes none then), taken out of `attrs`: they are the span's record, not its attributes."""
    if attrs.keys().isdisjoint(sc.NON_OTLP_DROPPED):
        return 0, 0, 0
    return tuple(_count(attrs.pop(name, 0)) for name in sc.NON_OTLP_DROPPED)


_MAX_COUNT = 2**31 - 1  # the INTEGER the dropped counts are stored in (a larger count is stored as this)
_MAX_BRACKETS = MAX_VALUE_DEPTH + 1  # in an attributes object's JSON: its own brace, and the values'
_TOO_DEEP = object()


def _limit_value(value, depth: int):
    """`value` (an attribute value `depth` levels down) within the length and depth limits:
    (value, changed), or (_TOO_DEEP, True). Recurses at most MAX_VALUE_DEPTH levels."""
    kind = type(value)
    if kind is str or kind is bytes or kind is bytearray:
        return (value[:MAX_VALUE_LENGTH], True) if len(value) > MAX_VALUE_LENGTH else (value, False)
    if kind is list or kind is dict:
        if depth >= MAX_VALUE_DEPTH:
            return _TOO_DEEP, True
        changed = False
        if kind is list:
            out = []
            for item in value:
                item, cut = _limit_value(item, depth + 1)
                if item is _TOO_DEEP:
                    return _TOO_DEEP, True
                out.append(item)
                changed |= cut
        else:
            out = {}
            for key, item in value.items():
                item, cut = _limit_value(item, depth + 1)
                if item is _TOO_DEEP:
                    return _TOO_DEEP, True
                out[key] = item
                changed |= cut
        return (out, True) if changed else (value, False)
    return value, False


def limit_attributes(attrs: dict, max_count: int = MAX_ATTRIBUTES) -> tuple[dict, int]:
    """`attrs` within the limits, and how many attributes were dropped or truncated. The same dict
    when nothing was (the common case: callers test the cheap `_may_exceed` first)."""
    out: dict = {}
    cut = 0
    for i, (key, value) in enumerate(attrs.items()):
        if i >= max_count:
            cut += len(attrs) - max_count
            break
        value, changed = _limit_value(value, 0)
        if changed:
            cut += 1
            if value is _TOO_DEEP:
                continue
        out[key] = value
    return (out, cut) if cut else (attrs, 0)


def _may_exceed(attrs: dict, text: str, max_count: int) -> bool:
    """Whether `attrs`, written as the JSON `text`, may be beyond a limit. No string in it can be
    longer than the text, nor nest deeper than its brackets: for a normal span this is two
    length tests and two counts in C, and only a span that fails them is walked value by value."""
    return (len(attrs) > max_count or len(text) > MAX_VALUE_LENGTH
            or text.count("[") + text.count("{") > _MAX_BRACKETS)


def _attributes_json(attrs: dict, max_count: int) -> tuple[dict, str, int]:
    """(attrs within the limits, their JSON, attributes dropped or truncated)."""
    try:
        text = _json(attrs)
    except RecursionError:  # nested beyond what the encoder recurses through: cut below
        text = None
    if text is not None and not _may_exceed(attrs, text, max_count):
        return attrs, text, 0
    attrs, cut = limit_attributes(attrs, max_count)
    return attrs, (_json(attrs) if cut or text is None else text), cut


def _limit_events(events: list) -> tuple[list, int, int]:
    """(events within the limits, attributes dropped or truncated in them, events dropped)."""
    dropped_events = max(len(events) - MAX_EVENTS, 0)
    if dropped_events:
        events = events[:MAX_EVENTS]
    cut = 0
    out = None
    for i, event in enumerate(events):
        attrs = event.get("attributes") if type(event) is dict else None
        if type(attrs) is not dict or not attrs:
            continue
        limited, n = limit_attributes(attrs, MAX_EVENT_ATTRIBUTES)
        if n:
            cut += n
            if out is None:
                out = list(events)
            out[i] = {**event, "attributes": limited}
    return (out if out is not None else events), cut, dropped_events


def _events_json(events) -> tuple[str, int, int]:
    """(the events' JSON within the limits, attributes dropped or truncated in them, events
    dropped). The cheap test first, as `_may_exceed`: each event adds two brackets of its own."""
    if type(events) is not list:  # not OTLP's shape (a hostile dump): stored as it is
        try:
            return _json(events), 0, 0
        except RecursionError:
            return "[]", 0, 0
    try:
        text = _json(events)
    except RecursionError:
        text = None
    if (text is not None and len(events) <= MAX_EVENTS and len(text) <= MAX_VALUE_LENGTH
            and text.count("[") + text.count("{") <= MAX_VALUE_DEPTH + 1 + 2 * len(events)
            and _event_attribute_counts_fit(events)):
        return text, 0, 0
    limited, cut, dropped = _limit_events(events)
    if text is None or cut or dropped:
        try:
            text = _json(limited)
        except RecursionError:  # nested deeply outside the attributes (not OTLP's shape)
            return "[]", cut, len(events)
    return text, cut, dropped


def _event_attribute_counts_fit(events: list) -> bool:
    for event in events:
        attrs = event.get("attributes") if type(event) is dict else None
        if type(attrs) is dict and len(attrs) > MAX_EVENT_ATTRIBUTES:
            return False
    return True


def _count(value) -> int:
    """A sender's dropped count as stored: a non-negative integer of the INTEGER range (OTLP's
    counts are uint32: a larger one is stored as 2^31-1)."""
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return 0
    return min(max(number, 0), _MAX_COUNT)


def _total(sender, ours: int):
    """The stored count: the sender's (None: its format cannot say) plus ours."""
    if sender is None:
        return ours or None
    if type(sender) is not int or not 0 <= sender <= _MAX_COUNT:
        sender = _count(sender)
    return min(sender + ours, _MAX_COUNT) if ours else sender


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
        dropped_attributes_count: int | None = 0,
        dropped_events_count: int | None = 0,
        dropped_links_count: int | None = 0,
        id_pad: bool = False,
        where: str | Callable[[], str] = "",
    ) -> bool:
        """Add one span. Returns False (and records why in `rejected`) if it cannot be stored.
        `where` names the span in that message; a callable is only called for a rejected span
        (a dump loader's place, with the span's name, costs more to format than to check).

        The dropped counts are the sender's (OTLP's; `dropped_attributes_count` summed over the
        span, its events and its links), None from a format that cannot carry them. What the
        limits above drop or truncate is added to them."""
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
            cut_attributes = 0
            if links:
                if len(links) > MAX_LINKS:
                    dropped_links_count = _total(dropped_links_count, len(links) - MAX_LINKS)
                    links = links[:MAX_LINKS]
                seen: set[tuple[str, str]] = set()
                for link in links:
                    target = (normalize_id(link.trace_id, 16, "link trace id", pad=id_pad),
                              normalize_id(link.span_id, 8, "link span id", pad=id_pad))
                    if target in seen:  # the same link again: stored once, the first (store.py)
                        continue
                    seen.add(target)
                    _, link_json, n = _attributes_json(link.attributes or {}, MAX_LINK_ATTRIBUTES)
                    cut_attributes += n
                    link_rows.append((tid, sid, *target, link.trace_state or None, link_json))
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
        try:
            attrs_json = _json(attrs)
        except RecursionError:  # nested beyond what the encoder recurses through: cut below
            attrs_json = None
        # _may_exceed, inline: the hot path
        if attrs_json is None or len(attrs) > MAX_ATTRIBUTES or len(attrs_json) > MAX_VALUE_LENGTH \
                or attrs_json.count("[") + attrs_json.count("{") > _MAX_BRACKETS:
            attrs, attrs_json, n = _attributes_json(attrs, MAX_ATTRIBUTES)
            cut_attributes += n
        if events:
            events_json, n, n_events = _events_json(events)
            if n_events:
                dropped_events_count = _total(dropped_events_count, n_events)
            cut_attributes += n
        else:
            events_json = "[]"
        if cut_attributes or type(dropped_attributes_count) is not int or not 0 <= dropped_attributes_count <= _MAX_COUNT:
            dropped_attributes_count = _total(dropped_attributes_count, cut_attributes)
        if dropped_events_count and (type(dropped_events_count) is not int or not 0 < dropped_events_count <= _MAX_COUNT):
            dropped_events_count = _total(dropped_events_count, 0)
        if dropped_links_count and (type(dropped_links_count) is not int or not 0 < dropped_links_count <= _MAX_COUNT):
            dropped_links_count = _total(dropped_links_count, 0)
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
                attrs_json,
                self._last_resource_json,
                events_json,
                self.source,
                dropped_attributes_count,
                dropped_events_count,
                dropped_links_count,
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
