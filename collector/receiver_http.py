"""OTLP/HTTP: `POST /v1/traces` with protobuf or OTLP JSON bodies, gzip or not.

Tornado runs on its own IOLoop thread; decoding is handed to a small thread pool (which uses the
decode processes when there are some) so the loop keeps accepting while a large body is parsed. The response uses the request's content type, as the
OTLP spec asks. Bodies are capped at --max-request-bytes before AND after gzip decompression
(a small gzip body can inflate to gigabytes). Errors carry a google.rpc.Status body.
With `--tls-cert` the port speaks HTTPS only (client certificates required with
`--tls-client-ca`); with `--bearer-token-file` a request without the token gets 401 with
`WWW-Authenticate: Bearer`, which OTLP/HTTP exporters do not retry. Its body is read and dropped
(not decoded), so the exporter sees the 401 rather than a reset connection.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import tornado.netutil
import tornado.web
from google.protobuf import json_format
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop

from choreoscope.collector.export_decode import (
    JSON,
    PROTOBUF,
    BadRequest,
    DecodeBacklog,
    DecodePool,
    DecodeWorkerLost,
    TooLarge,
)
from choreoscope.collector.ingest import Accepted, Ingester, IngesterStopped, QueueFull, submit_decoded
from choreoscope.collector.otlp import UNDECODABLE, undecodable_message
from choreoscope.collector.tls_auth import ServerSecurity

TRACES_PATH = "/v1/traces"
SOURCE = "otlp-http"
RETRY_AFTER_S = 1


@tornado.web.stream_request_body
class TracesHandler(tornado.web.RequestHandler):
    """POST /v1/traces. Other methods get 405 from tornado (no handler method)."""

    def initialize(self, receiver: HttpReceiver) -> None:
        self.receiver = receiver
        self._chunks: list[bytes] = []
        self._size = 0
        self._auth_error: str | None = None

    async def prepare(self) -> None:
        self._auth_error = self.receiver.security.auth_error(self.request.headers.get("Authorization"))
        if self._auth_error is not None and self.request.method != "POST":
            self._content_type = self._request_type() or JSON
            self._unauthorized()
            await self.finish()
            return
        length = self.request.headers.get("Content-Length")
        if self.request.method == "POST" and length and length.isdigit() \
                and int(length) > self.receiver.hard_body_limit:
            # Too big even to read and discard: answer now and drop the connection.
            self._content_type = self._request_type() or JSON
            if self._auth_error is not None:
                self._unauthorized()
            else:
                self._fail(413, code_pb2.RESOURCE_EXHAUSTED, self._too_large_message())
            await self.finish()
            self.request.connection.close()

    def _unauthorized(self) -> None:
        challenge = 'Bearer realm="choreoscope"'
        if self.request.headers.get("Authorization"):
            challenge += ', error="invalid_token"'
        self.set_header("WWW-Authenticate", challenge)
        self._fail(401, code_pb2.UNAUTHENTICATED, f"{self._auth_error}; nothing was stored")

    def data_received(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._auth_error is None and self._size <= self.receiver.max_request_bytes:
            self._chunks.append(chunk)
        else:
            self._chunks = []  # keep reading (so the client sees our 413), keep nothing

    def _request_type(self) -> str | None:
        ctype = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        return ctype if ctype in (PROTOBUF, JSON) else None

    def _too_large_message(self) -> str:
        return (f"request body exceeds {self.receiver.max_request_bytes} bytes (--max-request-bytes); "
                "send smaller batches (BatchSpanProcessor max_export_batch_size)")

    def _fail(self, http_status: int, code: int, message: str) -> None:
        self.set_status(http_status)
        self._write_message(status_pb2.Status(code=code, message=message))

    def _write_message(self, message) -> None:
        if self._content_type == PROTOBUF:
            self.set_header("Content-Type", PROTOBUF)
            self.write(message.SerializeToString())
        else:
            self.set_header("Content-Type", JSON)
            self.write(json_format.MessageToJson(message, indent=None))

    async def post(self) -> None:
        self.receiver.in_flight += 1
        try:
            await self._export()
        finally:
            self.receiver.in_flight -= 1

    async def _export(self) -> None:
        ctype = self._request_type()
        self._content_type = ctype or JSON
        if self._auth_error is not None:
            self._unauthorized()
            return
        if ctype is None:
            got = self.request.headers.get("Content-Type", "(none)")
            self._fail(415, code_pb2.INVALID_ARGUMENT,
                       f"unsupported Content-Type {got!r}; send {PROTOBUF} or {JSON}")
            return
        encoding = self.request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("gzip", "identity", ""):
            self._fail(415, code_pb2.INVALID_ARGUMENT,
                       f"unsupported Content-Encoding {encoding!r}; send gzip or no encoding")
            return
        if self._size > self.receiver.max_request_bytes:
            self._fail(413, code_pb2.RESOURCE_EXHAUSTED, self._too_large_message())
            return
        body = b"".join(self._chunks)
        self._chunks = []
        receiver = self.receiver
        if not receiver.decode_backlog.admit(len(body)):
            receiver.ingester.count_refused_request()
            self.set_header("Retry-After", str(RETRY_AFTER_S))
            self._fail(429, code_pb2.RESOURCE_EXHAUSTED, receiver.decode_backlog.refusal())
            return
        loop = IOLoop.current()
        try:
            accepted: Accepted = await loop.run_in_executor(
                receiver.decoder, receiver.decode_and_submit, body, ctype, encoding)
        except BadRequest as exc:
            self._fail(400, code_pb2.INVALID_ARGUMENT, f"{exc}; nothing was stored")
            return
        except TooLarge as exc:
            self._fail(413, code_pb2.RESOURCE_EXHAUSTED, f"{exc}; send smaller batches")
            return
        except QueueFull as exc:
            self.set_header("Retry-After", str(exc.retry_after_s))
            self._fail(429, code_pb2.RESOURCE_EXHAUSTED, str(exc))
            return
        except (IngesterStopped, DecodeWorkerLost) as exc:  # a lost worker is replaced: retry
            self.set_header("Retry-After", str(RETRY_AFTER_S))
            self._fail(503, code_pb2.UNAVAILABLE, str(exc))
            return
        finally:
            receiver.decode_backlog.release(len(body))
        try:
            await asyncio.wait_for(asyncio.wrap_future(accepted.future), self.receiver.commit_timeout_s)
        except TimeoutError:
            self.set_header("Retry-After", str(RETRY_AFTER_S))
            self._fail(503, code_pb2.UNAVAILABLE,
                       "spans queued but not committed in time; retry (duplicates are stored once)")
            return
        except Exception as exc:  # noqa: BLE001 - the store failed; the exporter may retry
            self.set_header("Retry-After", str(RETRY_AFTER_S))
            self._fail(503, code_pb2.UNAVAILABLE, f"storing spans failed: {exc}")
            return
        response = ExportTraceServiceResponse()
        if accepted.rejected:
            response.partial_success.rejected_spans = accepted.rejected
            response.partial_success.error_message = accepted.message
        self._write_message(response)


class NotFoundHandler(tornado.web.RequestHandler):
    def prepare(self) -> None:
        self.set_status(404)
        self.set_header("Content-Type", JSON)
        self.finish(json_format.MessageToJson(status_pb2.Status(
            code=code_pb2.NOT_FOUND,
            message=f"no such path {self.request.path!r}; OTLP traces go to POST {TRACES_PATH}"),
            indent=None))


class HttpReceiver:
    """A tornado server on its own IOLoop thread. `port` is the port actually bound."""

    def __init__(self, ingester: Ingester, decoder: DecodePool, max_request_bytes: int,
                 commit_timeout_s: float = 30.0, security: ServerSecurity | None = None,
                 decode_backlog: DecodeBacklog | None = None):
        self.ingester = ingester
        self.security = security or ServerSecurity()
        self.decode_pool = decoder
        self.max_request_bytes = int(max_request_bytes)
        # Bodies up to this size are read and discarded to answer 413 cleanly; larger ones cut off.
        self.hard_body_limit = max(4 * self.max_request_bytes, self.max_request_bytes + (64 << 20))
        self.commit_timeout_s = commit_timeout_s
        self.decoder = ThreadPoolExecutor(max_workers=4, thread_name_prefix="otlp-http-decode")
        self.port = 0
        self.in_flight = 0  # requests being handled (touched on the IOLoop thread only)
        self.decode_backlog = decode_backlog or DecodeBacklog()  # may be shared with gRPC's
        self._loop: IOLoop | None = None
        self._server: HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def decode_and_submit(self, body: bytes, content_type: str, encoding: str) -> Accepted:
        with self.ingester.decoding():
            try:
                decoded = self.decode_pool.decode(body, content_type, encoding, self.max_request_bytes, SOURCE)
            except (BadRequest, TooLarge):
                raise
            except UNDECODABLE as exc:  # the body's fault (deep nesting, ...): 400, not 500
                raise BadRequest(undecodable_message(exc)) from None
            return submit_decoded(self.ingester, decoded)

    def start(self, host: str, port: int) -> int:
        started = threading.Event()
        failure: list[BaseException] = []
        ssl_options = self.security.ssl_context() if self.security.tls else None  # raises on a bad PEM

        def serve() -> None:
            asyncio.set_event_loop(asyncio.new_event_loop())
            self._loop = IOLoop.current()
            app = tornado.web.Application(
                [(TRACES_PATH, TracesHandler, {"receiver": self})],
                default_handler_class=NotFoundHandler,
            )
            try:
                self._server = HTTPServer(app, max_body_size=self.hard_body_limit, ssl_options=ssl_options)
                sockets = tornado.netutil.bind_sockets(port, address=host)
                self._server.add_sockets(sockets)
                self.port = sockets[0].getsockname()[1]
            except OSError as exc:  # reported to the caller of start()
                failure.append(exc)
                started.set()
                return
            started.set()
            self._loop.start()
            self._loop.close(all_fds=True)

        self._thread = threading.Thread(target=serve, name="otlp-http-ioloop", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            raise OSError(f"cannot listen for OTLP/HTTP on {host}:{port}: {failure[0]}; "
                          "pick another --http-port (0 picks a free one)") from failure[0]
        return self.port

    def stop_accepting(self) -> None:
        """Close the listening sockets; requests in flight finish."""
        if self._loop is not None and self._server is not None:
            self._loop.add_callback(self._server.stop)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop thread once the requests in flight have answered (call after
        `stop_accepting` and after the ingester has committed what it accepted)."""
        if self._loop is not None:
            loop = self._loop

            async def finish_then_stop() -> None:
                deadline = loop.time() + timeout / 2
                while self.in_flight and loop.time() < deadline:
                    await asyncio.sleep(0.02)
                await asyncio.sleep(0.05)  # let the last responses flush
                loop.stop()

            loop.add_callback(finish_then_stop)
        if self._thread is not None:
            self._thread.join(timeout)
        self.decoder.shutdown(wait=False)
