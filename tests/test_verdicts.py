"""Verdicts per workflow: on the samples against their truth, and on a small SDK store."""

from __future__ import annotations

import pytest

from choreoscope.analysis import verdicts
from choreoscope.analysis.pipeline import run_pipeline
from choreoscope.analysis.report import build_report, validate_report
from choreoscope.analysis.report_md import report_markdown
from choreoscope.collector import store
from choreoscope.collector.loaders import load_paths
from choreoscope.sample_traces.generate import write_otlp_jsonl
from tests.analysis_fixtures import scenario_report
from tests.test_critical_path import _record

EXPECTED = {
    "ecommerce": {"storefront": [verdicts.CHOREOGRAPHY]},
    "event_router": {"upload-api": [verdicts.SPAGHETTI]},
    "loan_saga": {"loan-orchestrator": [verdicts.ORCHESTRATION]},
    "notification_fanout": {},  # an honest choreography
    "hybrid_billing": {},
}


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
def test_verdicts_name_the_right_workflows_and_stay_silent_on_the_honest_ones(scenario, tmp_path_factory):
    report = scenario_report(scenario, str(tmp_path_factory.mktemp(scenario)))
    validate_report(report)
    judged = {wf["entry"]["service"]: [v["verdict"] for v in wf["verdicts"]]
              for wf in report["workflows"] if wf["verdicts"]}
    assert judged == EXPECTED[scenario]
    ids = {f["id"] for f in report["findings"]}
    for wf in report["workflows"]:
        for v in wf["verdicts"]:
            assert v["signs"] and all(set(s["finding_ids"]) <= ids for s in v["signs"])
            assert any(s["finding_ids"] for s in v["signs"])  # every verdict rests on a finding


def test_fighting_the_choreography_lists_its_props_with_their_findings(tmp_path_factory):
    report = scenario_report("ecommerce", str(tmp_path_factory.mktemp("ecommerce")))
    (verdict,) = next(wf for wf in report["workflows"] if wf["entry"]["service"] == "storefront")["verdicts"]
    kinds = {f["id"]: f["kind"] for f in report["findings"]}
    linked = {s["sign"]: {kinds[i] for i in s["finding_ids"]} for s in verdict["signs"]}
    assert linked["implicit ordering"] == {"implicit_ordering"}
    assert linked["retries"] == {"retry_loop"}
    assert linked["state in a shared table"] == {"shared_data_coupling"}
    assert "wait on the critical path" in linked
    md = report_markdown(report)
    assert "## Verdicts" in md and "fighting the choreography" in md
    for i in (i for s in verdict["signs"] for i in s["finding_ids"]):
        assert f"(#finding-{i})" in md and f'<a id="finding-{i}"></a>' in md


def test_the_spaghetti_verdict_suggests_extracting_the_critical_path(tmp_path_factory):
    report = scenario_report("event_router", str(tmp_path_factory.mktemp("event_router")))
    (verdict,) = report["workflows"][0]["verdicts"]
    assert {"event cycle", "hidden orchestrator"} <= {s["sign"] for s in verdict["signs"]}
    assert "orchestrated saga" in verdict["recommendation"] and "workflow-router" in verdict["recommendation"]


def test_a_small_sdk_store_with_an_order_held_by_timing_is_fighting_the_choreography(tmp_path):
    dump = write_otlp_jsonl(_record(), tmp_path / "orders.otlp.jsonl")
    con = store.connect(tmp_path / "orders.duckdb")
    try:
        assert load_paths(con, [str(dump)]).ok
        run_pipeline(con)
        found = verdicts.build_verdicts(con)
        (wf,) = found
        assert [v["verdict"] for v in found[wf]] == [verdicts.CHOREOGRAPHY]
        signs = {s["sign"] for s in found[wf][0]["signs"]}
        assert {"implicit ordering", "wait on the critical path"} <= signs
        assert build_report(con)["workflows"][0]["verdicts"] == found[wf]
    finally:
        con.close()
