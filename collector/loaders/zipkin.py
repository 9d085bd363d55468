"""Zipkin v2 JSON: a list of spans, or a list of traces (a list of lists of spans).

Mapping: microseconds -> nanoseconds; `kind` as is (a kindless record is a local span,
INTERNAL); tags -> attributes (an `error` tag makes the status ERROR, its value the message);
annotations -> events; localEndpoint.serviceName -> service.name; remoteEndpoint.serviceName ->
peer.service; 64-bit ids are left-padded to 128 bits.

Records that share an id (Zipkin's shared-span model, see real_traces/SOURCES.md):
- a SERVER record marked `shared: true` is the server half of an RPC whose client half has the
  same id. It becomes a span of its own with a derived id (first 8 bytes of
  sha256("<trace id>:<id>:server"), plus the record's endpoint and timestamp when one client
  half fans out to several server halves) and the client half as its parent. Children of that
  id recorded by the server's service hang under the server half — Jaeger's zipkin span-id
  deduper does the same. Derived ids are deterministic, so loading a file twice adds nothing.
- every other record with the same (trace id, id) is a part of one span and merges into it:
  tags and annotations unioned, the earliest timestamp, the latest end, kind/name/endpoints from
  the part that has them. A kindless part recorded by the server's service merges into the
  server half.

Broker tags are mapped onto the messaging conventions, so analysis sees messaging spans:
- `kafka.topic` -> messaging.system=kafka, destination = the topic; `kafka.key` and
  `kafka.partition` -> the message key and partition attributes;
- `rabbit.exchange` / `rabbit.queue` / `rabbit.routing_key` -> messaging.system=rabbitmq; the
  destination of a producer is the exchange if non-empty, else the routing key (the default
  exchange routes by routing key = queue name); of a consumer, the queue (else exchange, else
  routing key);
- a PRODUCER or CONSUMER whose remote service is `kafka` or `rabbitmq` gets that system even
  without tags; PRODUCER -> operation `send`, CONSUMER -> `receive`;
- Brave's `sql.query` tag -> `db.statement` (so the tables are read from the statement text, as for
  OTel's SQL instrumentations) with `db.system` = the remote service when it names a database
  (`mysql`, `postgresql`, ...), else `other_sql`;
- SmartThings' Kafka hops are recorded as RPCs: a SERVER span named `receive <topic>` with a
  `kafka.partition` tag is a Kafka consumer of <topic> (kind CONSUMER, the recorded kind kept in
  `zipkin.kind`), and its client half `send <topic>` is the producer (kind PRODUCER).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

from choreoscope.collector import semconv as sc
from choreoscope.collector.loaders import walked_arrow
from choreoscope.collector.loaders.sink import FileSink
from choreoscope.collector.spanbatch import (
    _HEX_SPAN,
    _HEX_TRACE,
    _ZERO_SPAN,
    _ZERO_TRACE,
    BadId,
    normalize_id,
    pop_non_otlp_dropped,
)

_KINDS = {"CLIENT", "SERVER", "PRODUCER", "CONSUMER"}
_BROKERS = {sc.MESSAGING_SYSTEM_KAFKA, sc.MESSAGING_SYSTEM_RABBITMQ}


def spans_of(obj) -> list | None:
    """The Zipkin span records a JSON document holds (flattened), or None if it is not Zipkin v2."""
    if not isinstance(obj, list) or not obj:
        return None
    if all(isinstance(t, list) for t in obj):
        flat = [s for t in obj for s in t]
    else:
        flat = obj
    if flat and isinstance(flat[0], dict) and "traceId" in flat[0] and "id" in flat[0]:
        return flat
    return None


@dataclass
class _Part:
    """One stored span assembled from one or more records."""

    trace_id: str
    span_id: str
    parent_id: str | None
    records: list[tuple[int, dict]] = field(default_factory=list)
    server_half_of: str | None = None  # original id, for a shared SERVER record

    @property
    def service(self) -> str | None:
        for _, r in self.records:
            if r.get("kind"):
                return _service(r)
        return _service(self.records[0][1])


def _service(record: dict) -> str | None:
    return (record.get("localEndpoint") or {}).get("serviceName")


def _endpoint_key(record: dict) -> tuple:
    ep = record.get("localEndpoint") or {}
    return (ep.get("ipv4"), ep.get("ipv6"), ep.get("port"))


def derived_server_id(trace_id: str, span_id: str, extra: str = "") -> str:
    """The id given to the server half of a shared Zipkin span (deterministic)."""
    digest = hashlib.sha256(f"{trace_id}:{span_id}:server{extra}".encode()).hexdigest()[:16]
    return digest if digest != "0" * 16 else "1" * 16


def load_records(records: list, sink: FileSink) -> None:
    """Validate, group and add the Zipkin records of one document."""
    valid: list[tuple[int, dict, str, str, str | None]] = []
    for n, rec in enumerate(records, start=1):
        place = f"record {n}"
        if not isinstance(rec, dict):
            sink.error(place, f"expected a span object, found {type(rec).__name__}; skipped")
            sink.result.spans_rejected += 1
            continue
        try:
            # normalize_id, inline for ids already in their stored form
            tid = rec.get("traceId")
            if not (type(tid) is str and _HEX_TRACE(tid) and tid != _ZERO_TRACE):
                tid = normalize_id(tid, 16, "traceId", pad=True)
            sid = rec.get("id")
            if not (type(sid) is str and _HEX_SPAN(sid) and sid != _ZERO_SPAN):
                sid = normalize_id(sid, 8, "id", pad=True)
            pid = rec.get("parentId")
            if not pid:
                pid = None
            elif not (type(pid) is str and _HEX_SPAN(pid) and pid != _ZERO_SPAN):
                pid = normalize_id(pid, 8, "parentId", pad=True)
            if not (type(rec.get("timestamp")) is int and type(rec.get("duration")) is int):
                _check_times(rec)
            _check_shapes(rec)
        except BadId as exc:
            sink.error(place, f"span {rec.get('id')!r} ({rec.get('name')!r}): {exc}; skipped")
            sink.result.spans_rejected += 1
            continue
        valid.append((n, rec, tid, sid, pid))

    try:
        parts = _assemble(valid)
        kafka_sends = {}  # client-half id -> topic, for SmartThings' "receive <topic>" server halves
        for part in parts:
            lead = part.records[0][1]
            words = str(lead.get("name") or "").split(" ", 1)
            if part.server_half_of and len(words) == 2 and words[0] == "receive" and \
                    sc.ZIPKIN_KAFKA_PARTITION in (lead.get("tags") or {}):
                kafka_sends[(part.trace_id, part.server_half_of)] = words[1]
    except _RECORD_ERRORS as exc:  # _check_shapes should have refused the record that did this
        sink.error("", f"not valid Zipkin v2 JSON ({type(exc).__name__}: {exc}); nothing of this "
                       "document was loaded")
        sink.result.spans_rejected += len(valid)
        return
    if not walked_arrow.COLUMNAR:
        _walk_parts(parts, sink, kafka_sends)
        return
    # runs of parts stored by columns (collector/loaders/walked_arrow.py); a run that path cannot
    # reproduce exactly is walked into the sink's batch, which words any problem
    path = sink.result.path
    walked_arrow.store_in_order(
        walked_arrow.runs([1] * len(parts), sink.chunk_spans),
        lambda run: _columns(parts[run[0]:run[1]], kafka_sends, path),
        lambda run: _walk_parts(parts[run[0]:run[1]], sink, kafka_sends), sink)


def _columns(parts: list[_Part], kafka_sends: dict, path: str):
    """The store tables of these spans, or None when they must be walked."""
    batch = walked_arrow.ColumnBatch(path)
    try:
        resources: dict = {}
        batch.rows.extend(_part_fields(part, kafka_sends, resources) for part in parts)
        return batch.tables() if len(batch) else None
    except walked_arrow.ERRORS:  # a span the walk rejects, or a value the columns do not take
        return None


def _walk_parts(parts: list[_Part], sink: FileSink, kafka_sends: dict) -> None:
    resources: dict = {}
    for part in parts:
        try:
            fields = _part_fields(part, kafka_sends, resources)
            sink.batch.add(**dict(zip(walked_arrow.FIELDS, fields)), id_pad=True,
                           where=f"{sink.result.path}:record {part.records[0][0]} (span {part.span_id}, "
                                 f"{fields[4]!r})")
        except _RECORD_ERRORS as exc:
            sink.error(f"record {part.records[0][0]}", f"span {part.span_id}: not a valid Zipkin span "
                                                       f"({type(exc).__name__}: {exc}); skipped")
            sink.result.spans_rejected += 1
        sink.maybe_flush()


# What a record with a field of an unexpected type can raise while it is assembled and mapped.
_RECORD_ERRORS = (TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError)
_SCALARS = (str, int, float, bool)


def _check_times(rec: dict) -> None:
    for key in ("timestamp", "duration"):
        if rec.get(key) is not None and not isinstance(rec[key], (int, float)):
            raise BadId(f"{key} {rec[key]!r} is not a number of microseconds")
        if isinstance(rec.get(key), float) and not math.isfinite(rec[key]):
            raise BadId(f"{key} {rec[key]!r} is not a finite number of microseconds")


_SCALAR_TYPES = frozenset(_SCALARS)


def _check_shapes(rec: dict) -> None:
    """Refuse (BadId, as the id checks do) a record whose fields the assembly relies on have the
    wrong JSON type: endpoints, tags and annotations must be objects/lists, their parts scalars."""
    get = rec.get
    local, remote, tags, kind, name = (get("localEndpoint"), get("remoteEndpoint"), get("tags"), get("kind"),
                                       get("name"))
    if ((local is None or type(local) is dict) and (remote is None or type(remote) is dict)
            and (tags is None or type(tags) is dict) and (kind is None or type(kind) is str)
            and (name is None or type(name) is str) and get("annotations") is None
            and (not local or all(v is None or type(v) in _SCALAR_TYPES for v in local.values()))
            and (not remote or all(v is None or type(v) in _SCALAR_TYPES for v in remote.values()))):
        return  # the usual record, of the types the checks below take
    for key in ("localEndpoint", "remoteEndpoint", "tags"):
        if rec.get(key) is not None and not isinstance(rec[key], dict):
            raise BadId(f"{key} {rec[key]!r} is not an object")
    for key in ("localEndpoint", "remoteEndpoint"):
        for part, value in (rec.get(key) or {}).items():
            if value is not None and not isinstance(value, _SCALARS):
                raise BadId(f"{key}.{part} {value!r} is not a string or number")
    for key in ("kind", "name"):
        if rec.get(key) is not None and not isinstance(rec[key], str):
            raise BadId(f"{key} {rec[key]!r} is not a string")
    annotations = rec.get("annotations")
    if annotations is not None and not isinstance(annotations, list):
        raise BadId(f"annotations {annotations!r} is not a list")
    for a in annotations or ():
        if isinstance(a, dict):
            ts, value = a.get("timestamp"), a.get("value")
            if ts is not None and (not isinstance(ts, int | float) or isinstance(ts, bool)
                                   or not math.isfinite(ts)):
                raise BadId(f"annotation timestamp {ts!r} is not a number of microseconds")
            if value is not None and not isinstance(value, _SCALARS):
                raise BadId(f"annotation value {value!r} is not a string")


def _assemble(valid: list[tuple[int, dict, str, str, str | None]]) -> list[_Part]:
    primary: dict[tuple[str, str], _Part] = {}
    servers: dict[tuple[str, str], list[_Part]] = {}
    shared = [v for v in valid if v[1].get("shared") and v[1].get("kind") == "SERVER"]
    others = [v for v in valid if not (v[1].get("shared") and v[1].get("kind") == "SERVER")]

    # Server halves: identical records (same endpoint and timestamp) are one span.
    by_id: dict[tuple[str, str], dict[tuple, list]] = {}
    for n, rec, tid, sid, _pid in shared:
        key = (*_endpoint_key(rec), rec.get("timestamp"))
        by_id.setdefault((tid, sid), {}).setdefault(key, []).append((n, rec))
    for (tid, sid), groups in by_id.items():
        many = len(groups) > 1
        for key, recs in groups.items():
            extra = ":" + ":".join(str(k) for k in key) if many else ""
            part = _Part(tid, derived_server_id(tid, sid, extra), sid, list(recs), server_half_of=sid)
            servers.setdefault((tid, sid), []).append(part)

    for n, rec, tid, sid, pid in others:
        halves = servers.get((tid, sid))
        if not rec.get("kind") and halves:
            half = _closest_half(halves, rec)
            if half is not None and _service(rec) == half.service and (
                (tid, sid) not in primary or primary[(tid, sid)].service != half.service
            ):
                half.records.append((n, rec))
                continue
        part = primary.get((tid, sid))
        if part is None:
            primary[(tid, sid)] = _Part(tid, sid, pid, [(n, rec)])
        else:
            part.records.append((n, rec))
            if part.parent_id is None:
                part.parent_id = pid

    # Children recorded by the server's service hang under the server half.
    for part in primary.values():
        if part.parent_id is None:
            continue
        halves = servers.get((part.trace_id, part.parent_id))
        if halves:
            half = _closest_half(halves, part.records[0][1])
            if half is not None and part.service == half.service:
                part.parent_id = half.span_id
    return list(primary.values()) + [h for hs in servers.values() for h in hs]


def _closest_half(halves: list[_Part], rec: dict) -> _Part | None:
    """The server half a record of the server's service belongs to: same endpoint, else the one
    that started last before the record, else the first."""
    if len(halves) == 1:
        return halves[0]
    same_service = [h for h in halves if h.service == _service(rec)] or halves
    same_ep = [h for h in same_service if _endpoint_key(h.records[0][1]) == _endpoint_key(rec)]
    candidates = same_ep or same_service
    ts = rec.get("timestamp")
    if ts is not None:
        before = [h for h in candidates if (h.records[0][1].get("timestamp") or 0) <= ts]
        if before:
            return max(before, key=lambda h: h.records[0][1].get("timestamp") or 0)
    return candidates[0]


def _resource(local: dict, resources: dict) -> dict:
    """The local endpoint as the resource: one dict for each endpoint of text values (`resources`
    holds them), so the resource's JSON is made once."""
    key = (local.get("serviceName"), local.get("ipv4"), local.get("ipv6"))
    cacheable = all(v is None or type(v) is str for v in key)
    if cacheable and key in resources:
        return resources[key]
    resource: dict = {}
    if local.get("serviceName"):
        resource[sc.SERVICE_NAME] = local["serviceName"]
    ips = [ip for ip in (local.get("ipv4"), local.get("ipv6")) if ip]
    if ips:
        resource[sc.HOST_IP] = ips
    if cacheable:
        resources[key] = resource
    return resource


