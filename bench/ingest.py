"""Ingest benchmark: how many spans/s `choreoscope serve` stores, end to end over OTLP/gRPC.

As users run it: random W3C ids (os.urandom, as the SDKs make them), spans with a mix of
attribute types (strings, ints, doubles, bools, string and int arrays), several client processes
each with several exports in flight, retrying on RESOURCE_EXHAUSTED after the server's RetryInfo
delay (else an exponential backoff) as the Python SDK's exporter does. In one run the same load goes to
  1. a parse-only sink: a gRPC server that decodes each request into store rows exactly as serve
     does (choreoscope's DecodePool, same worker count) and acknowledges without storing;
  2. `serve --no-dashboard` on a fresh store;
  3. `serve` with the dashboard and its live analysis, on a fresh store;
and prints for each spans/s, export latency p50/p99, peak RSS of the server and of its decode
workers, then each serve's rate as a ratio of the sink's. Every serve run checks its store holds
each span sent exactly once (none lost, none twice). The load average is printed with them.

Those runs are too short for the live analysis (every 30 s) to run. `--only live` measures ingest
while it runs: `--live-requests` requests a client (default 5,000: 2M spans, long enough for the
analysis to run several times over a store growing past a million spans), sent to
`serve --no-dashboard` (the reference), then to `serve` as users start it (dashboard and live
analysis, `--analyze-every` seconds). Serve's /metrics endpoint, read every 0.25 s, gives the spans
stored over time, serve's stderr when each analysis began and ended; printed: each analysis (when,
the spans it covered), the spans stored a second every 10 s, the ingest rate while analyses ran
and while none did, and the whole run's rate as a ratio of the reference's (the issue's target: at
least 0.8).

    .venv/bin/python bench/ingest.py [--clients 4] [--streams 4] [--requests 500] [--spans 100] [--attrs 10] [--links 0]
        [--decode-workers 2] [--only sink,serve,dashboard,live] [--live-requests 5000] [--analyze-every 30]
        [--store-only] [--serve-arg=--queue-spans=20000]
        [--writer [--writer-groups 512,4096,16384,100000]]
        [--py-spy PATH [--profile-dir DIR]]

`--writer` times the store writer alone instead (no server): see writer_only. Each serve run also
prints serve's own account of its writer (group commits, their mean size, the writer thread's CPU).

`--py-spy PATH` (a py-spy binary; a measuring tool, never a dependency) samples each server and its
decode workers while the load runs and prints where their time goes: the functions the samples
were in (self) and the ones they were under (total), per process kind. Sampling costs the server
some CPU, so the rates of a profiled run are not the benchmark's figures.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def build_requests(client: int, n_requests: int, n_spans: int, n_attrs: int, n_links: int = 0) -> list[bytes]:
    """Serialized export requests: random ids (a trace of up to 10 spans), mixed attribute types;
    each trace's root links to `n_links` spans of the traces before it (a consumer started in a
    new trace, as messaging instrumentations link a message's send)."""
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
        trace_id = root = b""
        earlier: list[tuple[bytes, bytes]] = []
        for i in range(n_spans):
            span = ss.spans.add()
            if i % 10 == 0:
                if trace_id:
                    earlier.append((trace_id, root))
                trace_id, root = os.urandom(16), os.urandom(8)
                span.span_id = root
                span.kind = 2
                for linked_trace, linked_span in earlier[-n_links:] if n_links else ():
                    link = span.links.add()
                    link.trace_id, link.span_id = linked_trace, linked_span
            else:
                span.span_id = os.urandom(8)
                span.parent_span_id = root
                span.kind = 3
            span.trace_id = trace_id
            span.name = f"GET /items/{i % 7}"
            span.start_time_unix_nano = now + i * 1000
            span.end_time_unix_nano = now + i * 1000 + 500
            for a in range(n_attrs):
                kv = span.attributes.add()
                v = kv.value
                match a % 7:
                    case 0:
                        kv.key, v.string_value = "http.request.method", "GET"
                    case 1:
                        kv.key, v.int_value = "http.response.status_code", 200
                    case 2:
                        kv.key, v.double_value = f"bench.ratio.{a}", i / 7
                    case 3:
                        kv.key, v.bool_value = f"bench.flag.{a}", bool(i & 1)
                    case 4:
                        kv.key = f"bench.tags.{a}"
                        v.array_value.values.add().string_value = "a"
                        v.array_value.values.add().string_value = f"t{i % 5}"
                    case 5:
                        kv.key = f"bench.ints.{a}"
                        for x in (1, i % 9):
                            v.array_value.values.add().int_value = x
                    case _:
                        kv.key, v.string_value = f"bench.attr.{a}", f"value-{a}-{i}"
        bodies.append(req.SerializeToString())
    return bodies


