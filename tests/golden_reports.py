"""Golden JSON reports: what `analyze` reports on the samples (with their intended workflows), on
every real dump in ../shared/real_traces and on small bench sets (bench/gen_dump.py, seeded: the
shapes the speed benchmarks run at 1M spans, so a speed-up is shown to change no report), frozen so a restructuring can be shown not to change a
single finding, edge or count (floats compared to 6 significant digits: DuckDB's parallel
aggregates differ in the last bits between runs).

    .venv/bin/python -m tests.golden_reports --update    # after a change that is meant to alter reports

Review `git diff tests/golden_reports/` before committing an update: every changed line is a change
users will see.
"""

from __future__ import annotations

import argparse
import atexit
import importlib.util
import json
import shutil
import tempfile
from functools import cache
from pathlib import Path

from choreoscope.analysis.analyze_cmd import analyze
from choreoscope.sample_traces.generate import DUMPS_DIR, scenario_dir
from tests.paths import REAL_TRACES, REPO

GOLDEN_DIR = REPO / "tests" / "golden_reports"


def sample_cases() -> dict[str, tuple[list[str], list[str]]]:
    return {
        dump.name.split(".")[0]: ([str(dump)], [str(scenario_dir(dump.name.split(".")[0]) / "intended.yaml")])
        for dump in sorted(DUMPS_DIR.glob("*.otlp.jsonl"))
    }


def real_cases() -> dict[str, tuple[list[str], list[str]]]:
    if not REAL_TRACES.is_dir():
        return {}
    return {
        f"real-{path.parent.name}-{path.stem}": ([str(path)], [])
        for path in sorted(REAL_TRACES.rglob("*.json")) if not path.name.endswith(".manifest.json")
    }


# (spans, seed) of the bench sets: 20k spans reach all 40 flow shapes and every convention the
# generator mixes, in a report of ~0.8 MB (the report's size grows with the shapes, not the spans).
BENCH_SETS = ((20_000, 7),)


def bench_cases() -> dict[str, tuple[list[str], list[str]]]:
    return {f"bench-{spans}-seed{seed}": ([str(_bench_dump(spans, seed))], []) for spans, seed in BENCH_SETS}


@cache
def _bench_dump(spans: int, seed: int) -> Path:
    """The bench set written once per test process (a few MB, under a second), removed at its exit."""
    spec = importlib.util.spec_from_file_location("gen_dump", REPO / "bench" / "gen_dump.py")
    gen_dump = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen_dump)
    folder = tempfile.mkdtemp(prefix="choreoscope-bench-set-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = Path(folder) / f"bench-{spans}-seed{seed}.jsonl"
    gen_dump.generate(str(path), spans, seed)
    return path


def all_cases() -> dict[str, tuple[list[str], list[str]]]:
    return {**sample_cases(), **real_cases(), **bench_cases()}


def normalised(value):
    """The report with floats at 6 significant digits (and -0.0 as 0.0), and paths inside the
    checkout (intended documents named in evidence) relative to it, as `<repo>/...`."""
    if isinstance(value, str):
        return value.replace(str(REPO), "<repo>")
    if isinstance(value, float):
        return 0.0 if value == 0 else float(f"{value:.6g}")
    if isinstance(value, dict):
        return {k: normalised(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalised(v) for v in value]
    return value


def report_for(inputs: list[str], intended: list[str]) -> dict:
    return normalised(json.loads(json.dumps(analyze(inputs, ":memory:", intended), default=str)))


def golden(name: str) -> dict:
    return json.loads((GOLDEN_DIR / f"{name}.json").read_text())


def update() -> None:
    GOLDEN_DIR.mkdir(exist_ok=True)
    for name, (inputs, intended) in all_cases().items():
        (GOLDEN_DIR / f"{name}.json").write_text(json.dumps(report_for(inputs, intended), indent=1, sort_keys=True)
                                                 + "\n")
        print("wrote", name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", action="store_true", help="rewrite the golden reports")
    if parser.parse_args().update:
        update()
