"""OTLP/gRPC: opentelemetry.proto.collector.trace.v1.TraceService/Export.

The method is registered with raw bytes in and out, so an undecodable body gets INVALID_ARGUMENT
with a message (grpc's own deserializer would answer a bare INTERNAL). grpc handles gzip and
enforces the maximum message size (RESOURCE_EXHAUSTED). A full ingest queue, or a call arriving
while too many bodies wait to be decoded, answers RESOURCE_EXHAUSTED with RetryInfo, which the OTLP
spec makes retryable. With `--tls-cert` the port speaks TLS only (mTLS with `--tls-client-ca`);
with `--bearer-token-file` an interceptor answers UNAUTHENTICATED (not retryable) before the body
is decoded when the token is missing or wrong.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from choreoscope.collector.export_decode import (
    PROTOBUF,
    BadRequest,
    DecodeBacklog,
    DecodePool,
    DecodeWorkerLost,
)
from choreoscope.collector.ingest import Accepted, Ingester, IngesterStopped, QueueFull, submit_decoded
from choreoscope.collector.otlp import UNDECODABLE, undecodable_message
from choreoscope.collector.tls_auth import ServerSecurity

SERVICE_NAME = "opentelemetry.proto.collector.trace.v1.TraceService"
SOURCE = "otlp-grpc"
RETRY_AFTER_S = 1
# Handler threads: calls beyond them wait inside gRPC. Each thread holds its call's body while it
# waits for a decode worker, up to --max-request-bytes (16 MiB) each, so those are bounded by the
# decode backlog as over HTTP (export_decode.DECODE_BACKLOG_BYTES): a call that would pass it is
# refused at once with RESOURCE_EXHAUSTED and RetryInfo. 256 threads instead, to see every call in
# flight at once and refuse the surplus (8 clients x 32 exports of 1,000 spans, bench/ingest.py),
# raised the server's peak RSS from 604-616 MiB to 669-895: the bodies then all wait in Python.
HANDLER_THREADS = 32


def _abort_exhausted(context: grpc.ServicerContext, message: str, retry_after_s: int) -> None:
    """Answer RESOURCE_EXHAUSTED with the RetryInfo twice in the trailing metadata: inside a
    google.rpc.Status (the rich status that grpc-status-details-bin carries, read by the Go and
    Java exporters) and on its own as `google.rpc.retryinfo-bin`, the only place the Python SDK's
    exporter looks for the delay. Raises, as context.abort does."""
    info = error_details_pb2.RetryInfo(retry_delay=Duration(seconds=retry_after_s))
    status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=message)
    status.details.add().Pack(info)
    context.set_trailing_metadata((("grpc-status-details-bin", status.SerializeToString()),
                                   ("google.rpc.retryinfo-bin", info.SerializeToString())))
    context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message)


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Every call must carry `authorization: Bearer <token>` metadata, else UNAUTHENTICATED."""

    def __init__(self, security: ServerSecurity):
        self.security = security

    def intercept_service(self, continuation, handler_call_details):
        authorization = next((value for key, value in handler_call_details.invocation_metadata or ()
                              if key == "authorization"), None)
        if isinstance(authorization, bytes):
            authorization = authorization.decode("latin-1")
        problem = self.security.auth_error(authorization)
        if problem is None:
            return continuation(handler_call_details)

        def refuse(_request: bytes, context: grpc.ServicerContext) -> None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, f"{problem}; nothing was stored")

        return grpc.unary_unary_rpc_method_handler(refuse)


class TraceServiceHandler:
    """The Export method: decode, queue for group commit, answer once committed."""

    def __init__(self, ingester: Ingester, decoder: DecodePool, max_request_bytes: int,
                 commit_timeout_s: float = 30.0, decode_backlog: DecodeBacklog | None = None):
        self.ingester = ingester
        self.decoder = decoder
        self.max_request_bytes = max_request_bytes
        self.commit_timeout_s = commit_timeout_s
        self.decode_backlog = decode_backlog or DecodeBacklog()

    def export(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        if not self.decode_backlog.admit(len(raw)):
            self.ingester.count_refused_request()
            _abort_exhausted(context, self.decode_backlog.refusal(), RETRY_AFTER_S)
        try:
            accepted = self._decode_and_submit(raw, context)
        finally:
            self.decode_backlog.release(len(raw))
        remaining = context.time_remaining()
        timeout = self.commit_timeout_s if remaining is None else min(remaining, self.commit_timeout_s)
        try:
            accepted.future.result(timeout=max(timeout, 0.0))
        except FutureTimeout:
            context.abort(grpc.StatusCode.UNAVAILABLE,
                          "spans queued but not committed in time; retry (duplicates are stored once)")
        except Exception as exc:  # noqa: BLE001 - the store failed; the exporter may retry
            context.abort(grpc.StatusCode.UNAVAILABLE, f"storing spans failed: {exc}")
        response = ExportTraceServiceResponse()
        if accepted.rejected:
            response.partial_success.rejected_spans = accepted.rejected
            response.partial_success.error_message = accepted.message
        return response.SerializeToString()

    def _decode_and_submit(self, raw: bytes, context: grpc.ServicerContext) -> Accepted:
        with self.ingester.decoding():
            try:
                decoded = self.decoder.decode(raw, PROTOBUF, "identity", self.max_request_bytes, SOURCE)
            except BadRequest as exc:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{exc}; nothing was stored")
            except DecodeWorkerLost as exc:  # replaced already: the client may retry
                context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
            except UNDECODABLE as exc:  # the body's fault (deep nesting, ...): not INTERNAL/UNKNOWN
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{undecodable_message(exc)}; nothing was stored")
            try:
                return submit_decoded(self.ingester, decoded)
            except QueueFull as exc:
                _abort_exhausted(context, str(exc), exc.retry_after_s)
            except IngesterStopped as exc:
                context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))


def start_grpc_server(ingester: Ingester, decoder: DecodePool, host: str, port: int,
                      max_request_bytes: int, workers: int = HANDLER_THREADS,
                      security: ServerSecurity | None = None,
                      decode_backlog: DecodeBacklog | None = None) -> tuple[grpc.Server, int]:
    """Start the OTLP/gRPC server; returns it and the port actually bound (port 0 picks one).
    `security` adds TLS (a TLS-only port) and the bearer-token check when it has them;
    `decode_backlog` may be shared with the HTTP receiver (one decode pool behind both)."""
    security = security or ServerSecurity()
    handler = TraceServiceHandler(ingester, decoder, max_request_bytes,
                                  decode_backlog=decode_backlog)
    generic = grpc.method_handlers_generic_handler(
        SERVICE_NAME, {"Export": grpc.unary_unary_rpc_method_handler(handler.export)}
    )
    server = grpc.server(
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="otlp-grpc"),
        handlers=[generic],
        interceptors=[BearerTokenInterceptor(security)] if security.token is not None else None,
        options=[
            ("grpc.max_receive_message_length", int(max_request_bytes)),
            ("grpc.so_reuseport", 0),
        ],
    )
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = (server.add_secure_port(address, security.grpc_credentials()) if security.tls
                 else server.add_insecure_port(address))
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise OSError(f"cannot listen for OTLP/gRPC on {address}: address in use or not available; "
                      "pick another --grpc-port (0 picks a free one)")
    server.start()
    return server, bound
