"""Benchmark the analysis: end to end from a dump (default), or the pipeline on a synthetic store.

    python bench/analyze.py [--sizes 100000 1000000] [--keep DIR] [--on-disk] [--store] [--pm4py-python PY]

Default (`dump` mode): for each size, `bench/gen_dump.py` writes an OTLP/JSON-lines dump (random
W3C ids, consumers in new traces with links, message-id-only hops, fan-outs of 1-50, mixed
conventions), then one subprocess (so peak RSS is that size's alone) does what `choreoscope
analyze dump.jsonl` does, through the same function (`open_inputs`): load into a new in-memory
store, run the pipeline, build and validate the report. `--on-disk` measures instead what
`choreoscope load dump.jsonl --db S` and then `choreoscope analyze S` do: a store file, the
pipeline's tables written into it.
Prints seconds per stage (load, analysis, report; then each analysis stage, which on a small store
run side by side, so they add up to more than the analysis), spans/s loaded, peak RSS, and the
growth of the total time against the smallest size (linear growth is the size ratio). PM4Py, when installed (in
this interpreter, or in the one `--pm4py-python` names; it is never a dependency: AGPL), is run on
the smallest dump in the same run as the reference: read the dump, build its event log (case =
trace, activity = span name) and discover a DFG and an inductive-miner Petri net.

`--store`: the older benchmark of the pipeline alone, on stores synthesised in SQL from 10
workflow templates of about 50 spans each (calls, events continuing the trace, batch consumers
starting a new trace with a span link, message ids). Prints per stage seconds, total, spans/s and
peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

N_TYPES = 10
SPANS_PER_INSTANCE = 50
SERVICES = [f"svc-{i:02d}" for i in range(16)]
BASE_NS = 1_767_225_600_000_000_000  # 2026-01-01


def templates(seed: int = 11) -> list[tuple]:
    """(type, idx, parent idx or -1, link idx or -1, trace_no, service, kind, name, destination, offset µs)."""
    rng = random.Random(seed)
    rows = []
    for wf in range(N_TYPES):
        spans = [(0, -1, -1, 0, rng.choice(SERVICES), "SERVER", f"POST /flow{wf}", None, 0)]
        trace_no = 0
        while len(spans) < SPANS_PER_INSTANCE:
            parent = spans[rng.randrange(len(spans))]
            p_idx, _, _, p_trace, p_svc, p_kind, _, p_dest, p_off = parent
            idx = len(spans)
            off = p_off + rng.randint(50, 2000)
            if p_kind == "PRODUCER":
                svc = rng.choice([s for s in SERVICES if s != p_svc])
                if rng.random() < 0.3:  # batch consumer: new trace, linked to the producer
                    trace_no += 1
                    spans.append((idx, -1, p_idx, trace_no, svc, "CONSUMER", f"{p_dest} process", p_dest, off))
                else:
                    spans.append((idx, p_idx, -1, p_trace, svc, "CONSUMER", f"{p_dest} process", p_dest, off))
            elif p_kind == "CLIENT":
                svc = rng.choice([s for s in SERVICES if s != p_svc])
                spans.append((idx, p_idx, -1, p_trace, svc, "SERVER", f"GET /api/{idx % 7}", None, off))
            else:
                kind = rng.choice(["CLIENT", "PRODUCER", "INTERNAL", "CLIENT"])
                dest = f"topic-{wf}-{idx}" if kind == "PRODUCER" else None
                name = f"{dest} send" if dest else (f"GET /api/{idx % 7}" if kind == "CLIENT" else f"work {idx % 5}")
                spans.append((idx, p_idx, -1, p_trace, p_svc, kind, name, dest, off))
        rows += [(wf, *s) for s in spans]
    return rows


def build_store(path: Path, n_spans: int) -> None:
    import duckdb

    from choreoscope.collector import store

    con = store.connect(path)
    con.execute(
        "CREATE TEMP TABLE tpl (wf INT, idx INT, parent INT, link INT, trace_no INT, service VARCHAR, "
        "kind VARCHAR, name VARCHAR, dest VARCHAR, off_us BIGINT)"
    )
    con.executemany("INSERT INTO tpl VALUES (?,?,?,?,?,?,?,?,?,?)", templates())  # 500 template rows
    n_instances = n_spans // SPANS_PER_INSTANCE
    ids = "substr(md5('{kind}' || i.n || '-' || {col}), 1, {width})"
    con.execute(
        f"""
        INSERT INTO spans (trace_id, span_id, parent_span_id, name, kind, start_ns, end_ns, status_code,
                           service_name, messaging_system, messaging_destination, messaging_operation,
                           messaging_message_id, attributes, resource_attributes, events, source)
        SELECT {ids.format(kind='t', col='t.trace_no', width=32)},
               {ids.format(kind='s', col='t.idx', width=16)},
               CASE WHEN t.parent >= 0 THEN {ids.format(kind='s', col='t.parent', width=16)} END,
               t.name, t.kind,
               {BASE_NS} + i.n * 5000000000 + t.off_us * 1000 + (hash(i.n, t.idx) % 300) * 1000,
               {BASE_NS} + i.n * 5000000000 + t.off_us * 1000 + (hash(i.n, t.idx) % 300) * 1000 + 400000,
               CASE WHEN hash(i.n, t.idx) % 50 = 0 THEN 'ERROR' ELSE 'UNSET' END,
               t.service,
               CASE WHEN t.dest IS NOT NULL THEN 'kafka' END, t.dest,
               CASE WHEN t.kind = 'PRODUCER' THEN 'send' WHEN t.kind = 'CONSUMER' THEN 'process' END,
               CASE WHEN t.dest IS NOT NULL THEN 'm-' || i.n || '-' || coalesce(t.link, t.parent, t.idx) END,
               '{{}}', '{{}}', '[]', 'bench'
        FROM range({n_instances}) i(n) JOIN tpl t ON t.wf = i.n % {N_TYPES}
        """
    )
    con.execute(
        f"""
        INSERT INTO span_links (trace_id, span_id, linked_trace_id, linked_span_id, attributes)
        SELECT {ids.format(kind='t', col='t.trace_no', width=32)}, {ids.format(kind='s', col='t.idx', width=16)},
               {ids.format(kind='t', col='p.trace_no', width=32)}, {ids.format(kind='s', col='p.idx', width=16)}, '{{}}'
        FROM range({n_instances}) i(n) JOIN tpl t ON t.wf = i.n % {N_TYPES} AND t.link >= 0
        JOIN tpl p ON p.wf = t.wf AND p.idx = t.link
        """
    )
    con.close()
    del duckdb


def run_one(n_spans: int, workdir: Path) -> dict:
    from choreoscope.analysis.pipeline import run_pipeline
    from choreoscope.collector import store

    path = workdir / f"bench-{n_spans}.duckdb"
    t0 = time.perf_counter()
    build_store(path, n_spans)
    build_s = time.perf_counter() - t0
    con = store.connect(path)
    spans = store.scalar(con, "SELECT count(*) FROM spans")
    t0 = time.perf_counter()
    ctx = run_pipeline(con)
    total = time.perf_counter() - t0
    out = {
        "spans": spans,
        "instances": store.scalar(con, "SELECT count(*) FROM instances"),
        "workflows": store.scalar(con, "SELECT count(*) FROM workflows"),
        "findings": store.scalar(con, "SELECT count(*) FROM findings"),
        "build_s": round(build_s, 2),
        "analysis_s": round(total, 2),
        "spans_per_s": round(spans / total),
        "stages_s": {k: round(v, 2) for k, v in ctx.timings.items()},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    con.close()
    return out


def run_dump(dump: Path, workdir: Path, on_disk: bool = False) -> dict:
    """`choreoscope analyze DUMP`, stage by stage: load, pipeline, report (`on_disk`: `load` into
    a store file, then `analyze` that store)."""
    from choreoscope.analysis.open_inputs import open_inputs
    from choreoscope.analysis.pipeline import run_pipeline
    from choreoscope.analysis.report import build_report, validate_report
    from choreoscope.collector import store
    from choreoscope.collector.loaders import load_paths

    t0 = time.perf_counter()
    if on_disk:
        path = workdir / f"{dump.stem}.duckdb"
        path.unlink(missing_ok=True)
        con = store.connect(path)
        errors = len(load_paths(con, [dump]).errors)
    else:
        opened = open_inputs([str(dump)], str(workdir / "unused.duckdb"))
        con, errors = opened.con, len(opened.load_errors)
    load_s = time.perf_counter() - t0
    spans = store.scalar(con, "SELECT count(*) FROM spans")
    t1 = time.perf_counter()
    ctx = run_pipeline(con, release_intermediates=not on_disk)  # as `analyze` does
    analysis_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    report = build_report(con)
    validate_report(report)
    text = json.dumps(report, indent=2, default=str)
    report_s = time.perf_counter() - t2
    out = {
        "spans": spans, "errors": errors, "store": "file" if on_disk else "memory",
        "instances": store.scalar(con, "SELECT count(*) FROM instances"),
        "workflows": store.scalar(con, "SELECT count(*) FROM workflows"),
        "report_kb": len(text) // 1024,
        "load_s": round(load_s, 2), "analysis_s": round(analysis_s, 2), "report_s": round(report_s, 2),
        "total_s": round(load_s + analysis_s + report_s, 2),
        "load_spans_per_s": round(spans / load_s),
        "stages_s": {k: round(v, 2) for k, v in ctx.timings.items()},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    con.close()
    return out


PM4PY_REFERENCE = r"""
import json, sys, time
t0 = time.perf_counter()
import pandas as pd
import pm4py
rows = []
with open(sys.argv[1], encoding="utf-8") as fh:
    for line in fh:
        for rs in json.loads(line).get("resourceSpans", []):
            for ss in rs.get("scopeSpans", []):
                for sp in ss.get("spans", []):
                    rows.append((sp["traceId"], sp["name"], int(sp["startTimeUnixNano"])))
