"""Ingest benchmark: how many spans/s `choreoscope serve` stores, end to end over OTLP/gRPC.

Starts `choreoscope serve --no-dashboard` on a fresh store, has several client processes send
pre-encoded ExportTraceServiceRequests (distinct ids, N spans of M attributes each) as fast as the
acknowledgements come back, then stops the server and counts the spans in the DB.
Prints stored spans/s, export latency percentiles and the server's peak RSS (VmHWM).

    .venv/bin/python bench/ingest.py [--clients 4] [--streams 4] [--requests 150] [--decode-workers 2] [--spans 100] [--attrs 10]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def build_requests(client: int, n_requests: int, n_spans: int, n_attrs: int) -> list[bytes]:
    """Serialized export requests with ids unique per (client, request, span)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    bodies = []
    now = time.time_ns()
    for r in range(n_requests):
        req = ExportTraceServiceRequest()
        rs = req.resource_spans.add()
        for key, value in (("service.name", f"bench-{client % 3}"), ("service.version", "1.0"),
                           ("host.name", "bench-host")):
            kv = rs.resource.attributes.add()
            kv.key, kv.value.string_value = key, value
        ss = rs.scope_spans.add()
        ss.scope.name = "bench"
        trace_id = struct.pack(">QQ", client + 1, r + 1)
        for i in range(n_spans):
            span = ss.spans.add()
            span.trace_id = trace_id
            span.span_id = struct.pack(">HIH", client + 1, r + 1, i + 1)
            if i:
                span.parent_span_id = struct.pack(">HIH", client + 1, r + 1, 1)
            span.name = f"GET /items/{i % 7}"
            span.kind = 2 if i == 0 else 3
            span.start_time_unix_nano = now + i * 1000
            span.end_time_unix_nano = now + i * 1000 + 500
            for a in range(n_attrs):
                kv = span.attributes.add()
                if a == 0:
                    kv.key, kv.value.string_value = "http.request.method", "GET"
                elif a == 1:
                    kv.key, kv.value.int_value = "http.response.status_code", 200
                else:
                    kv.key, kv.value.string_value = f"bench.attr.{a}", f"value-{a}-{i}"
        bodies.append(req.SerializeToString())
    return bodies


def client_main(client: int, address: str, args, ready, go, results) -> None:
    """One client process: `args.streams` threads, each with one export in flight at a time."""
    import threading

    import grpc

    bodies = build_requests(client, args.requests, args.spans, args.attrs)
    latencies: list[float] = []
    with grpc.insecure_channel(address) as channel:
        export = channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
        export(build_requests(1000 + client, 1, 1, 1)[0], timeout=30)  # connect before timing

        def stream(share: list[bytes]) -> None:
            for body in share:
                while True:
                    t0 = time.perf_counter()
                    try:
                        export(body, timeout=60)
                    except grpc.RpcError as exc:
                        if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                            time.sleep(0.05)  # queue full: back off and retry, as exporters do
                            continue
                        raise
                    latencies.append(time.perf_counter() - t0)
                    break

        threads = [threading.Thread(target=stream, args=(bodies[i::args.streams],))
                   for i in range(args.streams)]
        ready.release()
        go.wait()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    results.put((client, time.perf_counter(), latencies))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc/<pid>/stat."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """pid and its descendants (the server's decode worker processes)."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        for task in Path(f"/proc/{p}/task").iterdir():
            todo.extend(int(c) for c in (task / "children").read_text().split())
    return pids


def tree_cpu_seconds(pid: int) -> float:
    return sum(cpu_seconds(p) for p in process_tree(pid))


def machine_idle_seconds() -> float:
    """Idle + iowait CPU time of the whole machine (all cores), from /proc/stat."""
    import os

    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    return (int(fields[3]) + int(fields[4])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=4, help="concurrent client processes")
    parser.add_argument("--streams", type=int, default=4, help="exports in flight per client process")
    parser.add_argument("--requests", type=int, default=150, help="requests per client")
    parser.add_argument("--spans", type=int, default=100, help="spans per request")
    parser.add_argument("--attrs", type=int, default=10, help="attributes per span")
    parser.add_argument("--decode-workers", type=int, default=2, help="serve --decode-workers")
    parser.add_argument("--db", help="store to fill (default: a temporary file)")
    args = parser.parse_args()

    tmp = tempfile.TemporaryDirectory()
    db = Path(args.db or Path(tmp.name) / "bench.duckdb")
    server = subprocess.Popen(
        [sys.executable, "-m", "choreoscope.cli", "serve", "--no-dashboard", "--db", str(db),
         "--grpc-port", "0", "--http-port", "0", "--decode-workers", str(args.decode_workers)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    address = None
    for line in server.stdout:
        if m := re.match(r"OTLP/gRPC listening on (\S+)", line):
            address = m.group(1)
            break
    if address is None:
        print(server.stderr.read(), file=sys.stderr)
        return 1

    ctx = mp.get_context("fork")
    ready, go, results = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=client_main, args=(c, address, args, ready, go, results))
             for c in range(args.clients)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.acquire()
    cpu_before = tree_cpu_seconds(server.pid)
    main_cpu_before = cpu_seconds(server.pid)
    idle_before = machine_idle_seconds()
    t_start = time.perf_counter()
    go.set()
    ends, latencies = [], []
    for _ in procs:
        _client, t_end, lat = results.get()
        ends.append(t_end)
        latencies.extend(lat)
    for p in procs:
        p.join()
    elapsed = max(ends) - t_start
    idle = machine_idle_seconds() - idle_before
    tree = process_tree(server.pid)
    rss = peak_rss_mb(server.pid)
    workers_rss = sum(peak_rss_mb(p) for p in tree[1:])
    server_cpu = tree_cpu_seconds(server.pid) - cpu_before
    main_cpu = cpu_seconds(server.pid) - main_cpu_before
    server.send_signal(signal.SIGTERM)
    _, err = server.communicate(timeout=120)
    if server.returncode != 0:
        print(err, file=sys.stderr)
        return 1

    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    warmup = args.clients  # one single-span request per client before timing
    stored = con.execute("SELECT count(*) FROM spans").fetchall()[0][0] - warmup
    con.close()
    expected = args.clients * args.requests * args.spans
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    print(f"clients={args.clients}x{args.streams} streams, requests={len(latencies)} spans/request={args.spans} attrs/span={args.attrs}")
    print(f"stored {stored} spans (expected {expected}) in {elapsed:.2f} s "
          f"-> {stored / elapsed:,.0f} spans/s stored")
    print(f"export latency p50={pct(0.5):.1f} ms p99={pct(0.99):.1f} ms max={latencies[-1] * 1000:.1f} ms")
    print(f"server peak RSS {rss:.0f} MiB (+ {workers_rss:.0f} MiB in {len(tree) - 1} decode workers), "
          f"server CPU {server_cpu:.2f} s ({stored / max(server_cpu, 1e-9):,.0f} spans per CPU-second; "
          f"{main_cpu:.2f} s in the server process, {server_cpu - main_cpu:.2f} s in decode workers)")
    import os

    cores = os.cpu_count() or 1
    print(f"machine idle {idle / (elapsed * cores):.0%} of {cores} cores while sending")
    tmp.cleanup()
    return 0 if stored == expected else 1


if __name__ == "__main__":
    sys.exit(main())
