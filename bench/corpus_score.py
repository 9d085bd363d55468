"""Precision, recall and F1 per finding kind over the corpus: the generated scenarios
(sample_traces/dumps, truth in sample_traces/scenarios/*/truth.yaml) and the live captures
(sample_traces/captures/*/capture.otlp.jsonl.gz with their truth.yaml), plus the look-alikes
(`must_not`) reported.

    .venv/bin/python bench/corpus_score.py [--captures-only]

A finding matches a truth entry on kind and services (as a set for event_cycle), and on event and
resource when the truth names them. Every reported finding of a detector kind that matches no
truth entry is a false positive; conformance kinds are left out (no --intended here).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import yaml

from choreoscope.analysis.analyze_cmd import analyze

REPO = Path(__file__).resolve().parents[1]
CONFORMANCE_KINDS = {"undeclared_edge", "missing_edge", "ordering_violation"}


def corpus(captures_only: bool) -> dict[str, tuple[Path, Path]]:
    cases = {}
    if not captures_only:
        for dump in sorted((REPO / "sample_traces" / "dumps").glob("*.otlp.jsonl")):
            name = dump.name.split(".")[0]
            cases[name] = (dump, REPO / "sample_traces" / "scenarios" / name / "truth.yaml")
    for folder in sorted((REPO / "sample_traces" / "captures").iterdir()):
        if (folder / "truth.yaml").exists():
            cases[f"capture {folder.name}"] = (folder / "capture.otlp.jsonl.gz", folder / "truth.yaml")
    return cases


def matches(finding: dict, entry: dict) -> bool:
    if finding["kind"] != entry["kind"]:
        return False
    same = (set(finding["services"]) == set(entry["services"]) if finding["kind"] == "event_cycle"
            else finding["services"] == entry["services"])
    return same and all(finding.get(k) == entry[k] for k in ("event", "resource") if k in entry)


def f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captures-only", action="store_true")
    args = parser.parse_args()
    total: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    lookalikes: list[str] = []
    for name, (dump, truth_path) in corpus(args.captures_only).items():
        truth = yaml.safe_load(truth_path.read_text())
        found = [f for f in analyze([str(dump)], ":memory:")["findings"] if f["kind"] not in CONFORMANCE_KINDS]
        expected = truth.get("findings") or []
        per: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        for entry in expected:
            per[entry["kind"]][0 if any(matches(f, entry) for f in found) else 2] += 1
        for f in found:
            if not any(matches(f, e) for e in expected):
                per[f["kind"]][1] += 1
                if any(matches(f, e) for e in truth.get("must_not") or []):
                    lookalikes.append(f"{name}: {f['kind']} {f['services']} {f.get('event') or ''}")
        tp, fp, fn = (sum(v[i] for v in per.values()) for i in range(3))
        print(f"{name:32} TP {tp:3} FP {fp:3} FN {fn:3}  F1 {f1(tp, fp, fn):.2f}")
        for kind, counts in per.items():
            for i in range(3):
                total[kind][i] += counts[i]
    print(f"\n{'kind':24} {'TP':>4} {'FP':>4} {'FN':>4} {'precision':>9} {'recall':>7} {'F1':>5}")
    for kind, (tp, fp, fn) in sorted(total.items()):
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / (tp + fn) if tp + fn else 1.0
        print(f"{kind:24} {tp:4} {fp:4} {fn:4} {precision:9.2f} {recall:7.2f} {f1(tp, fp, fn):5.2f}")
    print(f"\nlook-alikes reported: {len(lookalikes)}")
    for line in lookalikes:
        print("  " + line)


if __name__ == "__main__":
    main()
