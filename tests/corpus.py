"""The evaluation corpus and how a report is scored against a truth file: the generated scenarios
(sample_traces/dumps, truth in sample_traces/scenarios/*/truth.yaml), the live captures of real
systems (sample_traces/captures/*/capture.otlp.jsonl.gz with their truth.yaml) and the scenarios
generated independently of the detectors (sample_traces/independent/*/dump.otlp.jsonl.gz, written
without reading analysis/). Used by
tests/test_corpus.py and bench/corpus_score.py.

A finding matches a truth entry on kind and services (as a set for event_cycle), and on event and
resource when the truth names them. A reported finding of a detector kind that matches no truth
entry is a false positive; one that matches a `must_not` entry is also a look-alike. Conformance
kinds are left out (no --intended here).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.paths import REPO

CONFORMANCE_KINDS = {"undeclared_edge", "missing_edge", "ordering_violation"}


def corpus(captures_only: bool = False) -> dict[str, tuple[Path, Path]]:
    """name -> (dump, truth.yaml); `captures_only`: the captures and independent scenarios, not
    the scenarios written with the detectors."""
    cases = {}
    if not captures_only:
        for dump in sorted((REPO / "sample_traces" / "dumps").glob("*.otlp.jsonl")):
            name = dump.name.split(".")[0]
            cases[name] = (dump, REPO / "sample_traces" / "scenarios" / name / "truth.yaml")
    for folder in sorted((REPO / "sample_traces" / "captures").iterdir()):
        if (folder / "truth.yaml").exists():
            cases[f"capture {folder.name}"] = (folder / "capture.otlp.jsonl.gz", folder / "truth.yaml")
    for folder in sorted((REPO / "sample_traces" / "independent").iterdir()):
        if (folder / "truth.yaml").exists():
            cases[f"independent {folder.name}"] = (folder / "dump.otlp.jsonl.gz", folder / "truth.yaml")
    return cases


def _services_views(finding: dict) -> list[list[str]]:
    """The services a truth entry may list for `finding`: its own, and for missing_compensation
    also [the step left undone, the service whose failure it followed] of each step its evidence
    names. Our truth files name the coordinator; the independent scenarios were written without
    reading the detectors, and their author named the two steps instead (the same fact)."""
    views = [finding["services"]]
    if finding["kind"] == "missing_compensation":
        views += [[s["target"], s["failed_target"]] for s in (finding.get("evidence") or {}).get("steps", [])
                  if s.get("failed_target")]
    return views


def matches(finding: dict, entry: dict) -> bool:
    if finding["kind"] != entry["kind"]:
        return False
    same = (set(finding["services"]) == set(entry["services"]) if finding["kind"] == "event_cycle"
            else entry["services"] in _services_views(finding))
    return same and all(finding.get(k) == entry[k] for k in ("event", "resource") if k in entry)


def f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0


@dataclass
class Scored:
    by_kind: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0, 0]))  # TP FP FN
    missed: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    lookalikes: list[str] = field(default_factory=list)

    @property
    def totals(self) -> tuple[int, int, int]:
        return tuple(sum(v[i] for v in self.by_kind.values()) for i in range(3))

    @property
    def f1(self) -> float:
        return f1(*self.totals)


def score(report: dict, truth_path: Path) -> Scored:
    truth = yaml.safe_load(truth_path.read_text())
    found = [f for f in report["findings"] if f["kind"] not in CONFORMANCE_KINDS]
    expected = truth.get("findings") or []
    out = Scored()
    for entry in expected:
        hit = any(matches(f, entry) for f in found)
        out.by_kind[entry["kind"]][0 if hit else 2] += 1
        if not hit:
            out.missed.append(f"{entry['kind']} {entry['services']} {entry.get('event') or entry.get('resource') or ''}")
    for f in found:
        if not any(matches(f, e) for e in expected):
            out.by_kind[f["kind"]][1] += 1
            line = f"{f['kind']} {f['services']} {f.get('event') or f.get('resource') or ''}"
            out.unexpected.append(line)
            if any(matches(f, e) for e in truth.get("must_not") or []):
                out.lookalikes.append(line)
    return out


def table(scores: dict[str, Scored]) -> str:
    total: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    lines = []
    for name, s in scores.items():
        tp, fp, fn = s.totals
        lines.append(f"{name:32} TP {tp:3} FP {fp:3} FN {fn:3}  F1 {s.f1:.2f}")
        for kind, counts in s.by_kind.items():
            for i in range(3):
                total[kind][i] += counts[i]
    lines.append(f"\n{'kind':24} {'TP':>4} {'FP':>4} {'FN':>4} {'precision':>9} {'recall':>7} {'F1':>5}")
    for kind, (tp, fp, fn) in sorted(total.items()):
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / (tp + fn) if tp + fn else 1.0
        lines.append(f"{kind:24} {tp:4} {fp:4} {fn:4} {precision:9.2f} {recall:7.2f} {f1(tp, fp, fn):5.2f}")
    return "\n".join(lines)
