"""Trace dumps made by the real OpenTelemetry SDK, for loader tests: spans recorded in memory,
written as OTLP protobuf with the SDK's own encoder, or as Jaeger JSON exactly as Jaeger's query
API (`GET /api/traces/{id}`, also the UI's "Download JSON") emits it.

Jaeger's JSON model (jaeger `model/json/model.go`, and the OTLP->Jaeger translator in
opentelemetry-collector-contrib `pkg/translator/jaeger`): ids as lowercase hex; times in
microseconds; the parent as a CHILD_OF reference and each link as a FOLLOWS_FROM reference;
attributes as typed tags {key, type: string|bool|int64|float64|binary, value}; span kind as the
tag `span.kind` (lowercase, "internal" included, as the translator writes it); arrays as JSON text;
status as `otel.status_code` (+ `otel.status_description`) and `error=true` for errors; the
scope as `otel.scope.name`/`otel.scope.version`; events as logs whose field `event` is the name;
the resource as a process (serviceName + tags) referenced by processID.
"""

from __future__ import annotations

import base64
import json

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode


def record_spans() -> list[ReadableSpan]:
    """A small order workflow across three services, recorded by the real SDK: HTTP server ->
    client call -> Kafka producer; a consumer in a new trace linked to the producer; an error
    span with an event; attributes of every type."""
    exporter = InMemorySpanExporter()
    providers = {}
    for service in ("checkout", "payment", "shipping"):
        provider = TracerProvider(resource=Resource.create({"service.name": service, "service.version": "1.2.3",
                                                            "deployment.environment": "test"}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        providers[service] = provider
    checkout = providers["checkout"].get_tracer("shop.checkout", "0.9")
    payment = providers["payment"].get_tracer("shop.payment", "2.0")
    shipping = providers["shipping"].get_tracer("shop.shipping")

    with checkout.start_as_current_span("POST /orders", kind=SpanKind.SERVER,
                                        attributes={"http.request.method": "POST", "http.route": "/orders",
                                                    "http.response.status_code": 201}):
        with checkout.start_as_current_span("POST /payments", kind=SpanKind.CLIENT,
                                            attributes={"http.request.method": "POST",
                                                        "server.address": "payment"}) as client, \
                payment.start_as_current_span(
                    "POST /payments", kind=SpanKind.SERVER,
                    context=trace.set_span_in_context(client),
                    attributes={"http.route": "/payments", "retry.attempt": 2, "amount": 12.5,
                                "card.valid": True, "tags": ["a", "b"]},
                ) as pay:
            pay.add_event("card.declined", {"reason": "insufficient funds", "code": 51})
            pay.set_status(Status(StatusCode.ERROR, "payment declined"))
        with checkout.start_as_current_span("orders send", kind=SpanKind.PRODUCER,
                                            attributes={"messaging.system": "kafka",
                                                        "messaging.destination.name": "orders",
                                                        "messaging.operation.type": "send",
                                                        "messaging.message.id": "m-1"}) as producer:
            producer_ctx = producer.get_span_context()
    with shipping.start_as_current_span(
        "orders process", kind=SpanKind.CONSUMER, context=trace.set_span_in_context(trace.INVALID_SPAN),
        links=[Link(producer_ctx)],
        attributes={"messaging.system": "kafka", "messaging.destination.name": "orders",
                    "messaging.operation.type": "process", "messaging.consumer.group.name": "shipping"},
    ), shipping.start_as_current_span("reserve stock"):
        pass
    for provider in providers.values():
        provider.shutdown()
    return list(exporter.get_finished_spans())


def _hex_trace(v: int) -> str:
    return f"{v:032x}"


def _hex_span(v: int) -> str:
    return f"{v:016x}"


def _tag(key: str, value) -> dict:
    if isinstance(value, bool):
        return {"key": key, "type": "bool", "value": value}
    if isinstance(value, int):
        return {"key": key, "type": "int64", "value": value}
    if isinstance(value, float):
        return {"key": key, "type": "float64", "value": value}
    if isinstance(value, bytes):
        return {"key": key, "type": "binary", "value": base64.b64encode(value).decode()}
    if isinstance(value, (list, tuple)):  # the translator writes arrays as their JSON text
        return {"key": key, "type": "string", "value": json.dumps(list(value))}
    return {"key": key, "type": "string", "value": str(value)}


_KIND_TAG = {SpanKind.CLIENT: "client", SpanKind.SERVER: "server", SpanKind.PRODUCER: "producer",
             SpanKind.CONSUMER: "consumer", SpanKind.INTERNAL: "internal"}


def to_jaeger_json(spans: list[ReadableSpan]) -> dict:
    """The spans as Jaeger's query API response: {"data": [trace...], "total", "limit", "offset", "errors"}."""
    traces: dict[int, dict] = {}
    for span in spans:
        ctx = span.get_span_context()
        tr = traces.setdefault(ctx.trace_id, {"traceID": _hex_trace(ctx.trace_id), "spans": [],
                                              "processes": {}, "warnings": None})
        resource_key = tuple(sorted((k, str(v)) for k, v in span.resource.attributes.items()))
        pid = next((p for p, proc in tr["processes"].items() if proc["_key"] == resource_key), None)
        if pid is None:
            pid = f"p{len(tr['processes']) + 1}"
            attrs = dict(span.resource.attributes)
            tr["processes"][pid] = {"_key": resource_key, "serviceName": attrs.pop("service.name"),
                                    "tags": [_tag(k, v) for k, v in attrs.items()]}
        refs = []
        if span.parent is not None and span.parent.is_valid:
            refs.append({"refType": "CHILD_OF", "traceID": _hex_trace(span.parent.trace_id),
                         "spanID": _hex_span(span.parent.span_id)})
        for link in span.links:
            refs.append({"refType": "FOLLOWS_FROM", "traceID": _hex_trace(link.context.trace_id),
                         "spanID": _hex_span(link.context.span_id)})
        tags = [_tag(k, v) for k, v in (span.attributes or {}).items()]
        tags.append({"key": "otel.scope.name", "type": "string", "value": span.instrumentation_scope.name})
        if span.instrumentation_scope.version:
            tags.append({"key": "otel.scope.version", "type": "string",
                         "value": span.instrumentation_scope.version})
        tags.append({"key": "span.kind", "type": "string", "value": _KIND_TAG[span.kind]})
        if span.status.status_code is StatusCode.ERROR:
            tags.append({"key": "otel.status_code", "type": "string", "value": "ERROR"})
            tags.append({"key": "error", "type": "bool", "value": True})
            if span.status.description:
                tags.append({"key": "otel.status_description", "type": "string",
                             "value": span.status.description})
        elif span.status.status_code is StatusCode.OK:
            tags.append({"key": "otel.status_code", "type": "string", "value": "OK"})
        logs = [
            {"timestamp": e.timestamp // 1000,
             "fields": [{"key": "event", "type": "string", "value": e.name}]
             + [_tag(k, v) for k, v in (e.attributes or {}).items()]}
            for e in span.events
        ]
        tr["spans"].append({
            "traceID": _hex_trace(ctx.trace_id), "spanID": _hex_span(ctx.span_id), "flags": 1,
            "operationName": span.name, "references": refs,
            "startTime": span.start_time // 1000, "duration": (span.end_time - span.start_time) // 1000,
            "tags": tags, "logs": logs, "processID": pid, "warnings": None,
        })
    for tr in traces.values():
        for proc in tr["processes"].values():
            proc.pop("_key")
    return {"data": list(traces.values()), "total": 0, "limit": 0, "offset": 0, "errors": None}


def to_otlp_proto(spans: list[ReadableSpan]) -> bytes:
    """One ExportTraceServiceRequest, serialized by the SDK's own OTLP encoder."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    return encode_spans(spans).SerializeToString()


def to_otlp_proto_framed(spans: list[ReadableSpan], per_message: int = 2) -> bytes:
    """The Collector file exporter's proto format: 4-byte big-endian length + message, repeated."""
    out = b""
    for i in range(0, len(spans), per_message):
        msg = to_otlp_proto(spans[i : i + per_message])
        out += len(msg).to_bytes(4, "big") + msg
    return out
