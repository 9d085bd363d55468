"""Reconstruction against the sample scenarios' ground truth: edges, instances, patterns."""

from __future__ import annotations

import pytest

from choreoscope.analysis.report import validate_report
from tests.analysis_fixtures import SCENARIOS, scenario_report, service_edges, truth


@pytest.fixture(scope="session")
def tmp_root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("scenarios"))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_true_edge_recovered_and_nothing_else(scenario, tmp_root):
    report = scenario_report(scenario, tmp_root)
    expected = {
        (e["source"], e["target"], e["via"], e.get("event") if e["via"] == "event" else None)
        for e in truth(scenario)["edges"]
    }
    got = service_edges(report)
    assert got - expected == set(), f"spurious edges in {scenario}"
    assert expected - got == set(), f"edges not recovered in {scenario}"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_instance_counts_and_patterns(scenario, tmp_root):
    report = scenario_report(scenario, tmp_root)
    validate_report(report)
    by_entry = {(w["entry"]["service"], w["entry"]["operation"]): w for w in report["workflows"]}
    expected = truth(scenario)["workflows"]
    assert len(report["workflows"]) == len(expected)
    for wf in expected:
        got = by_entry[(wf["entry"]["service"], wf["entry"]["operation"])]
        assert got["instances"] == wf["instances"], wf["entry"]
        assert got["pattern"] == wf["pattern"], (wf["entry"], got["pattern_evidence"])
    assert report["summary"]["workflow_instances"] == sum(w["instances"] for w in expected)


def test_inferred_edges_are_marked(tmp_root):
    report = scenario_report("hybrid_billing", tmp_root)
    inferred = {
        (e["event"], tuple(e["evidence"]))
        for wf in report["workflows"] for e in wf["edges"] if e["inferred"]
    }
    assert ("invoice.issued", ("message_id",)) in inferred


def test_linked_batch_consumer_joins_its_producers_instance(tmp_root):
    report = scenario_report("ecommerce", tmp_root)
    orders = next(w for w in report["workflows"] if w["entry"]["operation"] == "POST /orders")
    link_edges = [e for e in orders["edges"] if "link" in e["evidence"]]
    assert link_edges and all(e["via"] == "event" for e in link_edges)
    assert report["summary"]["traces"] > report["summary"]["workflow_instances"]
