"""The reports on the samples, the real dumps and the bench sets equal the frozen golden reports (tests/golden_reports.py):
a restructuring changes no finding, edge or count. A change meant to alter reports updates them."""

from __future__ import annotations

import pytest

from tests.golden_reports import (
    GOLDEN_DIR,
    all_cases,
    bench_cases,
    golden,
    real_cases,
    report_for,
    sample_cases,
)

CASES = all_cases()


def test_every_golden_report_has_its_input():
    """A golden report whose input vanished would silently stop being compared."""
    names = {p.stem for p in GOLDEN_DIR.glob("*.json")}
    expected = set(CASES) if real_cases() else {*sample_cases(), *bench_cases()}
    assert names >= expected
    if real_cases():
        assert names == expected


@pytest.mark.parametrize("name", sorted(CASES))
def test_report_equals_the_golden_report(name):
    inputs, intended = CASES[name]
    assert report_for(inputs, intended) == golden(name)