df = pd.DataFrame(rows, columns=["case", "activity", "ns"])
df["timestamp"] = pd.to_datetime(df["ns"], unit="ns", utc=True)
df = pm4py.format_dataframe(df, case_id="case", activity_key="activity", timestamp_key="timestamp")
pm4py.discover_dfg(df)
pm4py.discover_petri_net_inductive(df)
print(json.dumps({"pm4py_s": round(time.perf_counter() - t0, 2), "events": len(df)}))
"""


def pm4py_python(given: str | None) -> str | None:
    """The interpreter to run the PM4Py reference in, or None when PM4Py is not installed."""
    for py in ([given] if given else []) + [sys.executable]:
        probe = subprocess.run([py, "-c", "import pm4py"], capture_output=True, check=False)
        if probe.returncode == 0:
            return py
    return None


def _run_child(*args: str) -> dict | None:
    """This script in a subprocess (so peak RSS is that run's alone): its last stdout line as JSON,
    or None after printing its stderr when it failed. The analysis's own notes (a stage run again
    with more memory) are printed either way: they explain a time."""
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        return None
    for line in proc.stderr.splitlines():
        if line.startswith("analysis:"):
            print(f"  ({line})", file=sys.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main_dump(args, workdir: Path) -> int:
    from bench.gen_dump import generate

    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores; store "
          + ("in a file (`load`, then `analyze STORE`)" if args.on_disk else "in memory (`analyze DUMP`)"))
    print(f"{'spans':>9} {'dump MB':>7} {'load s':>6} {'spans/s':>8} {'analysis s':>10} {'report s':>8} "
          f"{'total s':>7} {'growth':>6} {'peak RSS MB':>11}  stages (s)")
    first = None
    dumps = {}
    for size in args.sizes:
        dump = workdir / f"dump-{size}.jsonl"
        if not dump.exists():
            generate(str(dump), size)
        dumps[size] = dump
        r = _run_child("--one-dump", str(dump), "--workdir", str(workdir), *(["--on-disk"] if args.on_disk else []))
        if r is None:
            return 1
        if first is None:
            first = r
        growth = (r["total_s"] / first["total_s"]) / (r["spans"] / first["spans"])
        stages = ", ".join(f"{k} {v}" for k, v in r["stages_s"].items())
        print(f"{r['spans']:>9} {dump.stat().st_size // 2**20:>7} {r['load_s']:>6} {r['load_spans_per_s']:>8} "
              f"{r['analysis_s']:>10} {r['report_s']:>8} {r['total_s']:>7} {growth:>6.2f} "
              f"{r['peak_rss_mb']:>11}  {stages}")
    print("growth: total time per span against the smallest size (1.00 = linear)")
    py = pm4py_python(args.pm4py_python)
    if py is None:
        print("PM4Py is not installed: no reference run (pip install pm4py in a throwaway venv and pass "
              "--pm4py-python; it is never a dependency: AGPL)")
        return 0
    smallest = min(args.sizes)
    proc = subprocess.run([py, "-c", PM4PY_REFERENCE, str(dumps[smallest])],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(f"PM4Py reference failed: {proc.stderr[-800:]}", file=sys.stderr)
        return 1
    ref = json.loads(proc.stdout.strip().splitlines()[-1])
    ours = first["total_s"]
    print(f"PM4Py on {smallest} spans (read dump, event log, DFG + inductive miner): {ref['pm4py_s']} s; "
          f"choreoscope end to end {ours} s = {ours / ref['pm4py_s']:.2f}x PM4Py")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--keep", type=Path, help="keep the dumps and stores in this directory")
    parser.add_argument("--on-disk", action="store_true",
                        help="dump mode: load into a store file and analyse it (`load` then `analyze STORE`)")
    parser.add_argument("--store", action="store_true", help="benchmark the pipeline on synthetic stores")
    parser.add_argument("--pm4py-python", help="an interpreter with pm4py installed, for the reference run")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--one-dump", type=Path, help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.workdir)))
        return 0
    if args.one_dump:
        print(json.dumps(run_dump(args.one_dump, args.workdir, args.on_disk)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        if not args.store:
            return main_dump(args, workdir)
        print(f"{'spans':>9} {'instances':>9} {'analysis s':>10} {'spans/s':>9} {'peak RSS MB':>11}  stages (s)")
        for size in args.sizes:
            r = _run_child("--one", str(size), "--workdir", str(workdir))
            if r is None:
                return 1
            stages = ", ".join(f"{k} {v}" for k, v in r["stages_s"].items())
            print(f"{r['spans']:>9} {r['instances']:>9} {r['analysis_s']:>10} {r['spans_per_s']:>9} "
                  f"{r['peak_rss_mb']:>11}  {stages}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
