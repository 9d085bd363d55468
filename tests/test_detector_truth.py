"""Truth-driven precision and recall of the detectors over every sample scenario, as committed and
with an extra clock offset on one service, and with another seed: every truth finding reported, no look-alike reported,
nothing else reported, and the findings unchanged by the clock offset."""

from __future__ import annotations

import pytest

from choreoscope.sample_traces import SCENARIOS
from tests.detector_fixtures import OTHER_SEED, Score, score

MIN_PRECISION = 0.9
MIN_RECALL = 0.9


def _table(title: str, by_kind: dict[str, Score]) -> str:
    lines = [title, f"  {'kind':24} {'TP':>3} {'FP':>3} {'FN':>3} {'precision':>9} {'recall':>7}"]
    total = Score()
    for kind, s in sorted(by_kind.items()):
        lines.append(f"  {kind:24} {s.true_positives:3} {s.false_positives:3} {s.false_negatives:3} "
                     f"{s.precision:9.2f} {s.recall:7.2f}")
        total.true_positives += s.true_positives
        total.false_positives += s.false_positives
        total.false_negatives += s.false_negatives
    lines.append(f"  {'overall':24} {total.true_positives:3} {total.false_positives:3} "
                 f"{total.false_negatives:3} {total.precision:9.2f} {total.recall:7.2f}")
    return "\n".join(lines)


def _overall(by_kind: dict[str, Score]) -> Score:
    total = Score()
    for s in by_kind.values():
        total.true_positives += s.true_positives
        total.false_positives += s.false_positives
        total.false_negatives += s.false_negatives
    return total


VARIANTS = ["committed dumps", "clock offset on one service", f"seed {OTHER_SEED}"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_precision_and_recall_against_truth(variant, request):
    """The truth names what each scenario *is*, not its counts, so it holds for any seed."""
    fixture = {VARIANTS[0]: "analysed", VARIANTS[1]: "analysed_skewed", VARIANTS[2]: "analysed_other_seed"}
    results = request.getfixturevalue(fixture[variant])
    by_kind: dict[str, Score] = {}
    missed, unexpected, forbidden = [], [], []
    for name in SCENARIOS:
        assert not results[name].errors, results[name].errors
        m, u, f = score(results[name], by_kind)
        missed += m
        unexpected += u
        forbidden += f
    print("\n" + _table(f"detector precision/recall, {variant}:", by_kind))
    for line in missed:
        print("  missed:", line)
    for line in unexpected:
        print("  unexpected:", line)
    assert not forbidden, f"look-alikes the truth says must not be reported: {forbidden}"
    total = _overall(by_kind)
    assert total.precision >= MIN_PRECISION, f"precision {total.precision:.2f}; unexpected: {unexpected}"
    assert total.recall >= MIN_RECALL, f"recall {total.recall:.2f}; missed: {missed}"


@pytest.mark.parametrize("name", SCENARIOS)
def test_a_clock_offset_on_one_service_does_not_change_the_findings(name, analysed, analysed_skewed):
    def keys(result):
        return sorted((f.kind, tuple(f.services), f.event, f.resource) for f in result.findings)

    assert keys(analysed_skewed[name]) == keys(analysed[name])


def test_every_must_not_in_the_truth_names_a_detector_kind():
    """A must_not with a misspelt kind would stay silent for free."""
    from choreoscope.analysis.detectors import DETECTORS
    from tests.detector_fixtures import truth

    kinds = {"dead_event", "orphan_event", "schema_drift"} | {name for name, _ in DETECTORS}
    for name in SCENARIOS:
        t = truth(name)
        for entry in (t.get("must_not") or []) + (t.get("findings") or []):
            assert entry["kind"] in kinds, f"{name}: {entry}"
