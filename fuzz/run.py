"""Fuzz one target for N inputs and save every new crasher as a regression input.

    .venv/bin/python fuzz/run.py otlp-json --inputs 100000            # atheris if installed
    .venv/bin/python fuzz/run.py loaders --inputs 100000 --engine random --seed 7

Engines: `atheris` (coverage-guided libFuzzer over the Python code, seeded with fuzz.targets.seeds),
`random` (a seeded structure-blind mutator, fuzz.targets.mutate, no coverage feedback) or
`structured` (the JSON/YAML seed documents with values replaced by arbitrary JSON values: reaches
the loaders' and readers' field handling, which byte mutations mostly stop short of).
A crash does not stop the run: each distinct one (exception type and the line it came from) is
written to tests/fuzz_crashers/<target>/<type>-<sha1>.bin, where tests/test_fuzz_crashers.py
replays it for ever. Prints inputs, distinct crashes and inputs per second, with the load average.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.setrecursionlimit(1000)  # the interpreter default, as the receiver runs with

from fuzz import targets as T


class Runner:
    def __init__(self, target: str, save: bool, limit: int, engine: str):
        self.name = target
        self.limit = limit
        self.engine = engine
        self.start = time.monotonic()
        self.fn = T.TARGETS[target]
        self.save = save
        self.inputs = 0
        self.crashes: dict[str, tuple[str, Path | None]] = {}

    def __call__(self, data: bytes) -> None:
        self.inputs += 1
        try:
            self.fn(data)
        except Exception as exc:  # noqa: BLE001 - a crash: record it and keep fuzzing
            self.record(data, exc)
        if self.inputs >= self.limit and self.engine == "atheris":
            # libFuzzer ends the process with exit(), past Python's atexit: report and leave here
            self.report()
            os._exit(1 if self.crashes else 0)

    def report(self) -> None:
        took = time.monotonic() - self.start
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"\ntarget {self.name}: engine {self.engine}, {self.inputs:,} inputs, "
              f"{len(self.crashes)} distinct crashes, {took:.0f} s ({self.inputs / max(took, 1e-9):,.0f} "
              f"inputs/s), load average {load}", flush=True)
        for signature, (message, saved) in self.crashes.items():
            print(f"  {signature}: {message}" + (f" [{saved.name}]" if saved else ""), flush=True)

    def record(self, data: bytes, exc: BaseException) -> None:
        frames = traceback.extract_tb(exc.__traceback__)
        where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
        signature = f"{type(exc).__name__}@{where}"
        if signature in self.crashes:
            return
        saved = None
        if self.save:
            folder = T.CRASHERS / self.name
            folder.mkdir(parents=True, exist_ok=True)
            saved = folder / f"{type(exc).__name__}-{hashlib.sha1(data).hexdigest()[:12]}.bin"
            saved.write_bytes(data)
        self.crashes[signature] = (f"{type(exc).__name__}: {str(exc)[:160]}", saved)
        print(f"CRASH {signature} ({len(data)} bytes): {str(exc)[:160]}"
              + (f" -> {saved.relative_to(T.REPO)}" if saved else ""), flush=True)


def run_random(runner: Runner, n: int, seed: int) -> None:
    rng = random.Random(seed)
    pool = list(T.seeds(runner.name))
    kept = len(pool)  # the seeds stay; mutants take the other places in turn
    for data in pool:
        runner(data)
    while runner.inputs < n:
        data = rng.choice(pool)
        for _ in range(rng.randrange(1, 4)):
            data = T.mutate(data, rng)
        runner(data)
        if len(data) < 1 << 16:
            if len(pool) < 512:
                pool.append(data)
            else:
                pool[rng.randrange(kept, 512)] = data


def run_structured(runner: Runner, n: int, seed: int) -> None:
    """Seed documents (JSON, or YAML for `intended`) with 1-3 values replaced by arbitrary JSON."""
    import json

    import yaml

    rng = random.Random(seed)
    intended = runner.name == "intended"
    docs = []
    for data in T.seeds(runner.name):
        try:
            docs.append(yaml.safe_load(data) if intended else json.loads(data))
        except ValueError:
            continue  # protobuf or gzip seeds
    while runner.inputs < n:
        doc = json.loads(json.dumps(rng.choice(docs)))
        for _ in range(rng.randrange(1, 4)):
            doc = T.replace_value(doc, rng)
        text = yaml.safe_dump(doc, allow_unicode=True) if intended else json.dumps(doc)
        runner(text.encode())


def run_atheris(runner: Runner, n: int, seed: int) -> None:
    import atheris

    corpus = tempfile.mkdtemp(prefix=f"choreoscope-fuzz-{runner.name}-")
    for i, data in enumerate(T.seeds(runner.name)):
        Path(corpus, f"seed-{i}").write_bytes(data)
    with atheris.instrument_imports(include=["choreoscope"]):
        import choreoscope.analysis.intended
        import choreoscope.collector.export_decode
        import choreoscope.collector.loaders  # noqa: F401
    max_len = max(4096, 2 * max(len(s) for s in T.seeds(runner.name)))
    # the runner stops after n inputs; -timeout and -rss_limit_mb catch hangs and blowups
    args = [sys.argv[0], f"-seed={seed}", f"-max_len={max_len}", "-timeout=20",
            "-rss_limit_mb=3072", "-print_final_stats=1", corpus]
    atheris.Setup(args, runner)
    try:
        atheris.Fuzz()
    except SystemExit:
        pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", choices=sorted(T.TARGETS))
    p.add_argument("--inputs", type=int, default=100_000)
    p.add_argument("--engine", choices=("auto", "atheris", "random", "structured"), default="auto")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-save", action="store_true", help="do not write crashers to tests/fuzz_crashers/")
    args = p.parse_args(argv)
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401
            engine = "atheris"
        except ImportError:
            engine = "random"
    runner = Runner(args.target, save=not args.no_save, limit=args.inputs, engine=engine)
    if engine == "atheris":
        run_atheris(runner, args.inputs, args.seed)
    else:
        (run_structured if engine == "structured" else run_random)(runner, args.inputs, args.seed)
        runner.report()
    return 1 if runner.crashes else 0


if __name__ == "__main__":
    sys.exit(main())
