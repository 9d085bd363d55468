"""Run the sample scenarios through the real OpenTelemetry SDK and write OTLP JSON dumps.

    python -m choreoscope.sample_traces.generate [--seed N] [--out DIR] [--scenario NAME]...

regenerates sample_traces/dumps/<scenario>.otlp.jsonl, byte-identical for the same seed.
"""

from __future__ import annotations

import argparse
import base64
import importlib
import json
import sys
from pathlib import Path

from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from choreoscope.sample_traces import SCENARIOS
from choreoscope.sample_traces.engine import DEFAULT_BASE_TIME_NS, Sim

HERE = Path(__file__).resolve().parent
DUMPS_DIR = HERE / "dumps"
SCENARIOS_DIR = HERE / "scenarios"
SPANS_PER_LINE = 300
_ID_KEYS = {"traceId", "spanId", "parentSpanId"}


def scenario_module(scenario: str):
    """The module of `scenario` (it has DEFAULT_INSTANCES, DEFAULT_CLOCK_OFFSETS_MS, run)."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    return importlib.import_module(f"choreoscope.sample_traces.scenarios.{scenario}")


def scenario_dir(scenario: str) -> Path:
    """Where `scenario`'s truth.yaml, intended.yaml and asyncapi/ live."""
    return SCENARIOS_DIR / scenario


def run_scenario(scenario: str, exporter: SpanExporter, seed: int = 7, instances: int | None = None,
                 clock_offsets_ms: dict[str, float] | None = None, base_time_ns: int | None = None) -> None:
    """Run `scenario` and export its spans into `exporter` (left open for the caller to shut down).

    clock_offsets_ms: None uses the scenario's default skews; a dict replaces them entirely.
    base_time_ns: None uses a fixed base time (2025-01-15T09:00Z); pass now for live traffic.
    In-memory exporters get spans synchronously in end order; others through a batch processor.
    """
    module = scenario_module(scenario)
    offsets = module.DEFAULT_CLOCK_OFFSETS_MS if clock_offsets_ms is None else clock_offsets_ms
    sim = Sim(
        exporter, seed=seed,
        base_time_ns=DEFAULT_BASE_TIME_NS if base_time_ns is None else base_time_ns,
        clock_offsets_ms=offsets, namespace=module.NAMESPACE,
        batch=not isinstance(exporter, InMemorySpanExporter),
    )
    module.run(sim, module.DEFAULT_INSTANCES if instances is None else instances)
    sim.finish()


def generate_spans(scenario: str, seed: int = 7, instances: int | None = None,
                   clock_offsets_ms: dict[str, float] | None = None,
                   base_time_ns: int | None = None) -> list[ReadableSpan]:
    """The spans of one scenario run, in the order they ended."""
    exporter = InMemorySpanExporter()
    run_scenario(scenario, exporter, seed=seed, instances=instances,
                 clock_offsets_ms=clock_offsets_ms, base_time_ns=base_time_ns)
    spans = list(exporter.get_finished_spans())
    exporter.shutdown()
    return spans


def ids_to_hex(node):
    """protobuf's JSON mapping writes bytes as base64; OTLP JSON wants trace/span ids as hex.
    Converts in place and returns `node`."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_KEYS and isinstance(value, str):
                node[key] = base64.b64decode(value).hex()
            else:
                ids_to_hex(value)
    elif isinstance(node, list):
        for item in node:
            ids_to_hex(item)
    return node


def otlp_json_lines(spans: list[ReadableSpan], spans_per_line: int = SPANS_PER_LINE) -> list[str]:
    """OTLP JSON lines as the Collector's file exporter writes them: one TracesData per line."""
    lines = []
    for i in range(0, len(spans), spans_per_line):
        request = encode_spans(spans[i:i + spans_per_line])
        doc = json_format.MessageToDict(request, use_integers_for_enums=True)
        ids_to_hex(doc)
        lines.append(json.dumps({"resourceSpans": doc.get("resourceSpans", [])}, separators=(",", ":")))
    return lines


def write_otlp_jsonl(spans: list[ReadableSpan], path: str | Path) -> Path:
    """Write `spans` as an OTLP JSON lines dump at `path`; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        out.writelines(line + "\n" for line in otlp_json_lines(spans))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m choreoscope.sample_traces.generate", description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=7, help="random seed (default: 7)")
    parser.add_argument("--out", default=str(DUMPS_DIR), help=f"output directory (default: {DUMPS_DIR})")
    parser.add_argument("--scenario", action="append", choices=SCENARIOS,
                        help="only this scenario (repeatable; default: all)")
    args = parser.parse_args(argv)
    for scenario in args.scenario or SCENARIOS:
        spans = generate_spans(scenario, seed=args.seed)
        path = write_otlp_jsonl(spans, Path(args.out) / f"{scenario}.otlp.jsonl")
        print(f"{path}: {len(spans)} spans, {path.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
