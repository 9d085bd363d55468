"""OTLP/HTTP receiver: the real OTel SDK HTTP exporter, real OTLP JSON bodies, and bad input."""

from __future__ import annotations

import base64
import gzip
import json
import threading

import pytest
import requests
from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace.export import SpanExportResult
from receiver_fixtures import assert_stored_exactly, make_spans, running_receiver, span_count

PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def receiver(tmp_path):
    with running_receiver(tmp_path) as rec:
        yield rec


def otlp_json(spans, integer_enums: bool) -> dict:
    """The OTLP JSON form of the SDK's own encoding: protobuf JSON mapping with hex ids."""
    doc = json_format.MessageToDict(encode_spans(spans), use_integers_for_enums=integer_enums)

    def hexify(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("traceId", "spanId", "parentSpanId"):
                    node[key] = base64.b64decode(value).hex()
                else:
                    hexify(value)
        elif isinstance(node, list):
            for item in node:
                hexify(item)

    hexify(doc)
    return doc


def post(rec, body: bytes, headers: dict) -> requests.Response:
    return requests.post(rec.http_url, data=body, headers=headers, timeout=10)


def error_status(response: requests.Response) -> status_pb2.Status:
    if response.headers["Content-Type"] == "application/x-protobuf":
        return status_pb2.Status.FromString(response.content)
    return json_format.Parse(response.text, status_pb2.Status())


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
def test_sdk_exporter_spans_round_trip_exactly(receiver, compression):
    spans = make_spans()
    exporter = OTLPSpanExporter(endpoint=receiver.http_url, compression=compression)
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    exporter.shutdown()
    assert span_count(receiver.con) == len(spans)
    assert_stored_exactly(receiver.con, spans, source="otlp-http")


def test_same_spans_exported_twice_are_stored_once(receiver):
    spans = make_spans()
    exporter = OTLPSpanExporter(endpoint=receiver.http_url)
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    exporter.shutdown()
    assert span_count(receiver.con) == len(spans)


@pytest.mark.parametrize("integer_enums", [False, True])
@pytest.mark.parametrize("gzipped", [False, True])
def test_otlp_json_bodies_round_trip_exactly(receiver, integer_enums, gzipped):
    spans = make_spans()
    doc = otlp_json(spans, integer_enums)
    first = doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert len(first["traceId"]) == 32
    assert isinstance(first["kind"], int) == integer_enums
    body = json.dumps(doc).encode()
    headers = dict(JSON)
    if gzipped:
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    response = post(receiver, body, headers)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert json.loads(response.text) == {}  # full success: partial_success left unset
    assert_stored_exactly(receiver.con, spans, source="otlp-http")


def test_invalid_ids_are_partial_success_in_the_request_content_type(receiver):
    spans = make_spans()
    request = encode_spans(spans)
    bad = request.resource_spans[0].scope_spans[0].spans[2]
    bad.span_id = b"\x00" * 8
    response = post(receiver, request.SerializeToString(), PROTOBUF)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/x-protobuf"
    partial = ExportTraceServiceResponse.FromString(response.content).partial_success
    assert partial.rejected_spans == 1 and "span id is all zeros" in partial.error_message
    good = spans[:2] + spans[3:]
    assert span_count(receiver.con) == len(good)
    assert_stored_exactly(receiver.con, good)

    doc = otlp_json(make_spans(tag="-json"), integer_enums=False)
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"] = "abc"
    response = post(receiver, json.dumps(doc).encode(), JSON)
    assert response.status_code == 200
    body = response.json()
    assert int(body["partialSuccess"]["rejectedSpans"]) == 1
    assert "trace id" in body["partialSuccess"]["errorMessage"]
    assert span_count(receiver.con) == len(good) + len(spans) - 1


def test_bad_requests_are_refused_and_damage_nothing(receiver):
    good = make_spans(tag="-good")
    assert post(receiver, encode_spans(good).SerializeToString(), PROTOBUF).status_code == 200
    body = encode_spans(make_spans(tag="-bad")).SerializeToString()

    truncated = post(receiver, body[:-5], PROTOBUF)
    assert truncated.status_code == 400
    assert truncated.headers["Content-Type"] == "application/x-protobuf"
    status = error_status(truncated)
    assert status.code == code_pb2.INVALID_ARGUMENT and "ExportTraceServiceRequest" in status.message

    not_json = post(receiver, b'{"resourceSpans": [', JSON)
    assert not_json.status_code == 400 and "not JSON" in error_status(not_json).message
    not_otlp = post(receiver, b'{"resourceSpans": 7}', JSON)
    assert not_otlp.status_code == 400 and "OTLP JSON" in error_status(not_otlp).message

    not_gzip = post(receiver, body, {**PROTOBUF, "Content-Encoding": "gzip"})
    assert not_gzip.status_code == 400 and "gzip" in error_status(not_gzip).message

    wrong_type = post(receiver, body, {"Content-Type": "text/plain"})
    assert wrong_type.status_code == 415 and "text/plain" in error_status(wrong_type).message
    wrong_encoding = post(receiver, body, {**PROTOBUF, "Content-Encoding": "br"})
    assert wrong_encoding.status_code == 415

    assert requests.get(receiver.http_url, timeout=10).status_code == 405
    other = requests.post(receiver.http_url.replace("/v1/traces", "/v1/logs"), data=body,
                          headers=PROTOBUF, timeout=10)
    assert other.status_code == 404 and "/v1/traces" in error_status(other).message

    assert span_count(receiver.con) == len(good)
    assert_stored_exactly(receiver.con, good)


def test_too_large_bodies_and_gzip_bombs_are_413(tmp_path):
    with running_receiver(tmp_path, max_request_bytes=32 * 1024) as rec:
        con = rec.con
        small = make_spans(tag="-small")
        assert post(rec, encode_spans(small).SerializeToString(), PROTOBUF).status_code == 200
        big = encode_spans(make_spans(n_traces=60)).SerializeToString()
        assert len(big) > 32 * 1024
        response = post(rec, big, PROTOBUF)
        assert response.status_code == 413
        assert "--max-request-bytes" in error_status(response).message
        # small on the wire, 20 MB once inflated
        bomb = gzip.compress(b"\n" * (20 << 20))
        assert len(bomb) < 32 * 1024
        response = post(rec, bomb, {**PROTOBUF, "Content-Encoding": "gzip"})
        assert response.status_code == 413 and "decompresses" in error_status(response).message
        # a body too large even to read and discard: answered at once
        huge = requests.post(rec.http_url, data=b"x" * (65 << 20) + b"x" * (200 << 10),
                             headers=PROTOBUF, timeout=30)
        assert huge.status_code == 413
        assert span_count(con) == len(small)
        assert_stored_exactly(con, small)


def test_queue_full_is_429_with_retry_after(tmp_path):
    with running_receiver(tmp_path, queue_spans=10) as rec:
        con = rec.con
        first, second = make_spans(n_traces=2, tag="-1"), make_spans(n_traces=2, tag="-2")
        results = {}
        with rec.ingester.write_lock:  # the writer cannot commit while we hold its lock
            sender = threading.Thread(target=lambda: results.setdefault(
                "first", post(rec, encode_spans(first).SerializeToString(), PROTOBUF)))
            sender.start()
            while rec.stats().queue_spans < len(first):
                sender.join(0.01)
            refused = post(rec, encode_spans(second).SerializeToString(), PROTOBUF)
            assert refused.status_code == 429
            assert int(refused.headers["Retry-After"]) >= 1
            assert error_status(refused).code == code_pb2.RESOURCE_EXHAUSTED
            assert "first" not in results
        sender.join(10)
        assert results["first"].status_code == 200
        assert post(rec, encode_spans(second).SerializeToString(), PROTOBUF).status_code == 200
        assert_stored_exactly(con, first + second)


def test_requests_beyond_the_decode_backlog_are_429_with_retry_after(tmp_path):
    """Bodies waiting to be decoded are bounded (export_decode.DECODE_BACKLOG_BYTES): a request
    arriving behind too many is refused at once, retryably, and nothing else is lost."""
    with running_receiver(tmp_path) as rec:
        con, http = rec.con, rec._http
        http.decode_backlog.limit = 1  # any request behind another one is beyond it
        release = threading.Event()
        # the decode threads busy: the next request's body waits for one (the staging device, as
        # holding the writer's lock in the test above)
        busy = [http.decoder.submit(release.wait) for _ in range(http.decoder._max_workers)]
        first, second = make_spans(n_traces=2, tag="-1"), make_spans(n_traces=2, tag="-2")
        results = {}
        sender = threading.Thread(target=lambda: results.setdefault(
            "first", post(rec, encode_spans(first).SerializeToString(), PROTOBUF)))
        sender.start()
        try:
            while not http.decode_backlog.bytes:
                sender.join(0.01)
            refused = post(rec, encode_spans(second).SerializeToString(), PROTOBUF)
            assert refused.status_code == 429
            assert int(refused.headers["Retry-After"]) >= 1
            status = error_status(refused)
            assert status.code == code_pb2.RESOURCE_EXHAUSTED
            assert "waiting to be decoded" in status.message
            assert rec.stats().requests_refused == 1
            assert "first" not in results
        finally:
            release.set()
        for future in busy:
            future.result(10)
        sender.join(10)
        assert results["first"].status_code == 200
        assert http.decode_backlog.bytes == 0
        assert post(rec, encode_spans(second).SerializeToString(), PROTOBUF).status_code == 200
        assert_stored_exactly(con, first + second)
