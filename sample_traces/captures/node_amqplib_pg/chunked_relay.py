"""A byte-for-byte HTTP relay in front of ../otlp_sink.py for the Node exporters (standard library only).

Why: the JS OTLP/HTTP exporter (@opentelemetry/otlp-exporter-base 0.301, Node transport) always
streams the request body into the request (`Readable.pipe(req)`), so Node sends it with
`Transfer-Encoding: chunked` and no Content-Length. otlp_sink.py reads `Content-Length` bytes only,
so it would record such an export as an empty `{}` line and still answer 200 - the spans would be
lost silently. This relay de-chunks the body and forwards the identical bytes (same Content-Type and
Content-Encoding) with a Content-Length to the sink, and hands the sink's answer back. Nothing in the
payload is touched.

    python chunked_relay.py --target http://127.0.0.1:PORT/v1/traces --port-file FILE
"""

from __future__ import annotations

import argparse
import signal
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if "chunked" in (handler.headers.get("Transfer-Encoding") or "").lower():
        parts = []
        while True:
            size_line = handler.rfile.readline()
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                break
            parts.append(handler.rfile.read(size))
            handler.rfile.readline()  # CRLF after each chunk
        return b"".join(parts)
    return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))


class _Relay(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = read_body(self)
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "content-encoding")}
        req = urllib.request.Request(self.server.target, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, payload, ctype = resp.status, resp.read(), resp.headers.get("Content-Type")
        except urllib.error.HTTPError as err:
            status, payload, ctype = err.code, err.read(), err.headers.get("Content-Type")
        except OSError as err:
            status, payload, ctype = 503, str(err).encode(), "text/plain"
        self.send_response(status)
        self.send_header("Content-Type", ctype or "application/octet-stream")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format, *args):
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", type=Path)
    args = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), _Relay)
    server.target = args.target
    if args.port_file:
        args.port_file.write_text(str(server.server_address[1]))

    def _stop(*_):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
