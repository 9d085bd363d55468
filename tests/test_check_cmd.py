"""`choreoscope check` exit codes: 0 without drift, 1 on a new finding matching --fail-on, 0 when
the baseline already has it, 2 on bad input; JUnit XML marks the failing findings."""

from __future__ import annotations

import json
from xml.etree import ElementTree as ET

from intended_fixtures import intended_path

from choreoscope.cli import main
from choreoscope.sample_traces.generate import DUMPS_DIR

FANOUT = str(DUMPS_DIR / "notification_fanout.otlp.jsonl")
LOAN = str(DUMPS_DIR / "loan_saga.otlp.jsonl")


def test_no_drift_passes(capsys):
    code = main(["check", FANOUT, "--intended", intended_path("notification_fanout"),
                 "--fail-on", "undeclared_edge", "missing_edge", "ordering_violation"])
    out = capsys.readouterr().out
    assert code == 0 and "Result: pass" in out


def test_new_finding_matching_fail_on_fails_and_is_in_junit(tmp_path, capsys):
    junit = tmp_path / "check.xml"
    code = main(["check", LOAN, "--intended", intended_path("loan_saga"), "--fail-on", "undeclared_edge",
                 "--junit", str(junit)])
    out = capsys.readouterr().out
    assert code == 1 and "undeclared_edge: loan-orchestrator -> fraud-service" in out
    suite = ET.parse(junit).getroot().find("testsuite")
    failed = [c.get("classname") for c in suite.iter("testcase") if c.find("failure") is not None]
    assert failed == ["choreoscope.undeclared_edge"]
    assert int(suite.get("tests")) > 1  # the other findings are passing testcases


def test_finding_in_baseline_does_not_fail(tmp_path, capsys):
    baseline = tmp_path / "baseline.json"
    assert main(["analyze", LOAN, "--intended", intended_path("loan_saga"), "--format", "json",
                 "--out", str(baseline)]) == 0
    assert any(f["kind"] == "undeclared_edge" for f in json.loads(baseline.read_text())["findings"])
    code = main(["check", LOAN, "--intended", intended_path("loan_saga"), "--baseline", str(baseline),
                 "--fail-on", "info"])
    assert code == 0 and "0 new since the baseline" in capsys.readouterr().out


def test_severity_means_that_or_worse(capsys):
    # loan_saga without intended: its detectors' findings include warnings or worse
    assert main(["check", LOAN, "--fail-on", "info"]) == 1
    assert main(["check", LOAN, "--fail-on", "dead_event"]) == 0
    capsys.readouterr()


def test_bad_input_exits_2(tmp_path, capsys):
    assert main(["check", str(tmp_path / "missing.json")]) == 2
    bad = tmp_path / "intended.yaml"
    bad.write_text("version: 1\nworkflows:\n  - name: w\n    calls: [{caller: a}]\n")
    assert main(["check", LOAN, "--intended", str(bad)]) == 2
    assert "workflows[0].calls[0]" in capsys.readouterr().err
    baseline = tmp_path / "baseline.json"
    baseline.write_text('{"findings": "nope"}')
    assert main(["check", LOAN, "--baseline", str(baseline)]) == 2
    assert "no `findings` list" in capsys.readouterr().err
    assert main(["check", LOAN, "--fail-on", "scary"]) == 2
    assert "--fail-on 'scary'" in capsys.readouterr().err