def _part_fields(part: _Part, kafka_sends: dict, resources: dict) -> tuple:
    """One stored span as `SpanBatch.add`'s fields (a walked_arrow.SpanFields row)."""
    records = [r for _, r in part.records]
    if len(records) == 1:  # what the merge below makes of one record
        lead = records[0]
        tags = lead.get("tags") or {}
        start_us = lead.get("timestamp")
        duration = lead.get("duration")
        end_us = start_us + duration if start_us is not None and duration is not None else start_us
        name = lead.get("name") or ""
        local = lead.get("localEndpoint") or {}
        remote = lead.get("remoteEndpoint") or {}
        attrs: dict = dict(tags)  # (JSON keys are text)
    else:
        lead = next((r for r in records if r.get("kind")), records[0])
        tags = {}
        for r in records:
            for k, v in (r.get("tags") or {}).items():
                tags.setdefault(k, v)
        for k, v in (lead.get("tags") or {}).items():
            tags[k] = v
        starts = [r["timestamp"] for r in records if r.get("timestamp") is not None]
        ends = [r["timestamp"] + r["duration"] for r in records
                if r.get("timestamp") is not None and r.get("duration") is not None]
        start_us = min(starts) if starts else None
        end_us = max(ends) if ends else start_us
        name = lead.get("name") or next((r.get("name") for r in records if r.get("name")), "")
        local = lead.get("localEndpoint") or next((r["localEndpoint"] for r in records if r.get("localEndpoint")), {})
        remote = lead.get("remoteEndpoint") or next(
            (r["remoteEndpoint"] for r in records if r.get("remoteEndpoint")), {})
        attrs = {str(k): v for k, v in tags.items()}
    annotations = {}
    for r in records:
        for a in r.get("annotations") or ():
            if isinstance(a, dict) and a.get("timestamp") is not None:
                annotations[(a["timestamp"], a.get("value"))] = a
    kind = lead.get("kind") or "INTERNAL"
    if kind not in _KINDS:
        kind = "INTERNAL"

    status, message = "UNSET", None
    if sc.ZIPKIN_ERROR in tags:
        status = "ERROR"
        message = str(tags[sc.ZIPKIN_ERROR]) or None
    if remote.get("serviceName"):
        attrs[sc.PEER_SERVICE_NAME] = remote["serviceName"]
    if remote.get("ipv4") or remote.get("ipv6"):
        attrs[sc.NETWORK_PEER_ADDRESS] = remote.get("ipv4") or remote.get("ipv6")
    if remote.get("port"):
        attrs[sc.NETWORK_PEER_PORT] = remote["port"]
    kind = _map_messaging(kind, name, attrs, remote, kafka_sends.get((part.trace_id, part.span_id)))
    _map_database(attrs, remote)

    resource = _resource(local, resources)
    events = [
        {"name": str(a.get("value", "")), "time_ns": int(a["timestamp"]) * 1000, "attributes": {}}
        for a in sorted(annotations.values(), key=lambda a: a["timestamp"])
    ]
    dropped_attributes, dropped_events, dropped_links = pop_non_otlp_dropped(attrs)
    return (part.trace_id, part.span_id, part.parent_id, None, name, kind,
            int(start_us * 1000) if start_us is not None else None,
            int(end_us * 1000) if end_us is not None else None, status, message, attrs, resource, None, None,
            events, None, dropped_attributes, dropped_events, dropped_links)