def client_main(client: int, address: str, args, ready, go, results) -> None:
    """One client process: `args.streams` threads, each with one export in flight at a time."""
    import threading

    import grpc

    bodies = build_requests(client, args.requests, args.spans, args.attrs, args.links)
    latencies: list[float] = []
    refusals = [0]
    with grpc.insecure_channel(address) as channel:
        export = channel.unary_unary(EXPORT, request_serializer=None, response_deserializer=None)
        export(build_requests(1000 + client, 1, 1, 1)[0], timeout=30)  # connect before timing

        def stream(share: list[bytes]) -> None:
            for body in share:
                attempt = 0
                while True:
                    t0 = time.perf_counter()
                    try:
                        export(body, timeout=60)
                    except grpc.RpcError as exc:
                        if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                            refusals[0] += 1
                            time.sleep(retry_delay(exc, attempt))
                            attempt += 1
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
    results.put((client, time.perf_counter(), latencies, refusals[0]))


def retry_delay(exc, attempt: int) -> float:
    """How long the Python SDK's exporter waits before retrying a refused export: the server's
    RetryInfo delay when it sends one, else 2**attempt seconds with +/-20% jitter."""
    import random

    from google.rpc.error_details_pb2 import RetryInfo

    raw = dict(exc.trailing_metadata() or ()).get("google.rpc.retryinfo-bin")
    if raw is None:
        return 2 ** attempt * random.uniform(0.8, 1.2)
    delay = RetryInfo.FromString(raw).retry_delay
    return delay.seconds + delay.nanos / 1e9


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


