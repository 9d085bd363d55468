"""Generate an OTLP/JSON-lines trace dump (the Collector file exporter's format) of N spans.

    python bench/gen_dump.py OUT.jsonl --spans 100000 [--seed 7]

Written directly as OTLP JSON, independently of the store (no choreoscope code): random W3C ids
(32/16 hex digits), one resource per service, about 1 MB per line (many ResourceSpans per line).
Realistic shapes: HTTP entries calling services, producers fanning out to 1-50 consumers, and
the consumers in the producer's trace, in a new trace with a span link, or in a new trace tied
only by the message id (context lost at a broker hop); database spans with SQL statements; mixed
conventions (old and new messaging, HTTP and DB attribute names); a few errors and retries.
"""

from __future__ import annotations

import argparse
import random
import sys

import orjson

BASE_NS = 1_767_225_600_000_000_000  # 2026-01-01
SERVICES = [f"svc-{i:02d}" for i in range(24)]
WORKERS = [f"worker-{i:02d}" for i in range(60)]  # consumer services: a fan-out reaches distinct ones
LINE_BYTES = 1_000_000


def _attr(key, value):
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": value}}


class Gen:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.by_service: dict[str, list] = {}
        self.count = 0
        self.flows = [self._flow_shape(i) for i in range(40)]

    def tid(self) -> str:
        return f"{self.rng.getrandbits(128):032x}"

    def sid(self) -> str:
        return f"{self.rng.getrandbits(64):016x}"

    def _flow_shape(self, i: int) -> dict:
        rng = self.rng
        return {
            "entry": rng.choice(SERVICES), "route": f"/api/flow{i}/{{id}}",
            "calls": rng.sample(SERVICES, rng.randint(1, 3)),
            "topic": f"flow{i}.event",
            "consumers": rng.sample(WORKERS, rng.randint(1, 50) if rng.random() < 0.3 else rng.randint(1, 4)),
            "new_style": rng.random() < 0.5,
            "system": rng.choice(["kafka", "rabbitmq", "aws.sqs"]),
            # database per service, but one flow in ten also writes a table another flow's service reads
            "shared": f"t_shared{i % 4}" if rng.random() < 0.1 else None,
        }

    def span(self, service, trace_id, parent, name, kind, start, dur, attrs, links=None, error=False):
        span = {
            "traceId": trace_id, "spanId": self.sid(), "name": name, "kind": kind,
            "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + dur),
            "attributes": [_attr(k, v) for k, v in attrs.items()], "status": {"code": 2 if error else 0},
        }
        if parent:
            span["parentSpanId"] = parent
        if links:
            span["links"] = [{"traceId": t, "spanId": s, "attributes": []} for t, s in links]
        self.by_service.setdefault(service, []).append(span)
        self.count += 1
        return span

    def instance(self, n: int) -> None:
        rng = self.rng
        f = self.flows[rng.randrange(len(self.flows))]
        t0 = BASE_NS + n * 2_000_000 + rng.randrange(1_000_000)
        trace = self.tid()
        new = f["new_style"]
        http = {"http.request.method" if new else "http.method": "POST", "http.route": f["route"],
                ("http.response.status_code" if new else "http.status_code"): 200}
        root = self.span(f["entry"], trace, None, f"POST {f['route']}", 2, t0, 40_000_000, http)
        t = t0 + 1_000_000
        for svc in f["calls"]:
            c = self.span(f["entry"], trace, root["spanId"], f"GET /{svc}/item", 3, t, 5_000_000,
                          {"http.method": "GET", "server.address": svc})
            s = self.span(svc, trace, c["spanId"], "GET /item/{id}", 2, t + 200_000, 4_500_000,
                          {"http.method": "GET", "http.route": "/item/{id}"})
            table = f"t_{svc.replace('-', '_')}"
            self.span(svc, trace, s["spanId"], f"SELECT {table}", 3, t + 500_000, 1_000_000,
                      {"db.system": "postgresql", "db.statement": f"SELECT * FROM {table} WHERE id = $1"})
            t += 6_000_000
        dest_key = "messaging.destination.name" if new else "messaging.destination"
        op_key = "messaging.operation.type" if new else "messaging.operation"
        mid = self.sid()
        p = self.span(f["entry"], trace, root["spanId"], f"{f['topic']} publish", 4, t, 1_000_000,
                      {"messaging.system": f["system"], dest_key: f["topic"], op_key: "publish",
                       "messaging.message.id": mid})
        for svc in f["consumers"]:
            how = rng.random()
            start = t + 2_000_000 + rng.randrange(5_000_000)
            attrs = {"messaging.system": f["system"], dest_key: f["topic"], op_key: "process",
                     "messaging.message.id": mid, "messaging.consumer.group.name": f"g-{svc}"}
            if how < 0.4:  # context propagated
                ctrace, parent, links = trace, p["spanId"], None
            elif how < 0.8:  # new trace with a link (batch consumer)
                ctrace, parent, links = self.tid(), None, [(trace, p["spanId"])]
            else:  # broker hop lost the context: message id only
                ctrace, parent, links = self.tid(), None, None
            err = rng.random() < 0.02
            c = self.span(svc, ctrace, parent, f"{f['topic']} process", 5, start, 3_000_000, attrs, links, err)
            if err:  # redelivery
                self.span(svc, ctrace, parent, f"{f['topic']} process", 5, start + 5_000_000, 3_000_000,
                          attrs, links)
            table = f["shared"] or f"t_{svc.replace('-', '_')}"
            self.span(svc, ctrace, c["spanId"], f"INSERT {table}", 3, start + 500_000, 800_000,
                      {"db.system.name" if new else "db.system": "postgresql",
                       "db.query.text" if new else "db.statement": f"INSERT INTO {table} (id) VALUES ($1)"})

    def lines(self):
        """Drain the buffered spans as OTLP JSON lines of about LINE_BYTES each."""
        rss, size = [], 0
        for svc, spans in self.by_service.items():
            for i in range(0, len(spans), 200):
                chunk = spans[i:i + 200]
                rs = {"resource": {"attributes": [_attr("service.name", svc), _attr("service.version", "1.4.2")]},
                      "scopeSpans": [{"scope": {"name": "bench.gen", "version": "1"}, "spans": chunk}]}
                rss.append(rs)
                size += 900 * len(chunk)
                if size >= LINE_BYTES:
                    yield orjson.dumps({"resourceSpans": rss}) + b"\n"
                    rss, size = [], 0
        if rss:
            yield orjson.dumps({"resourceSpans": rss}) + b"\n"
        self.by_service = {}


def generate(path: str, n_spans: int, seed: int = 7) -> int:
    """Write about `n_spans` spans to `path`; returns the exact count."""
    gen = Gen(seed)
    written = 0
    with open(path, "wb") as out:
        n = 0
        while gen.count < n_spans:
            gen.instance(n)
            n += 1
            if gen.count - written >= 20_000 or gen.count >= n_spans:
                out.writelines(gen.lines())
                written = gen.count
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--spans", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    print(generate(args.out, args.spans, args.seed), "spans written to", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
