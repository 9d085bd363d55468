"""OTLP/gRPC receiver, driven by the real OTel SDK exporter and a raw grpc client for bad input."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace.export import SpanExportResult
from receiver_fixtures import assert_stored_exactly, make_spans, running_receiver, span_count

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


@pytest.fixture
def receiver(tmp_path):
    with running_receiver(tmp_path) as rec:
        yield rec


def raw_export(address: str, body: bytes, compression=None, timeout: float = 10):
    """Send raw bytes as an Export call; returns the decoded response (raises grpc.RpcError)."""
    with grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        call = channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
        raw = call(body, timeout=timeout, compression=compression)
    return ExportTraceServiceResponse.FromString(raw)


@pytest.mark.parametrize("compression", [None, grpc.Compression.Gzip])
def test_sdk_exporter_spans_round_trip_exactly(receiver, compression):
    spans = make_spans()
    exporter = OTLPSpanExporter(endpoint=receiver.grpc_address, insecure=True, compression=compression)
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    exporter.shutdown()
    assert span_count(receiver.con) == len(spans)
    assert_stored_exactly(receiver.con, spans, source="otlp-grpc")


def test_same_spans_exported_twice_are_stored_once(receiver):
    spans = make_spans()
    exporter = OTLPSpanExporter(endpoint=receiver.grpc_address, insecure=True)
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    exporter.shutdown()
    assert span_count(receiver.con) == len(spans)
    stats = receiver.stats()
    assert (stats.spans_stored, stats.spans_duplicate) == (len(spans), len(spans))


def test_truncated_body_is_invalid_argument_and_stores_nothing(receiver):
    good = make_spans(tag="-good")
    raw_export(receiver.grpc_address, encode_spans(good).SerializeToString())
    body = encode_spans(make_spans(tag="-bad")).SerializeToString()
    with pytest.raises(grpc.RpcError) as err:
        raw_export(receiver.grpc_address, body[:-7])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ExportTraceServiceRequest" in err.value.details()
    assert span_count(receiver.con) == len(good)
    assert_stored_exactly(receiver.con, good)


def test_invalid_ids_are_partial_success_and_the_rest_is_stored(receiver):
    spans = make_spans()
    request = encode_spans(spans)
    bad = request.resource_spans[0].scope_spans[0].spans[1]
    bad.trace_id = b"\x01\x02\x03"
    bad_span_id = bad.span_id.hex()
    response = raw_export(receiver.grpc_address, request.SerializeToString(), grpc.Compression.Gzip)
    assert response.partial_success.rejected_spans == 1
    assert bad_span_id in response.partial_success.error_message
    assert "trace id has 3 bytes" in response.partial_success.error_message
    good = [s for s in spans if format(s.context.span_id, "016x") != bad_span_id]
    assert span_count(receiver.con) == len(good)
    assert_stored_exactly(receiver.con, good)


def test_request_over_max_size_is_refused(tmp_path):
    with running_receiver(tmp_path, max_request_bytes=32 * 1024) as rec:
        con = rec.con
        small = make_spans(tag="-small")
        raw_export(rec.grpc_address, encode_spans(small).SerializeToString())
        big = make_spans(n_traces=60)
        body = encode_spans(big).SerializeToString()
        assert len(body) > 32 * 1024
        for compression in (None, grpc.Compression.Gzip):  # gzip: the limit holds after decompression
            with pytest.raises(grpc.RpcError) as err:
                raw_export(rec.grpc_address, body, compression)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert span_count(con) == len(small)
        assert_stored_exactly(con, small)


def test_queue_full_is_resource_exhausted_with_retry_info(tmp_path):
    with running_receiver(tmp_path, queue_spans=10) as rec:
        con = rec.con
        first, second = make_spans(n_traces=2, tag="-1"), make_spans(n_traces=2, tag="-2")
        assert len(first) == len(second) == 8
        results = {}
        # Hold the writer's lock: the first request stays queued, uncommitted, unacknowledged.
        with rec.ingester.write_lock:
            sender = threading.Thread(target=lambda: results.setdefault(
                "first", raw_export(rec.grpc_address, encode_spans(first).SerializeToString())))
            sender.start()
            while rec.stats().queue_spans < 8:
                sender.join(0.01)
            with pytest.raises(grpc.RpcError) as err:
                raw_export(rec.grpc_address, encode_spans(second).SerializeToString())
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "queue full" in err.value.details()
            details = dict(err.value.trailing_metadata())["grpc-status-details-bin"]
            status = status_pb2.Status.FromString(details)
            info = error_details_pb2.RetryInfo()
            assert status.details[0].Unpack(info) and info.retry_delay.seconds >= 1
            # and on its own, where the Python SDK's exporter reads its backoff from
            alone = error_details_pb2.RetryInfo.FromString(
                dict(err.value.trailing_metadata())["google.rpc.retryinfo-bin"])
            assert alone.retry_delay.seconds == info.retry_delay.seconds
            assert "first" not in results  # not acknowledged before its commit
        sender.join(10)
        assert not results["first"].HasField("partial_success")
        assert rec.stats().requests_refused == 1
        # once the queue drains, the refused request goes through on retry
        raw_export(rec.grpc_address, encode_spans(second).SerializeToString())
        assert_stored_exactly(con, first + second)


def test_duplicates_inside_one_commit_group_are_stored_once(tmp_path):
    """A retry can be queued beside its original: both land in one transaction, stored once."""
    with running_receiver(tmp_path) as rec:
        spans = make_spans()
        body = encode_spans(spans).SerializeToString()
        results = []
        with rec.ingester.write_lock:  # hold the writer so both requests queue up together
            senders = [threading.Thread(target=lambda: results.append(raw_export(rec.grpc_address, body)))
                       for _ in range(2)]
            for s in senders:
                s.start()
            while rec.stats().queue_spans < 2 * len(spans):
                senders[0].join(0.01)
        for s in senders:
            s.join(10)
        assert len(results) == 2
        assert span_count(rec.con) == len(spans)
        assert_stored_exactly(rec.con, spans)
        stats = rec.stats()
        assert stats.commits == 1  # one transaction held both copies
        assert (stats.spans_stored, stats.spans_duplicate) == (len(spans), len(spans))


def test_decode_worker_processes_store_the_same_and_refuse_the_same(tmp_path):
    """With decode workers (serve's default), good spans round-trip and bad input is refused alike."""
    with running_receiver(tmp_path, decode_workers=1) as rec:
        spans = make_spans()
        request = encode_spans(spans)
        bad = request.resource_spans[0].scope_spans[0].spans[0]
        bad.span_id = b"\x07"
        response = raw_export(rec.grpc_address, request.SerializeToString())
        assert response.partial_success.rejected_spans == 1
        assert bad.span_id.hex() in response.partial_success.error_message
        with pytest.raises(grpc.RpcError) as err:
            raw_export(rec.grpc_address, encode_spans(make_spans(tag="-bad")).SerializeToString()[:-3])
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert OTLPSpanExporter(endpoint=rec.grpc_address, insecure=True).export(spans) == SpanExportResult.SUCCESS
        assert span_count(rec.con) == len(spans)
        assert_stored_exactly(rec.con, spans, source="otlp-grpc")


def test_calls_beyond_the_decode_backlog_are_resource_exhausted_with_retry_info(tmp_path):
    """Bodies waiting to be decoded are bounded over gRPC as over HTTP (one backlog for both): a
    call arriving behind too many is refused at once, retryably, and nothing else is lost."""
    with running_receiver(tmp_path, decode_workers=1, decode_backlog_bytes=1) as rec:
        worker = next(p for p in multiprocessing.active_children() if p.name == "choreoscope-decode")
        first, second = make_spans(n_traces=2, tag="-1"), make_spans(n_traces=2, tag="-2")
        results = {}
        os.kill(worker.pid, signal.SIGSTOP)  # the only decode worker holds the first call's body
        try:
            sender = threading.Thread(target=lambda: results.setdefault(
                "first", raw_export(rec.grpc_address, encode_spans(first).SerializeToString())))
            sender.start()
            while not rec.decode_backlog.bytes:
                sender.join(0.01)
            with pytest.raises(grpc.RpcError) as err:
                raw_export(rec.grpc_address, encode_spans(second).SerializeToString())
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "waiting to be decoded" in err.value.details()
            info = error_details_pb2.RetryInfo.FromString(
                dict(err.value.trailing_metadata())["google.rpc.retryinfo-bin"])
            assert info.retry_delay.seconds >= 1
            assert rec.stats().requests_refused == 1
            assert "first" not in results
        finally:
            os.kill(worker.pid, signal.SIGCONT)
        sender.join(10)
        assert not results["first"].HasField("partial_success")
        assert rec.decode_backlog.bytes == 0
        assert OTLPSpanExporter(endpoint=rec.grpc_address, insecure=True).export(second) == SpanExportResult.SUCCESS
        assert_stored_exactly(rec.con, first + second, source="otlp-grpc")