# Remote service names that name the database itself (Brave sets the remote endpoint to it), as
# the db.system value.
_SQL_SYSTEMS = {name: name for name in ("mysql", "mariadb", "postgresql", "oracle", "mssql", "sqlite", "h2",
                                        "hsqldb", "db2", "derby")} | {"postgres": "postgresql"}


def _map_database(attrs: dict, remote: dict) -> None:
    """Brave's `sql.query` as the OTel statement attribute, with a db.system (see the module docstring)."""
    query = attrs.get(sc.ZIPKIN_SQL_QUERY)
    if not isinstance(query, str) or not query.strip() or any(k in attrs for k in sc.DB_QUERY_TEXT):
        return
    attrs[sc.DB_QUERY_TEXT[1]] = query
    if not any(k in attrs for k in sc.DB_SYSTEM):
        peer = str(remote.get("serviceName", "")).lower()
        attrs[sc.DB_SYSTEM[1]] = _SQL_SYSTEMS.get(peer, sc.DB_SYSTEM_OTHER_SQL)


def _map_messaging(kind: str, name: str, attrs: dict, remote: dict, kafka_send_topic: str | None) -> str:
    """Set messaging.* attributes from broker tags; returns the span kind to store.

    `kafka_send_topic` is set when this span is the client half of a SmartThings Kafka receive.
    """
    system = destination = None
    if sc.ZIPKIN_KAFKA_TOPIC in attrs:
        system, destination = sc.MESSAGING_SYSTEM_KAFKA, attrs[sc.ZIPKIN_KAFKA_TOPIC]
    elif any(k in attrs for k in (sc.ZIPKIN_RABBIT_EXCHANGE, sc.ZIPKIN_RABBIT_QUEUE, sc.ZIPKIN_RABBIT_ROUTING_KEY)):
        system = sc.MESSAGING_SYSTEM_RABBITMQ
        exchange = attrs.get(sc.ZIPKIN_RABBIT_EXCHANGE) or None
        queue = attrs.get(sc.ZIPKIN_RABBIT_QUEUE) or None
        routing = attrs.get(sc.ZIPKIN_RABBIT_ROUTING_KEY) or None
        if kind == "CONSUMER":
            destination = queue or exchange or routing
        else:
            destination = exchange or routing or queue
        if routing:
            attrs[sc.MESSAGING_RABBITMQ_ROUTING_KEY] = routing
    elif kind in ("PRODUCER", "CONSUMER") and str(remote.get("serviceName", "")).lower() in _BROKERS:
        system = str(remote["serviceName"]).lower()

    # SmartThings: Kafka hops recorded as a CLIENT "send <topic>" / shared SERVER "receive <topic>".
    words = name.split(" ", 1)
    if len(words) == 2 and sc.ZIPKIN_KAFKA_PARTITION in attrs and kind == "SERVER" and words[0] == "receive":
        attrs[sc.ZIPKIN_ORIGINAL_KIND] = kind
        kind, system, destination = "CONSUMER", sc.MESSAGING_SYSTEM_KAFKA, words[1]
    elif kind == "CLIENT" and kafka_send_topic and name == f"send {kafka_send_topic}":
        attrs[sc.ZIPKIN_ORIGINAL_KIND] = kind
        kind, system, destination = "PRODUCER", sc.MESSAGING_SYSTEM_KAFKA, kafka_send_topic

    if system:
        attrs.setdefault(sc.MESSAGING_SYSTEM_NAME, system)
        if destination:
            attrs.setdefault(sc.MESSAGING_DESTINATION_NAME, destination)
        if kind == "PRODUCER":
            attrs.setdefault(sc.MESSAGING_OPERATION_TYPE, "send")
        elif kind == "CONSUMER":
            attrs.setdefault(sc.MESSAGING_OPERATION_TYPE, "receive")
        if system == sc.MESSAGING_SYSTEM_KAFKA:
            if sc.ZIPKIN_KAFKA_KEY in attrs:
                attrs.setdefault(sc.MESSAGING_KAFKA_MESSAGE_KEY, attrs[sc.ZIPKIN_KAFKA_KEY])
            if sc.ZIPKIN_KAFKA_PARTITION in attrs:
                attrs.setdefault(sc.MESSAGING_DESTINATION_PARTITION_ID, str(attrs[sc.ZIPKIN_KAFKA_PARTITION]))
    return kind
