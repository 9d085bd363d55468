"""The stitched workflow instances as an OCEL 2.0 event log (JSON), for process-mining tools.

Object types: `workflow_instance` (one per instance of `instances`), `service` (one per observed
service, its `version` attribute changing over time as new versions appear) and `message` (one per
message sent: the producer span's `messaging.message.id` within its destination, or the producer
span itself when it carries none; a consumer whose producer was never seen gets the message of its
own message id). Event types are steps; one event per handler or producer span (roles server,
consumer, producer — the steps a team names), at its clock-skew-corrected start, related to its
instance (`instance`), its service (`service`) and the message it sends (`sends`) or handles
(`handles`). Built from the analysis tables, after `run_pipeline`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from importlib import resources

import duckdb

EVENT_ROLES = ("server", "consumer", "producer")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

EVENT_ATTRIBUTES = [("trace_id", "string"), ("span_id", "string"), ("service", "string"),
                    ("role", "string"), ("operation", "string"), ("workflow", "string"),
                    ("error", "boolean"), ("duration_ms", "float"), ("retry_attempt", "integer"),
                    ("destination", "string"), ("message_id", "string")]
OBJECT_ATTRIBUTES = {
    "workflow_instance": [("workflow", "string"), ("entry_trace_id", "string"), ("spans", "integer"),
                          ("traces", "integer"), ("errors", "integer"), ("end", "time")],
    "service": [("version", "string")],
    "message": [("destination", "string"), ("message_id", "string")],
}


def ocel_schema() -> dict:
    """The OCEL 2.0 JSON schema shipped with choreoscope (written from the specification)."""
    return json.loads(resources.files("choreoscope.analysis").joinpath("ocel2_schema.json").read_text())


def iso(ns: int | None) -> str:
    """Nanoseconds since the epoch as ISO 8601 UTC, to the microsecond."""
    return (EPOCH + timedelta(microseconds=int(ns or 0) // 1000)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def instance_object_id(instance_id: str) -> str:
    return f"instance:{instance_id}"


def service_object_id(service: str) -> str:
    return f"service:{service}"


def message_object_id(destination: str | None, message_id: str | None, trace_id: str, span_id: str) -> str:
    if message_id:
        return f"message:{destination or ''}/{message_id}"
    return f"message:{trace_id}-{span_id}"


def _attrs(pairs) -> list[dict]:
    return [{"name": k, "value": v} for k, v in pairs if v is not None]


def build_ocel(con: duckdb.DuckDBPyConnection) -> dict:
    q = lambda sql, params=None: con.execute(sql, params or []).fetchall()
    roles = list(EVENT_ROLES)
    spans = q(
        "SELECT trace_id, span_id, step_id, service, role, operation, start_adj, end_adj, is_error, retry_attempt, "
        "messaging_destination, messaging_message_id, instance_id, workflow_id FROM span_steps "
        "WHERE role IN (?, ?, ?) ORDER BY start_adj, trace_id, span_id", roles)

    objects: dict[str, dict] = {}
    messages_of: dict[tuple[str, str], list[str]] = {}  # (trace, span) -> message objects it sends/handles

    def message(destination, message_id, trace_id, span_id, start, instance_id) -> str:
        oid = message_object_id(destination, message_id, trace_id, span_id)
        if oid not in objects:
            objects[oid] = {"id": oid, "type": "message",
                            "attributes": [dict(a, time=iso(start)) for a in
                                           _attrs([("destination", destination), ("message_id", message_id)])],
                            "relationships": [{"objectId": instance_object_id(instance_id), "qualifier": "in"}]}
        return oid

    # Producers (of any role) of the events consumers handled, and the messages they sent.
    for ctrace, cspan, ptrace, pspan, dest, mid, start, instance_id in q(
        "SELECT e.dst_trace_id, e.dst_span_id, p.trace_id, p.span_id, p.messaging_destination, "
        "p.messaging_message_id, p.start_adj, p.instance_id FROM span_edges e "
        "JOIN span_steps p ON p.trace_id = e.src_trace_id AND p.span_id = e.src_span_id "
        "WHERE e.via = 'event' ORDER BY p.start_adj, p.trace_id, p.span_id"
    ):
        oid = message(dest, mid, ptrace, pspan, start, instance_id)
        messages_of.setdefault((ptrace, pspan), [])
        if oid not in messages_of[(ptrace, pspan)]:
            messages_of[(ptrace, pspan)].append(oid)
        messages_of.setdefault((ctrace, cspan), [])
        if oid not in messages_of[(ctrace, cspan)]:
            messages_of[(ctrace, cspan)].append(oid)

    events = []
    for (trace_id, span_id, step, service, role, op, start, end, is_error, retry, dest, mid,
         instance_id, workflow_id) in spans:
        related = messages_of.get((trace_id, span_id))
        if not related and (role == "producer" or (role == "consumer" and mid)):
            # A send nobody consumed, or a message whose producer was never seen.
            related = [message(dest, mid, trace_id, span_id, start, instance_id)]
        rels = [{"objectId": instance_object_id(instance_id), "qualifier": "instance"},
                {"objectId": service_object_id(service), "qualifier": "service"}]
        rels += [{"objectId": m, "qualifier": "sends" if role == "producer" else "handles"}
                 for m in related or []]
        events.append({
            "id": f"{trace_id}-{span_id}", "type": step, "time": iso(start),
            "attributes": _attrs([
                ("trace_id", trace_id), ("span_id", span_id), ("service", service), ("role", role),
                ("operation", op), ("workflow", workflow_id), ("error", bool(is_error)),
                ("duration_ms", None if start is None or end is None else round((end - start) / 1e6, 3)),
                ("retry_attempt", None if retry is None else int(retry)), ("destination", dest),
                ("message_id", mid)]),
            "relationships": rels,
        })

    for instance_id, workflow_id, entry_trace, start, end, n_spans, traces, errors in q(
        "SELECT instance_id, workflow_id, entry_trace_id, start_adj, end_adj, spans, traces, errors "
        "FROM instances ORDER BY start_adj, instance_id"
    ):
        t = iso(start)
        oid = instance_object_id(instance_id)
        objects[oid] = {"id": oid, "type": "workflow_instance", "attributes": [
            dict(a, time=t) for a in _attrs([
                ("workflow", workflow_id), ("entry_trace_id", entry_trace), ("spans", int(n_spans)),
                ("traces", int(traces)), ("errors", int(errors)), ("end", iso(end))])]}
    versions: dict[str, list[dict]] = {}
    for service, version, first in q(
        "SELECT s.service, sp.service_version, min(s.start_adj) FROM span_steps s "
        "JOIN spans sp USING (trace_id, span_id) GROUP BY ALL ORDER BY 1, 3, 2"
    ):
        attrs = versions.setdefault(service, [])
        if version is not None:
            attrs.append({"name": "version", "time": iso(first), "value": version})
    for service, attrs in versions.items():
        oid = service_object_id(service)
        objects[oid] = {"id": oid, "type": "service", "attributes": attrs}

    type_attrs = lambda pairs: [{"name": n, "type": t} for n, t in pairs]
    return {
        "objectTypes": [{"name": name, "attributes": type_attrs(pairs)} for name, pairs in OBJECT_ATTRIBUTES.items()],
        "eventTypes": [{"name": step, "attributes": type_attrs(EVENT_ATTRIBUTES)}
                       for step in sorted({e["type"] for e in events})],
        "objects": sorted(objects.values(), key=lambda o: (list(OBJECT_ATTRIBUTES).index(o["type"]), o["id"])),
        "events": events,
    }


def validate_ocel(doc: dict) -> None:
    """Raise jsonschema.ValidationError if `doc` is not OCEL 2.0 JSON, ValueError if it refers to
    an undeclared type or a missing object."""
    import jsonschema

    jsonschema.validate(doc, ocel_schema(), format_checker=jsonschema.FormatChecker())
    object_types = {t["name"] for t in doc["objectTypes"]}
    event_types = {t["name"] for t in doc["eventTypes"]}
    ids = {o["id"] for o in doc["objects"]}
    if len(ids) != len(doc["objects"]) or len({e["id"] for e in doc["events"]}) != len(doc["events"]):
        raise ValueError("duplicate object or event ids")
    for o in doc["objects"]:
        if o["type"] not in object_types:
            raise ValueError(f"object {o['id']}: undeclared type {o['type']!r}")
    for e in doc["events"]:
        if e["type"] not in event_types:
            raise ValueError(f"event {e['id']}: undeclared type {e['type']!r}")
    for node in doc["events"] + doc["objects"]:
        for r in node.get("relationships", []):
            if r["objectId"] not in ids:
                raise ValueError(f"{node['id']}: relationship to missing object {r['objectId']!r}")
