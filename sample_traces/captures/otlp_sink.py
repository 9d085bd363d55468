"""A file-writing OTLP/HTTP trace sink for live captures, run as its own process like a Collector.

Every service of a capture exports with its own SDK exporter (Python `OTLPSpanExporter`, the JS
`@opentelemetry/exporter-trace-otlp-http` or `-proto`) to `http://127.0.0.1:PORT/v1/traces`; the sink
writes each export request as one line of OTLP JSON, as the Collector's file exporter does (trace
and span ids as hex, per the OTLP/JSON encoding). Nothing is changed but the encoding: the spans are
what the instrumentations emitted.

    python sample_traces/captures/otlp_sink.py --out capture.jsonl --port-file port.txt

The port (0 = any free one) is written to --port-file once the sink listens; SIGTERM or SIGINT
closes the file cleanly. Only the standard library and opentelemetry-proto are used.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

ID_KEYS = ("traceId", "spanId", "parentSpanId")


def _hex_ids(obj) -> None:
    """Proto3 JSON writes bytes as base64; OTLP/JSON (and the Collector's file exporter) use hex."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key in ID_KEYS and isinstance(value, str) and value:
                obj[key] = base64.b64decode(value).hex()
            else:
                _hex_ids(value)
    elif isinstance(obj, list):
        for item in obj:
            _hex_ids(item)


def request_to_json_line(body: bytes, content_type: str) -> str:
    """One export request as one compact OTLP JSON line."""
    if "json" in content_type:
        doc = json.loads(body)
    else:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        doc = json_format.MessageToDict(request)
        _hex_ids(doc)
    return json.dumps(doc, separators=(",", ":"), sort_keys=True)


class _Handler(BaseHTTPRequestHandler):
    server_version = "capture-sink/1"

    def do_POST(self):
        if self.path.rstrip("/") != "/v1/traces":
            self.send_error(404)
            return
        body = self._body()
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        content_type = self.headers.get("Content-Type") or "application/x-protobuf"
        try:
            line = request_to_json_line(body, content_type)
        except Exception as exc:  # noqa: BLE001 - a capture must not silently lose a batch: refuse it, say why
            self.send_error(400, f"not an OTLP trace export: {exc}")
            return
        with self.server.lock:
            self.server.out.write(line + "\n")
            self.server.out.flush()
            self.server.requests += 1
        if "json" in content_type:
            payload, reply_type = b"{}", "application/json"
        else:
            payload, reply_type = ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf"
        self.send_response(200)
        self.send_header("Content-Type", reply_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _body(self) -> bytes:
        """The request body, with a Content-Length or chunked (the JS exporters send chunked bodies)."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():  # trailers, then the blank line
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()  # the CRLF after each chunk
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def log_message(self, format, *args):
        pass


def serve(out: Path, port: int, port_file: Path | None) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    server.lock = threading.Lock()
    server.requests = 0
    with open(out, "a", encoding="utf-8") as fh:
        server.out = fh
        if port_file:
            port_file.write_text(str(server.server_address[1]))
        stop = threading.Event()

        def _stop(*_):
            stop.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        server.serve_forever()
        server.server_close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON-lines file to append to")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", type=Path)
    args = parser.parse_args(argv)
    serve(args.out, args.port, args.port_file)


if __name__ == "__main__":
    main()
