"""Benchmark loading a trace dump into a new store: wall time, CPU time and spans/s.

    python bench/load.py DUMP [DUMP ...] [--workers N] [--repeat 3] [--reload] [--as jaeger|zipkin] [--walk]

Each run loads the dump into a fresh store file (as `choreoscope load` does) and prints the wall
seconds, the CPU seconds of this process and of its parse workers (from /proc: they are forked by
a fork server that outlives the load; its own start-up is not counted), spans/s, and the load average:
on a shared machine the wall time moves with the other processes, the CPU seconds much less, so
compare runs of one invocation. `--reload` also loads the dump a second time into the same store
(every span a duplicate: the checked insert's cost). The best of `--repeat` runs is shown last.
Generate a dump with `python bench/gen_dump.py OUT.jsonl --spans 100000`.

`--as jaeger` / `--as zipkin` first writes each (OTLP JSON lines) dump as a Jaeger query-API
document (`{"data": [trace, ...]}`, typed tags, a log on every tenth span, links as FOLLOWS_FROM
references) or a Zipkin v2 list of spans, in a temporary directory, and loads that. `--walk` turns
the Jaeger and Zipkin loaders' columnar path off (collector/loaders/walked_arrow.py), to compare
with the span-by-span walk: both store the same rows.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


_WORKER_CPU = [0.0]


def _count_worker_cpu() -> None:
    """Add each parse worker's CPU seconds (from /proc, Linux) to _WORKER_CPU as its pool closes:
    the workers are forked by the fork server, so this process's children rusage misses them."""
    from choreoscope.collector.loaders import parallel

    close = parallel.close_pool

    def counting_close(pool) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        for proc in getattr(pool, "_pool", []):
            try:
                fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
                _WORKER_CPU[0] += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
            except (OSError, IndexError, ValueError):
                pass
        close(pool)

    parallel.close_pool = counting_close
    for name in ("choreoscope.collector.loaders", "choreoscope.collector.loaders.otlp_proto"):
        module = sys.modules[name]
        if getattr(module, "close_pool", None) is close:
            module.close_pool = counting_close


def _cpu() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # spawned workers, once reaped
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime + _WORKER_CPU[0]


_KINDS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


def _value(value: dict) -> tuple[str, object]:
    """An OTLP JSON AnyValue as a Jaeger tag's (type, value)."""
    (member, v), = value.items()
    if member == "intValue":
        return "int64", int(v)
    if member == "boolValue":
        return "bool", v
    if member == "doubleValue":
        return "float64", v
    return "string", v


def convert(dump: str, fmt: str, out: Path) -> None:
    """Write the OTLP JSON-lines `dump` as Jaeger JSON or Zipkin v2 JSON (see the docstring)."""
    import orjson

    traces: dict[str, dict] = {}
    zipkin: list[dict] = []
    n = 0
    with open(dump, "rb") as f:
        for line in f:
            for rs in orjson.loads(line)["resourceSpans"]:
                res = {a["key"]: _value(a["value"]) for a in (rs.get("resource") or {}).get("attributes", [])}
                service = res.pop("service.name", ("string", "unknown"))[1]
                for ss in rs["scopeSpans"]:
                    scope = ss.get("scope") or {}
                    for sp in ss["spans"]:
                        n += 1
                        tid, start = sp["traceId"], int(sp["startTimeUnixNano"]) // 1000
                        duration = int(sp["endTimeUnixNano"]) // 1000 - start
                        kind, code = _KINDS.get(sp.get("kind", 0)), (sp.get("status") or {}).get("code", 0)
                        attrs = [(a["key"], *_value(a["value"])) for a in sp.get("attributes", [])]
                        if fmt == "zipkin":
                            rec = {"traceId": tid, "id": sp["spanId"], "name": sp["name"], "timestamp": start,
                                   "duration": duration, "localEndpoint": {"serviceName": service},
                                   "tags": {k: str(v) for k, _, v in attrs}}
                            if sp.get("parentSpanId"):
                                rec["parentId"] = sp["parentSpanId"]
                            if kind and kind != "internal":
                                rec["kind"] = kind.upper()
                            if code == 2:
                                rec["tags"]["error"] = (sp.get("status") or {}).get("message", "")
                            if n % 10 == 0:
                                rec["annotations"] = [{"timestamp": start + 1, "value": "checkpoint"}]
                            zipkin.append(rec)
                            continue
                        tags = [{"key": k, "type": t, "value": v} for k, t, v in attrs]
                        if kind:
                            tags.append({"key": "span.kind", "type": "string", "value": kind})
                        if code == 2:
                            tags.append({"key": "otel.status_code", "type": "string", "value": "ERROR"})
                        if scope.get("name"):
                            tags.append({"key": "otel.scope.name", "type": "string", "value": scope["name"]})
                        refs = [{"refType": "CHILD_OF", "traceID": tid, "spanID": sp["parentSpanId"]}
                                ] if sp.get("parentSpanId") else []
                        refs += [{"refType": "FOLLOWS_FROM", "traceID": lk["traceId"], "spanID": lk["spanId"]}
                                 for lk in sp.get("links", [])]
                        logs = [{"timestamp": start + 1, "fields": [
                            {"key": "event", "type": "string", "value": "checkpoint"}]}] if n % 10 == 0 else []
                        trace = traces.setdefault(tid, {"traceID": tid, "spans": [], "processes": {}})
                        process = {"serviceName": service,
                                   "tags": [{"key": k, "type": t, "value": v} for k, (t, v) in res.items()]}
                        pid = next((p for p, q in trace["processes"].items() if q == process), None)
                        if pid is None:
                            pid = f"p{len(trace['processes']) + 1}"
                            trace["processes"][pid] = process
                        trace["spans"].append({"traceID": tid, "spanID": sp["spanId"], "operationName": sp["name"],
                                               "references": refs, "startTime": start, "duration": duration,
                                               "tags": tags, "logs": logs, "processID": pid})
    doc = zipkin if fmt == "zipkin" else {"data": list(traces.values()), "total": 0, "limit": 0, "offset": 0,
                                          "errors": None}
    out.write_bytes(orjson.dumps(doc))


