"""Hostile bodies against a real running receiver (tests/receiver_fixtures.py): mutated OTLP
protobuf, JSON and gzip bodies over HTTP and gRPC, and the deep nesting that used to answer 500.
None may be answered 500 / INTERNAL / UNKNOWN, and the receiver must be alive and storing after:
spans the real OTel exporter sends next are all stored exactly."""

from __future__ import annotations

import gzip
import random

import grpc
import pytest
import requests
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from fuzz import targets as T
from tests.receiver_fixtures import assert_stored_exactly, make_spans, running_receiver

PROTOBUF, JSON = "application/x-protobuf", "application/json"
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
BODIES = 150

DEEP = [
    (JSON, b"[" * 100_000),
    (JSON, b'{"resourceSpans": ' + b"[" * 5_000 + b"]" * 5_000 + b"}"),
    (JSON, b'{"a":' * 50_000),
    (PROTOBUF, b"\x0a\x80\x80\x80\x80\x10" * 2000),
    (PROTOBUF, T.mutate(b"", random.Random(0)) + b"\x0a" * 5000),
]


def _nested_proto(depth: int) -> bytes:
    inner = b""
    for _ in range(depth):
        inner = b"\x0a" + T._varint(len(inner)) + inner
    return inner


def _mutants(n: int, seed: int) -> list[tuple[str, bytes]]:
    """(content type, body) pairs: the seeds of both encodings with 1-3 mutations each."""
    rng = random.Random(seed)
    seeds = [(PROTOBUF, s) for s in T.seeds("otlp-proto")] + [(JSON, s) for s in T.seeds("otlp-json")]
    out = list(DEEP) + [(PROTOBUF, _nested_proto(d)) for d in (99, 100, 101, 1000)]
    # every decoder crasher ever saved goes to the live receiver too
    out += [(PROTOBUF, p.read_bytes()) for p in T.crashers("otlp-proto")]
    out += [(JSON, p.read_bytes()) for p in T.crashers("otlp-json")]
    while len(out) < n:
        ctype, body = rng.choice(seeds)
        for _ in range(rng.randrange(1, 4)):
            body = T.mutate(body, rng)
        out.append((ctype, body))
    return out


@pytest.mark.parametrize("decode_workers", [0, 1])
def test_http_answers_hostile_bodies_without_500_and_stores_after(tmp_path, decode_workers):
    with running_receiver(tmp_path, decode_workers=decode_workers) as rec:
        answers: dict[int, int] = {}
        for i, (ctype, body) in enumerate(_mutants(BODIES, seed=1 + decode_workers)):
            headers = {"Content-Type": ctype}
            if i % 3 == 0:
                body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
            elif i % 7 == 0:  # a corrupt gzip stream
                body, headers["Content-Encoding"] = gzip.compress(body)[: max(12, len(body) // 2)], "gzip"
            response = requests.post(rec.http_url, data=body, headers=headers, timeout=30)
            answers[response.status_code] = answers.get(response.status_code, 0) + 1
            assert response.status_code < 500, (i, response.status_code, response.text[:300])
        assert answers.get(400), answers  # the deep bodies at least were refused as bad requests
        spans = make_spans(tag="-after-fuzz")
        exporter = HttpExporter(endpoint=rec.http_url)
        assert exporter.export(spans) == SpanExportResult.SUCCESS
        exporter.shutdown()
        assert_stored_exactly(rec.con, spans, source="otlp-http")


@pytest.mark.parametrize("decode_workers", [0, 1])
def test_grpc_answers_hostile_bodies_without_internal_and_stores_after(tmp_path, decode_workers):
    with running_receiver(tmp_path, decode_workers=decode_workers) as rec:
        codes: dict[str, int] = {}
        with grpc.insecure_channel(rec.grpc_address) as channel:
            export = channel.unary_unary(EXPORT)  # bytes in, bytes out: the body is sent as it is
            for i, (_ctype, body) in enumerate(_mutants(BODIES, seed=11 + decode_workers)):
                compression = grpc.Compression.Gzip if i % 2 else grpc.Compression.NoCompression
                try:
                    export(body, timeout=30, compression=compression)
                    code = grpc.StatusCode.OK
                except grpc.RpcError as exc:
                    code = exc.code()
                    assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED), \
                        (i, code, exc.details())
                codes[code.name] = codes.get(code.name, 0) + 1
        assert codes.get("INVALID_ARGUMENT"), codes
        spans = make_spans(tag="-after-fuzz")
        exporter = GrpcExporter(endpoint=rec.grpc_address, insecure=True)
        assert exporter.export(spans) == SpanExportResult.SUCCESS
        exporter.shutdown()
        assert_stored_exactly(rec.con, spans, source="otlp-grpc")