def sink_main(decode_workers: int) -> int:
    """The parse-only sink: decode every request as serve does, acknowledge, store nothing."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import grpc
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    from choreoscope.collector.export_decode import PROTOBUF, DecodePool
    from choreoscope.collector.receiver_grpc import SERVICE_NAME, SOURCE

    decoder = DecodePool(decode_workers)
    ok = ExportTraceServiceResponse().SerializeToString()

    def export(raw: bytes, _context) -> bytes:
        decoder.decode(raw, PROTOBUF, "identity", 16 * 1024 * 1024, SOURCE)
        return ok

    server = grpc.server(ThreadPoolExecutor(max_workers=32), handlers=[grpc.method_handlers_generic_handler(
        SERVICE_NAME, {"Export": grpc.unary_unary_rpc_method_handler(export)})],
        options=[("grpc.max_receive_message_length", 16 * 1024 * 1024), ("grpc.so_reuseport", 0)])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"OTLP/gRPC listening on 127.0.0.1:{port}", flush=True)
    stop.wait()
    server.stop(5).wait()
    decoder.close()
    return 0


class MetricsTimeline:
    """Serve's /metrics read every `every` seconds in a thread, (time, spans stored) samples; and
    serve's stderr read as it comes, each live analysis from its "analysing N spans" line to its
    "done in" (or "failed") line, or to the end of the load if it had not ended by then."""

    def __init__(self, url: str, stderr, every: float = 0.25):
        import threading

        self.url, self.every = url, every
        self.stored: list[tuple[float, float]] = []
        self.lines: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        self._reader = threading.Thread(target=self._read, args=(stderr,), daemon=True)
        self._reader.start()

    def _read(self, stderr) -> None:
        for line in stderr:
            self.lines.append((time.time(), line))

    def _poll(self) -> None:
        import urllib.request

        while not self._stop.wait(self.every):
            try:
                text = urllib.request.urlopen(self.url, timeout=5).read().decode()
            except OSError:
                continue
            m = re.search(r"^choreoscope_spans_stored_total (\S+)$", text, re.MULTILINE)
            self.stored.append((time.time(), float(m.group(1)) if m else 0.0))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def stderr(self) -> str:
        """All of serve's stderr (call once it has exited)."""
        self._reader.join(10)
        return "".join(line for _, line in self.lines)

    def analyses(self, t_end: float) -> list[tuple[float, float, str]]:
        """(start, end, what) of each live analysis, in unix times; one still running ends at t_end."""
        out, began = [], None
        for when, line in list(self.lines):
            if m := re.search(r"analysing ([\d,]+ spans.*)$", line):
                began = (when, m.group(1).strip())
            elif began and re.search(r"analysis of [\d,]+ spans (done|failed)", line):
                out.append((began[0], when, began[1]))
                began = None
        if began:
            out.append((began[0], t_end, began[1] + ", still running"))
        return out

    def per_interval(self, t_start: float, t_end: float, step: float = 10.0) -> list[float]:
        """Spans stored a second in each `step` seconds from t_start (unix times) to t_end."""
        out = []
        for k in range(int((t_end - t_start) // step) + 1):
            lo, hi = t_start + k * step, min(t_start + (k + 1) * step, t_end)
            inside = [(when, n) for when, n in self.stored if lo <= when <= hi]
            (t0, n0), (t1, n1) = (inside[0], inside[-1]) if inside else ((0, 0), (0, 0))
            out.append((n1 - n0) / (t1 - t0) if t1 > t0 else 0.0)
        return out

    def rates(self, t_start: float, t_end: float) -> tuple[float | None, float | None]:
        """Spans stored a second (unix times t_start..t_end) while an analysis ran, and while none did."""
        windows = [(a, b) for a, b, _ in self.analyses(t_end)]
        spans = {True: 0.0, False: 0.0}
        seconds = {True: 0.0, False: 0.0}
        for (t0, n0), (t1, n1) in zip(self.stored, self.stored[1:]):
            if t0 < t_start or t1 > t_end:
                continue
            mid = (t0 + t1) / 2
            busy = any(a <= mid <= b for a, b in windows)
            spans[busy] += n1 - n0
            seconds[busy] += t1 - t0
        return tuple(spans[k] / seconds[k] if seconds[k] else None for k in (True, False))


def run_load(mode: str, args, db: Path) -> dict | None:
    """Start the server of `mode`, send the load, stop it; the figures (None if it failed).
    Modes `live-serve` and `live-dashboard` (`--only live` is both) are `serve` and `dashboard`
    with the live runs' load, /metrics read during it (MetricsTimeline)."""
    live = mode.startswith("live")
    if live:
        args = argparse.Namespace(**{**vars(args), "requests": args.live_requests})
    if mode == "sink":
        cmd = [sys.executable, str(Path(__file__).resolve()), "--sink", "--decode-workers", str(args.decode_workers)]
    else:
        cmd = [sys.executable, "-m", "choreoscope.cli", "serve", "--db", str(db), "--grpc-port", "0",
               "--http-port", "0", "--decode-workers", str(args.decode_workers)]
        cmd += ["--no-dashboard"] if mode in ("serve", "live-serve") else ["--dashboard-port", "0"]
        if live:
            cmd += ["--metrics-port", "0", "--analyze-every", str(args.analyze_every)]
        cmd += args.serve_arg
    server = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    address = metrics_url = None
    for line in server.stdout:
        if m := re.match(r"OTLP/gRPC listening on (\S+)", line):
            address = m.group(1)
        if m := re.match(r"Prometheus metrics on (\S+)", line):
            metrics_url = m.group(1)
        if address and (metrics_url or not live):
            break
    if address is None or (live and metrics_url is None):
        print(server.stderr.read(), file=sys.stderr)
        return None

    spy = start_profile(args, mode, server.pid)
    ctx = mp.get_context("fork")
    ready, go, results = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=client_main, args=(c, address, args, ready, go, results))
             for c in range(args.clients)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.acquire()
    cpu_before = tree_cpu_seconds(server.pid)
    own_cpu_before = cpu_seconds(server.pid)
    idle_before = machine_idle_seconds()
    timeline = MetricsTimeline(metrics_url, server.stderr) if live else None
    t_start, unix_start = time.perf_counter(), time.time()
    go.set()
    ends, latencies, refused = [], [], 0
    for _ in procs:
        _client, t_end, lat, n_refused = results.get()
        ends.append(t_end)
        latencies.extend(lat)
        refused += n_refused
    for p in procs:
        p.join()
    elapsed = max(ends) - t_start
    unix_end = unix_start + elapsed
    if timeline is not None:
        timeline.stop()
    idle = machine_idle_seconds() - idle_before
    tree = process_tree(server.pid)
    rss = peak_rss_mb(server.pid)
    workers = [p for p in tree[1:] if "python" in Path(f"/proc/{p}/comm").read_text()]
    workers_rss = sum(peak_rss_mb(p) for p in workers)
    server_cpu = tree_cpu_seconds(server.pid) - cpu_before
    own_cpu = cpu_seconds(server.pid) - own_cpu_before  # the server process alone (not its workers)
    stop_profile(spy, mode)
    server.send_signal(signal.SIGTERM)
    if timeline is None:
        _, err = server.communicate(timeout=180)
    else:  # its reader has the stderr
        server.stdout.read()
        server.wait(timeout=180)
        err = timeline.stderr()
    if server.returncode != 0:
        print(err, file=sys.stderr)
        return None
    writer = next((line.strip() for line in err.splitlines() if line.startswith("stopped: ")), "")
    expected = args.clients * args.requests * args.spans
    stored = distinct = expected
    if mode != "sink":
        import duckdb

        con = duckdb.connect(str(db), read_only=True)
        warmup = args.clients  # one single-span request per client before timing
        total, distinct = con.execute("SELECT count(*), count(DISTINCT (trace_id, span_id)) FROM spans").fetchall()[0]
        stored, distinct = total - warmup, distinct - warmup
        con.close()
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    cores = os.cpu_count() or 1
    label = {"sink": "parse-only sink", "serve": "serve --no-dashboard", "dashboard": "serve (dashboard)",
             "live-serve": "live: serve --no-dash.", "live-dashboard": "live: serve (dashb.)"}[mode]
    verb = "acknowledged" if mode == "sink" else "stored"
    print(f"{label:22} {verb} {stored} spans (expected {expected}, {stored - distinct} twice) in {elapsed:.2f} s "
          f"-> {stored / elapsed:,.0f} spans/s; {refused} exports refused (retried); export p50={pct(0.5):.1f} ms p99={pct(0.99):.1f} ms; "
          f"peak RSS server {rss:.0f} MiB + {workers_rss:.0f} MiB in {len(workers)} workers; "
          f"CPU {server_cpu:.1f} s ({own_cpu:.1f} s server, {server_cpu - own_cpu:.1f} s workers); machine idle {idle / (elapsed * cores):.0%} of {cores} cores; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    if writer:
        print(f"{'':22} {writer}", flush=True)
    if timeline is not None:
        if mode == "live-dashboard":
            runs = timeline.analyses(unix_end)
            print(f"{'':22} {len(runs)} live analyses: " + "; ".join(
                f"from {start - unix_start:.0f} s to {end - unix_start:.0f} s over {what}"
                for start, end, what in runs), flush=True)
        print(f"{'':22} stored a second, each 10 s: " + " ".join(
            f"{rate / 1000:.1f}k" for rate in timeline.per_interval(unix_start, unix_end)), flush=True)
    if timeline is not None and mode == "live-dashboard":
        busy, calm = timeline.rates(unix_start, unix_end)
        print(f"{'':22} stored while an analysis ran: "
              f"{'-' if busy is None else f'{busy:,.0f}'} spans/s; while none did: "
              f"{'-' if calm is None else f'{calm:,.0f}'} spans/s", flush=True)
    return {"rate": stored / elapsed, "ok": stored == expected == distinct}


def start_profile(args, mode: str, pid: int):
    """py-spy attached to the server and its children (None without --py-spy)."""
    if not args.py_spy:
        return None
    out = Path(args.profile_dir) / f"{mode}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [args.py_spy, "record", "--pid", str(pid), "--subprocesses", "--nonblocking", "--rate", "200",
           "--format", "raw", "-o", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)  # attached before the load starts
    return proc, out


def stop_profile(spy, mode: str) -> None:
    """Stop py-spy (SIGINT makes it write its samples) and print the summary."""
    if spy is None:
        return
    proc, out = spy
    proc.send_signal(signal.SIGINT)
    try:
        proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
    if not out.exists():
        print(f"py-spy wrote no profile for {mode}", file=sys.stderr)
        return
    print(profile_summary(out, mode), flush=True)


def profile_summary(path: Path, mode: str, top: int = 12) -> str:
    """py-spy's raw (collapsed) stacks summarised: per process kind (the server's threads, the
    decode workers), the share of samples by the function they were in, and by the function they
    were under (each function counted once per stack)."""
    import collections

    by_kind: dict[str, tuple[collections.Counter, collections.Counter]] = {}
    totals: collections.Counter = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        # py-spy's first frame names the process ("process 123:\"python -m ...\""); workers are
        # the processes the decode pool forked
        kind = "decode worker" if "forkserver" in frames[0] or "multiprocessing" in stack else "server"
        own, under = by_kind.setdefault(kind, (collections.Counter(), collections.Counter()))
        n = int(count)
        totals[kind] += n
        names = [re.sub(r" \(.*/", " (", f) for f in frames if not f.startswith("process ")] or ["<idle>"]
        own[names[-1]] += n
        for name in set(names):
            under[name] += n
    lines = [f"profile of {mode} ({path}):"]
    for kind, (own, under) in sorted(by_kind.items()):
        total = totals[kind]
        lines.append(f"  {kind}: {total} samples")
        lines.append("    self:  " + "; ".join(f"{n / total:.0%} {name}" for name, n in own.most_common(top)))
        lines.append("    total: " + "; ".join(f"{n / total:.0%} {name}" for name, n in under.most_common(top)
                                              if n < total))
    return "\n".join(lines)


def store_only(args) -> None:
    """The writer's part alone, in this process: the same requests decoded once into store rows,
    committed in groups of ~4096 spans (as the receiver's group commit does) into a fresh store
    with span_keys, and into one whose spans have the old primary key on (trace_id, span_id)."""
    import duckdb
    import pyarrow as pa

    from choreoscope.collector import store
    from choreoscope.collector.export_decode import PROTOBUF, DecodePool
    from choreoscope.collector.ingest import TARGET_GROUP_SPANS

    pool = DecodePool(0)
    tables = [pool.decode(body, PROTOBUF, "identity", 16 * 1024 * 1024, "otlp-grpc").spans
              for c in range(args.clients) for body in build_requests(c, args.requests, args.spans, args.attrs, args.links)]
    per_group = max(1, TARGET_GROUP_SPANS // args.spans)
    groups = [pa.concat_tables(tables[i:i + per_group]).combine_chunks() for i in range(0, len(tables), per_group)]
    n = sum(t.num_rows for t in groups)
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for layout in ("span_keys", "old primary key", "no index"):
            db = Path(tmp) / f"{len(rates)}.duckdb"
            if layout == "span_keys":
                con = store.connect(db)
            else:
                con = duckdb.connect(str(db))
                cols = ", ".join(f"{c} {t}" for c, t in store.SPAN_COLUMNS)
                key = ", PRIMARY KEY (trace_id, span_id)" if layout == "old primary key" else ""
                con.execute(f"CREATE TABLE spans ({cols}{key})")
            con.execute("SET threads = 1")
            t0 = time.perf_counter()
            for rows in groups:
                con.execute("BEGIN TRANSACTION")
                if layout == "span_keys":
                    store.insert_arrow(con, rows, None, skip_duplicates=False)
                else:
                    con.execute("INSERT INTO spans SELECT * FROM rows").fetchall()
                con.execute("COMMIT")
            rates[layout] = n / (time.perf_counter() - t0)
            con.close()
    print(f"store only ({n} spans in {len(groups)} commits, one DuckDB thread): "
          f"{rates['span_keys']:,.0f} spans/s with span_keys, {rates['old primary key']:,.0f} with the old "
          f"primary key, {rates['no index']:,.0f} with no index (no dedup) -> span_keys / old "
          f"{rates['span_keys'] / rates['old primary key']:.2f}; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)


def writer_only(args) -> None:
    """The writer alone (issue #12): the requests decoded once into the Arrow tables the receiver
    builds, inserted into a fresh file store in groups of each of `--writer-groups` spans as
    Ingester._commit_group does (BEGIN; INSERT span_keys; INSERT spans; COMMIT), the JSON columns
    as plain strings (DuckDB parses each to check it) and JSON-typed (store.as_json_typed, as the
    receiver sends them). Prints this thread's CPU per span in each statement, COMMIT's wall time,
    the WAL bytes per span, and one CHECKPOINT of it all at the end. One DuckDB thread, as
    `serve --no-dashboard` on 2 cores. The variants alternate, twice, for a noisy machine."""
    import pyarrow as pa

    from choreoscope.collector import store
    from choreoscope.collector.export_decode import PROTOBUF, DecodePool

    pool = DecodePool(0)
    tables = [pool.decode(body, PROTOBUF, "identity", 16 * 1024 * 1024, "otlp-grpc").spans
              for c in range(args.clients) for body in build_requests(c, args.requests, args.spans, args.attrs)]
    n = sum(t.num_rows for t in tables)
    print(f"writer alone: {n} spans of {len(tables)} requests", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(2):
            for size in (int(x) for x in args.writer_groups.split(",")):
                per = max(1, size // args.spans)
                groups = [pa.concat_tables(tables[i:i + per]).combine_chunks() for i in range(0, len(tables), per)]
                for typed in (False, True):
                    db = Path(tmp) / f"{rep}-{size}-{typed}.duckdb"
                    con = store.connect(db)
                    con.execute("SET threads = 1")
                    con.execute("SET checkpoint_threshold = '1000TB'")
                    cpu = dict.fromkeys(("keys", "spans", "commit"), 0.0)
                    commit_wall = 0.0
                    for rows in groups:
                        _rows = store.as_json_typed(rows) if typed else rows  # read by name (replacement scan)
                        t0 = time.thread_time()
                        con.execute("BEGIN TRANSACTION")
                        con.execute(f"INSERT INTO span_keys SELECT {store.SPAN_KEY_SQL} FROM _rows").fetchall()
                        t1 = time.thread_time()
                        con.execute("INSERT INTO spans SELECT * FROM _rows").fetchall()
                        t2, w2 = time.thread_time(), time.perf_counter()
                        con.execute("COMMIT")
                        t3 = time.thread_time()
                        commit_wall += time.perf_counter() - w2
                        cpu["keys"] += t1 - t0
                        cpu["spans"] += t2 - t1
                        cpu["commit"] += t3 - t2
                    wal = os.path.getsize(f"{db}.wal")
                    t0 = time.thread_time()
                    con.execute("CHECKPOINT")
                    checkpoint = time.thread_time() - t0
                    con.close()
                    us = {k: v / n * 1e6 for k, v in cpu.items()}
                    print(f"  groups of {size:6} spans, JSON {'typed' if typed else 'text '}: CPU µs/span "
                          f"BEGIN+span_keys {us['keys']:.2f}, spans {us['spans']:.2f}, COMMIT {us['commit']:.2f} "
                          f"(wall {commit_wall / n * 1e6:.2f}), total {sum(us.values()):.2f}; WAL {wal / n:.0f} B/span; "
                          f"CHECKPOINT {checkpoint / n * 1e6:.2f} µs/span; load average "
                          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=4, help="concurrent client processes")
    parser.add_argument("--streams", type=int, default=4, help="exports in flight per client process")
    parser.add_argument("--requests", type=int, default=500, help="requests per client")
    parser.add_argument("--spans", type=int, default=100, help="spans per request")
    parser.add_argument("--attrs", type=int, default=10, help="attributes per span")
    parser.add_argument("--links", type=int, default=0,
                        help="links on each trace's root to the traces before it in its request")
    parser.add_argument("--decode-workers", type=int, default=2, help="serve --decode-workers (and the sink's)")
    parser.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                        help="extra serve argument (repeatable), e.g. --serve-arg=--queue-spans=20000")
    parser.add_argument("--only", default="sink,serve,dashboard",
                        help="which runs, comma-separated (live: ingest while the live analysis runs)")
    parser.add_argument("--live-requests", type=int, default=5000, help="requests per client in the live runs")
    parser.add_argument("--analyze-every", type=float, default=30.0, help="serve --analyze-every in the live runs")
    parser.add_argument("--py-spy", metavar="PATH", help="a py-spy binary: profile each server while loaded")
    parser.add_argument("--profile-dir", default="bench-profiles", help="where --py-spy writes its samples")
    parser.add_argument("--store-only", action="store_true",
                        help="also time the writer alone: span_keys against the old primary key")
    parser.add_argument("--writer", action="store_true",
                        help="only time the writer alone: INSERT / COMMIT CPU per span by group size (no server)")
    parser.add_argument("--writer-groups", default="512,4096,16384,100000", metavar="SPANS,...",
                        help="group sizes for --writer")
    parser.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)  # the sink's own process
    args = parser.parse_args()
    if args.sink:
        return sink_main(args.decode_workers)

    print(f"clients={args.clients}x{args.streams} streams, {args.clients * args.requests} requests of "
          f"{args.spans} spans, {args.attrs} attributes/span, {args.links} links/trace root; load average before: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    if args.writer:
        writer_only(args)
        return 0
    if args.store_only:
        store_only(args)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        modes = [m for mode in args.only.split(",") for m in (("live-serve", "live-dashboard") if mode == "live" else (mode,))]
        for mode in modes:
            results[mode] = run_load(mode, args, Path(tmp) / f"{mode}.duckdb")
            if results[mode] is None:
                return 1
    sink = results.get("sink")
    for mode in ("serve", "dashboard"):
        if sink and results.get(mode):
            print(f"ratio {mode} / parse-only sink: {results[mode]['rate'] / sink['rate']:.2f}")
    if results.get("live-dashboard") and results.get("live-serve"):
        print(f"ratio live (analysis every {args.analyze_every:g} s) / serve --no-dashboard, same load: "
              f"{results['live-dashboard']['rate'] / results['live-serve']['rate']:.2f}")
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
