"""Differential run of the two engines on a generated dump: same JSON report, seconds per stage.

    python bench/spark_engine.py [--spans 100000 [1000000 ...]] [--workdir DIR] [--master local[2]]
                                 [--spark-input parquet|store|both]

For each size: `bench/gen_dump.py` writes an OTLP/JSON-lines dump (seed 7; kept in --workdir and
reused), which is loaded into a new store. The DuckDB engine runs the pipeline on it and builds the
report. The Spark engine (`analyze --engine spark`, one SparkSession on --master for the whole run,
started and warmed up on a sample before any timing) then runs on
- `parquet` (default): the store exported with `choreoscope export parquet` (the export not timed:
  it stands for the lake that is already there), analysed in place as `analyze LAKE --engine spark`
  does: Spark reads the Parquet, the DuckDB stages read views over it;
- `store`: the loaded store, as `analyze dump.jsonl --engine spark` does (the store exported to
  Parquet for Spark, which is timed as `spark: input`).
Each Spark report must equal the DuckDB one (floats at 6 significant digits, as the tests compare:
`tests/golden_reports.normalised`); the script exits 1 if not. Printed: seconds per stage for DuckDB
and Spark side by side, the totals, and the load average (1 min) before and after each run: the
figures mean little without it on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _nan_free(value):
    """The report with NaN as text (NaN != NaN) and floats as the tests normalise them."""
    from tests.golden_reports import normalised

    def walk(v):
        if isinstance(v, float) and math.isnan(v):
            return "NaN"
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        return v

    return walk(normalised(json.loads(json.dumps(value, default=str))))


def _dump(workdir: Path, spans: int) -> Path:
    path = workdir / f"dump-{spans}.jsonl"
    if not path.exists():
        subprocess.run([sys.executable, str(ROOT / "bench" / "gen_dump.py"), str(path), "--spans", str(spans),
                        "--seed", "7"], check=True)
    return path


def _run(con, engine) -> tuple[dict, dict, tuple[float, float]]:
    from choreoscope.analysis.pipeline import run_pipeline
    from choreoscope.analysis.report import build_report, validate_report

    before = os.getloadavg()[0]
    ctx = run_pipeline(con, engine=engine)
    started = time.perf_counter()
    report = build_report(con)
    validate_report(report)
    ctx.timings["report"] = time.perf_counter() - started
    return report, dict(ctx.timings), (before, os.getloadavg()[0])


def run_size(spans: int, workdir: Path, engine, inputs: list[str]) -> bool:
    import duckdb

    from choreoscope.analysis.engine_spark import SPARK_STAGES
    from choreoscope.analysis.open_inputs import open_lake, parquet_lake
    from choreoscope.analysis.parquet_export import export_parquet
    from choreoscope.analysis.pipeline import STAGES
    from choreoscope.collector import store
    from choreoscope.collector.loaders import load_paths

    dump = _dump(workdir, spans)
    db = workdir / f"dump-{spans}.duckdb"
    db.unlink(missing_ok=True)
    con = store.connect(str(db))
    started = time.perf_counter()
    load_paths(con, [str(dump)])
    load_s = time.perf_counter() - started
    n = store.scalar(con, "SELECT count(*) FROM spans")
    print(f"\n{n} spans ({dump.name}), loaded into the store in {load_s:.1f} s")

    expected, duck, duck_load = _run(con, None)
    runs = {}
    if "parquet" in inputs:
        lake_dir = workdir / f"lake-{spans}"
        export_parquet(con, str(lake_dir))
        lake = parquet_lake([str(lake_dir)])
        assert lake is not None, "the export is not read in place"
        opened = open_lake(lake)
        try:
            runs["Spark, parquet"] = _run(opened.con, replace(engine, lake=lake))
        finally:
            opened.con.close()
    if "store" in inputs:
        runs["Spark, store"] = _run(con, engine)
    con.close()
    del duckdb

    names = [s.name for s in STAGES]
    rows = ["spark: input"] + names + ["spark: output", "report"]
    header = ["stage", "DuckDB"] + list(runs)
    print(" | ".join(f"{h:>16}" for h in header))

    def cell(timings, name):
        return f"{timings[name]:16.2f}" if name in timings else f"{'':>16}"

    for name in rows:
        if name not in duck and not any(name in t for _, t, _ in runs.values()):
            continue
        print(" | ".join([f"{name:>16}", cell(duck, name)] + [cell(t, name) for _, t, _ in runs.values()]))

    def total(timings, only=None):
        return sum(v for k, v in timings.items() if not k.startswith("detector ")
                   and (only is None or k in only or k.startswith("spark: ")))

    print(" | ".join([f"{'Spark stages':>16}", f"{total(duck, SPARK_STAGES):16.2f}"]
                     + [f"{total(t, SPARK_STAGES):16.2f}" for _, t, _ in runs.values()]))
    print(" | ".join([f"{'all + report':>16}", f"{total(duck):16.2f}"]
                     + [f"{total(t):16.2f}" for _, t, _ in runs.values()]))
    print(" | ".join([f"{'load average':>16}", f"{duck_load[0]:7.1f}->{duck_load[1]:<7.1f} "]
                     + [f"{la[0]:7.1f}->{la[1]:<7.1f} " for _, _, la in runs.values()]))
    ok = True
    want = _nan_free(expected)
    for label, (report, _, _) in runs.items():
        equal = _nan_free(report) == want
        ok &= equal
        print(f"{label}: report {'equal to' if equal else 'DIFFERENT from'} DuckDB's")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, nargs="+", default=[100_000])
    parser.add_argument("--workdir", type=Path, help="keep dumps, stores and lakes here (default: a temp dir)")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--spark-input", choices=("parquet", "store", "both"), default="parquet")
    parser.add_argument("--no-warm-up", action="store_true", help="time the first Spark run too")
    args = parser.parse_args()

    from choreoscope.analysis.engine_spark import SparkEngine, spark_session

    inputs = ["parquet", "store"] if args.spark_input == "both" else [args.spark_input]
    engine = SparkEngine(master=args.master, spark=spark_session(args.master))
    if not args.no_warm_up:  # the JVM compiles Spark's code paths on the first run: not timed
        from choreoscope.analysis.analyze_cmd import analyze
        from choreoscope.sample_traces.generate import DUMPS_DIR

        started = time.perf_counter()
        analyze([str(DUMPS_DIR / "event_router.otlp.jsonl")], ":memory:", engine=engine)
        print(f"warm-up (event_router sample on Spark, not timed below): {time.perf_counter() - started:.1f} s")
    with tempfile.TemporaryDirectory(prefix="choreoscope-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        results = [run_size(n, workdir, engine, inputs) for n in args.spans]  # every size, even after a failure
        ok = all(results)
    engine.spark.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
