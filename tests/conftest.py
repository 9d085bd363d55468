"""Session fixtures shared by the test modules: each sample scenario analysed once, as committed,
with an extra clock offset on one service, and with another seed (see tests/detector_fixtures.py)."""

from __future__ import annotations

import pytest

from choreoscope.sample_traces import SCENARIOS
from choreoscope.sample_traces.generate import DUMPS_DIR, generate_spans, scenario_module, write_otlp_jsonl
from tests.detector_fixtures import EXTRA_OFFSETS_MS, OTHER_SEED, Analysed, analyse_paths


@pytest.fixture(scope="session")
def analysed(tmp_path_factory) -> dict[str, Analysed]:
    """Each scenario's committed dump, analysed."""
    root = tmp_path_factory.mktemp("detector_stores")
    return {name: analyse_paths(root / f"{name}.duckdb", [DUMPS_DIR / f"{name}.otlp.jsonl"], name)
            for name in SCENARIOS}


@pytest.fixture(scope="session")
def analysed_skewed(tmp_path_factory) -> dict[str, Analysed]:
    """Each scenario regenerated with EXTRA_OFFSETS_MS added to its own skews, analysed."""
    root = tmp_path_factory.mktemp("detector_skewed")
    out = {}
    for name in SCENARIOS:
        offsets = dict(scenario_module(name).DEFAULT_CLOCK_OFFSETS_MS)
        for service, extra in EXTRA_OFFSETS_MS[name].items():
            offsets[service] = offsets.get(service, 0.0) + extra
        dump = write_otlp_jsonl(generate_spans(name, clock_offsets_ms=offsets), root / f"{name}.otlp.jsonl")
        out[name] = analyse_paths(root / f"{name}.duckdb", [dump], name)
    return out


@pytest.fixture(scope="session")
def analysed_other_seed(tmp_path_factory) -> dict[str, Analysed]:
    """Each scenario regenerated with another seed (other ids, timings and random choices)."""
    root = tmp_path_factory.mktemp("detector_seed")
    out = {}
    for name in SCENARIOS:
        dump = write_otlp_jsonl(generate_spans(name, seed=OTHER_SEED), root / f"{name}.otlp.jsonl")
        out[name] = analyse_paths(root / f"{name}.duckdb", [dump], name)
    return out
