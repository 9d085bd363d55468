"""The reports on the samples and the real dumps equal the frozen golden reports (tests/golden_reports.py):
a restructuring changes no finding, edge or count. A change meant to alter reports updates them."""

from __future__ import annotations

import pytest

from tests.golden_reports import GOLDEN_DIR, golden, real_cases, report_for, sample_cases

CASES = {**sample_cases(), **real_cases()}


def test_every_golden_report_has_its_input():
    """A golden report whose input vanished would silently stop being compared."""
    names = {p.stem for p in GOLDEN_DIR.glob("*.json")}
    expected = set(CASES) if real_cases() else set(sample_cases())
    assert names >= expected
    if real_cases():
        assert names == expected


@pytest.mark.parametrize("name", sorted(CASES))
def test_report_equals_the_golden_report(name):
    inputs, intended = CASES[name]
    assert report_for(inputs, intended) == golden(name)