def load_once(dump: str, db: Path, workers: int | None) -> dict:
    from choreoscope.collector import store
    from choreoscope.collector.loaders import load_paths

    con = store.connect(db)
    try:
        own0, kids0 = _cpu()
        t0 = time.perf_counter()
        result = load_paths(con, [dump], workers=workers)
        wall = time.perf_counter() - t0
        own1, kids1 = _cpu()
    finally:
        con.close()
    return {"wall_s": wall, "cpu_main_s": own1 - own0, "cpu_workers_s": kids1 - kids0,
            "spans": result.spans_loaded, "duplicates": result.duplicates_skipped,
            "errors": len(result.errors), "format": result.files[0].format if result.files else "-"}


def _show(label: str, r: dict) -> None:
    n = r["spans"] or r["duplicates"]
    print(f"{label:>10}: {r['wall_s']:6.2f} s wall  {n / r['wall_s']:>9,.0f} spans/s  cpu main "
          f"{r['cpu_main_s']:5.2f} s + workers {r['cpu_workers_s']:5.2f} s  ({r['spans']:,} stored, "
          f"{r['duplicates']:,} duplicates, {r['errors']} errors, {r['format']})  load avg "
          f"{os.getloadavg()[0]:.1f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dumps", nargs="+")
    ap.add_argument("--workers", type=int, default=None, help="parse processes (default: load_paths's choice)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--reload", action="store_true", help="also load each dump again into the same store")
    ap.add_argument("--as", dest="as_format", choices=("jaeger", "zipkin"),
                    help="load each (OTLP JSON lines) dump written in this format instead")
    ap.add_argument("--walk", action="store_true", help="Jaeger and Zipkin: walk every span (no columnar path)")
    args = ap.parse_args(argv)
    _count_worker_cpu()
    if args.walk:
        from choreoscope.collector.loaders import walked_arrow

        walked_arrow.COLUMNAR = False
    with tempfile.TemporaryDirectory() as converted:
        for dump in args.dumps:
            if args.as_format:
                out = Path(converted) / f"{Path(dump).stem}.{args.as_format}.json"
                convert(dump, args.as_format, out)
                dump = str(out)
            _bench(dump, args)
    return 0


def _bench(dump: str, args) -> None:
    """Load `dump` `--repeat` times into new stores and print each run (and the best)."""
    print(f"{dump} ({os.path.getsize(dump) / 1e6:.0f} MB), workers={args.workers}")
    best = None
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "bench.duckdb"
            r = load_once(dump, db, args.workers)
            _show(f"load {i + 1}", r)
            if best is None or r["wall_s"] < best["wall_s"]:
                best = r
            if args.reload:
                _show(f"reload {i + 1}", load_once(dump, db, args.workers))
    if args.repeat > 1:
        _show("best", best)


if __name__ == "__main__":
    raise SystemExit(main())
