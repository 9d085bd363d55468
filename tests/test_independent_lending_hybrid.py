"""The independent lending_hybrid scenario: its frozen dump is what generate.py makes, and its stdlib-only
inspector backs every truth entry (on the frozen dump and on a small fresh one) and refuses a wrong truth
and a dump generated without the plants.

Nothing here runs choreoscope's analysis: the truth is by construction, checked against the spans alone.
"""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from tests.paths import REPO

FOLDER = REPO / "sample_traces" / "independent" / "lending_hybrid"
DUMP = FOLDER / "dump.otlp.jsonl.gz"
TRUTH = FOLDER / "truth.yaml"
SDK_VERSION = re.compile(r'("telemetry\.sdk\.version","value":\{"stringValue":")[^"]*(")')


def _run(*args: str | Path, timeout: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, check=False,
                          timeout=timeout, cwd=REPO)


def _inspect(dump: Path, truth: Path = TRUTH, instances: int = 160) -> subprocess.CompletedProcess:
    return _run(FOLDER / "inspect_scenario.py", "--dump", dump, "--truth", truth, "--instances", str(instances))


def _text(path: Path) -> str:
    """The dump's JSON lines, with the SDK's version (a resource attribute it adds itself) blanked."""
    return SDK_VERSION.sub(r"\1\2", gzip.decompress(path.read_bytes()).decode("utf-8"))


def _row(stdout: str, section: str, entry: str) -> str:
    rows = [r for r in stdout.splitlines() if r.startswith(f"{section:9s} | {entry} ")]
    assert len(rows) == 1, f"no single row for {section} {entry}"
    return rows[0]


def test_dump_is_small_gzipped_otlp_json_lines():
    raw = DUMP.read_bytes()
    assert len(raw) <= 3 * 1024 * 1024
    assert raw[:2] == b"\x1f\x8b" and raw[4:8] == b"\0\0\0\0", "gzip with mtime 0"
    lines = gzip.decompress(raw).decode("utf-8").splitlines()
    assert lines
    for line in lines:
        assert list(json.loads(line)) == ["resourceSpans"]


def test_truth_is_yaml_in_the_corpus_format():
    """tests/corpus.py reads truth.yaml with PyYAML: every entry has a kind and a services list."""
    truth = yaml.safe_load(TRUTH.read_text())
    assert truth["scenario"] == "lending_hybrid"
    assert {w["entry"]["operation"] for w in truth["workflows"]} == {
        "POST /applications", "POST /offers/{offer_id}/accept", "POST /collections/cases"}
    for entry in truth["findings"] + truth["must_not"]:
        assert set(entry) <= {"kind", "services", "event", "resource", "why"}, entry
        assert isinstance(entry["services"], list) and entry["services"], entry
    assert {e["kind"] for e in truth["findings"]} >= {"implicit_orchestrator", "event_cycle", "schema_drift",
                                                      "missing_compensation", "god_coordinator"}


def test_inspector_backs_every_truth_entry_on_the_frozen_dump():
    proc = _inspect(DUMP)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert " | NO  | " not in out
    assert "64/64 entries backed by the data" in out
    assert "handlers that retried 16 (attempts {2: 8, 3: 8}, last attempt succeeded 16/16)" in out
    assert "traces with the limits+pricing loop: 51" in out
    assert "instances where payouts failed (SERVER span ERROR): 8 of 84 accepts" in out
    assert "with >= 3 services and >= 2 endpoints each on average: 25/25 (100.0%)" in out
    assert "by {'message id': 76}" in _row(out, "must_not", "orphan_event [servicing] loan.disbursed")
    assert "only in 2.0.0: ['lending.credit.model_version', 'lending.credit.provider', 'lending.credit.score_band']" \
        in _row(out, "findings", "schema_drift [credit-scoring] credit.scored")


def test_frozen_dump_is_what_generate_makes(tmp_path):
    out = tmp_path / "dump.otlp.jsonl.gz"
    proc = _run(FOLDER / "generate.py", "--seed", "11", "--instances", "160", "--out", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _text(out) == _text(DUMP), (
        "dump.otlp.jsonl.gz is not what `generate.py --seed 11 --instances 160` makes: regenerate it "
        "(python sample_traces/independent/lending_hybrid/generate.py) and re-check truth.yaml with the inspector")


def test_inspector_backs_the_truth_on_a_small_fresh_dump(tmp_path):
    out = tmp_path / "small.otlp.jsonl.gz"
    proc = _run(FOLDER / "generate.py", "--seed", "3", "--instances", "25", "--out", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = _inspect(out, instances=25)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "instances where payouts failed (SERVER span ERROR): 2 of 14 accepts" in proc.stdout


def test_inspector_refuses_a_swapped_truth(tmp_path):
    """Every finding checked as a look-alike and every look-alike as a finding: all of them must fail."""
    text = TRUTH.read_text()
    swapped = (text.replace("\nfindings:", "\nSWAP:").replace("\nmust_not:", "\nfindings:")
               .replace("\nSWAP:", "\nmust_not:"))
    truth = tmp_path / "swapped.yaml"
    truth.write_text(swapped)
    proc = _inspect(DUMP, truth)
    assert proc.returncode == 1
    rows = [r for r in proc.stdout.splitlines() if r.startswith(("findings ", "must_not "))]
    entries = sum(1 for line in text.splitlines() if line.startswith("  - {kind:"))
    assert len(rows) == entries
    assert all(" | NO  | " in r for r in rows), "\n".join(r for r in rows if " | NO  | " not in r)


def test_inspector_refuses_a_dump_without_the_plants(tmp_path):
    """--calm: no retries, no second round, no renamed fields, the contract voided: those four findings fail."""
    out = tmp_path / "calm.otlp.jsonl.gz"
    proc = _run(FOLDER / "generate.py", "--seed", "3", "--instances", "25", "--calm", "--out", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = _inspect(out, instances=25)
    assert proc.returncode == 1
    failed = {r.split(" | ")[1].strip() for r in proc.stdout.splitlines() if " | NO  | " in r}
    assert failed == {"retry_loop [kyc]", "event_cycle [pricing, limits]",
                      "schema_drift [credit-scoring] credit.scored", "missing_compensation [contracts, payouts]"}


def test_generate_is_deterministic(tmp_path):
    a, b = tmp_path / "a.gz", tmp_path / "b.gz"
    for out in (a, b):
        assert _run(FOLDER / "generate.py", "--seed", "5", "--instances", "10", "--out", out).returncode == 0
    assert a.read_bytes() == b.read_bytes()
