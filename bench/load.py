"""Benchmark loading a trace dump into a new store: wall time, CPU time and spans/s.

    python bench/load.py DUMP [DUMP ...] [--workers N] [--repeat 3] [--reload]

Each run loads the dump into a fresh store file (as `choreoscope load` does) and prints the wall
seconds, the CPU seconds of this process and of its parse workers (from /proc: they are forked by
a fork server that outlives the load; its own start-up is not counted), spans/s, and the load average:
on a shared machine the wall time moves with the other processes, the CPU seconds much less, so
compare runs of one invocation. `--reload` also loads the dump a second time into the same store
(every span a duplicate: the checked insert's cost). The best of `--repeat` runs is shown last.
Generate a dump with `python bench/gen_dump.py OUT.jsonl --spans 100000`.
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
            "errors": len(result.errors)}


def _show(label: str, r: dict) -> None:
    n = r["spans"] or r["duplicates"]
    print(f"{label:>10}: {r['wall_s']:6.2f} s wall  {n / r['wall_s']:>9,.0f} spans/s  cpu main "
          f"{r['cpu_main_s']:5.2f} s + workers {r['cpu_workers_s']:5.2f} s  ({r['spans']:,} stored, "
          f"{r['duplicates']:,} duplicates, {r['errors']} errors)  load avg "
          f"{os.getloadavg()[0]:.1f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dumps", nargs="+")
    ap.add_argument("--workers", type=int, default=None, help="parse processes (default: load_paths's choice)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--reload", action="store_true", help="also load each dump again into the same store")
    args = ap.parse_args(argv)
    _count_worker_cpu()
    for dump in args.dumps:
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
