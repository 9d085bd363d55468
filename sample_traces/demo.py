"""`choreoscope demo`: see choreoscope find real problems in the bundled sample systems.

Online (default): loads the sample dumps into the store, starts the OTLP receiver, the live
analysis and the dashboard in one process (as `serve` does), and keeps streaming fresh scenario
traffic through the real OpenTelemetry OTLP exporter so the dashboard moves.
Offline (`--offline`): loads the samples into a temporary store, analyses them against the
scenarios' intended workflows and writes the report.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time

from choreoscope.sample_traces import SCENARIOS
from choreoscope.sample_traces.generate import DUMPS_DIR, run_scenario, scenario_dir


def sample_dumps() -> list[str]:
    return [str(DUMPS_DIR / f"{s}.otlp.jsonl") for s in SCENARIOS]


def intended_documents() -> list[str]:
    """The scenarios' native intended-workflow declarations (used when conformance is available)."""
    return [str(scenario_dir(s) / "intended.yaml") for s in SCENARIOS if (scenario_dir(s) / "intended.yaml").exists()]


FIRST_LOOK = """\
What to look at first:
  1. Findings: shipping-service implicitly waits for inventory-service (it reads the reservations
     table inventory writes, and fails and retries when it runs first) — nothing declares that order.
  2. Workflow "POST /documents (upload-api)": workflow-router has become an orchestrator hidden in
     the event flow.
  3. Workflow "POST /loan-applications": a saga whose failed instances sometimes skip a compensation,
     and an orchestrator that knows too much about credit-service.
  4. notification_fanout: honest choreography — it should raise nothing.
"""


class TrafficStreamer:
    """Replays the scenarios with current timestamps through a real OTLP/gRPC exporter."""

    def __init__(self, endpoint: str, every_s: float = 3.0, instances: int = 2) -> None:
        self.endpoint = endpoint
        self.every_s = every_s
        self.instances = instances
        self.sent_runs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="choreoscope-demo-traffic", daemon=True)

    def start(self) -> TrafficStreamer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=self.endpoint, insecure=True)
        seeds = itertools.count(time.time_ns() // 1000)  # fresh ids on every demo run
        try:
            for scenario in itertools.cycle(SCENARIOS):
                if self._stop.wait(self.every_s):
                    break
                run_scenario(scenario, exporter, seed=next(seeds), instances=self.instances,
                             base_time_ns=time.time_ns())
                self.sent_runs += 1
        finally:
            exporter.shutdown()


def run_offline(args) -> int:
    from choreoscope.analysis.analyze_cmd import RENDERERS, analyze, write_output

    intended = intended_documents() if _conformance_available() else []
    report = analyze(sample_dumps(), args.db, intended)
    write_output(RENDERERS[args.format](report), args.out)
    counts = {}
    for f in report["findings"]:
        counts[f["kind"]] = counts.get(f["kind"], 0) + 1
    print(f"{report['summary']['spans']} spans, {len(report['workflows'])} workflows, "
          f"{len(report['findings'])} findings: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
          file=sys.stderr)
    return 0


def _conformance_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("choreoscope.analysis.conformance") is not None


def run(args) -> int:
    if args.offline:
        return run_offline(args)
    from choreoscope.collector import serve

    if not getattr(args, "intended", None) and _conformance_available():
        args.intended = intended_documents()
    args.analyze_every = getattr(args, "analyze_every", 5.0) or 5.0
    args.no_dashboard = False

    def preload(con) -> None:
        from choreoscope.collector.loaders import load_paths

        result = load_paths(con, sample_dumps())
        print(f"loaded the sample scenarios: {result.spans_loaded} spans "
              f"({result.duplicates_skipped} already stored)", flush=True)

    streamer: list[TrafficStreamer] = []

    def started(receiver) -> None:
        streamer.append(TrafficStreamer(receiver.grpc_address).start())
        print(f"streaming fresh scenario traffic to {receiver.grpc_address} through the OTLP exporter",
              flush=True)
        print(FIRST_LOOK, flush=True)

    def stopping() -> None:
        for s in streamer:
            s.stop()

    return serve.run(args, preload=preload, on_started=started, on_stopping=stopping)

