"""The independent claims_rebalance scenario: its frozen dump is what generate.py makes, and its stdlib-only
inspector backs every truth entry (on the frozen dump and on a small fresh one) and refuses a wrong truth.

Nothing here runs choreoscope's analysis: the truth is by construction, checked against the spans alone.
"""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

from tests.paths import REPO

FOLDER = REPO / "sample_traces" / "independent" / "claims_rebalance"
DUMP = FOLDER / "dump.otlp.jsonl.gz"
TRUTH = FOLDER / "truth.yaml"
SDK_VERSION = re.compile(r'("telemetry\.sdk\.version","value":\{"stringValue":")[^"]*(")')


def _run(*args: str | Path, timeout: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, check=False,
                          timeout=timeout, cwd=REPO)


def _inspect(dump: Path, truth: Path = TRUTH, instances: int = 200) -> subprocess.CompletedProcess:
    return _run(FOLDER / "inspect_scenario.py", "--dump", dump, "--truth", truth, "--instances", str(instances))


def _text(path: Path) -> str:
    """The dump's JSON lines, with the SDK's version (a resource attribute it adds itself) blanked."""
    return SDK_VERSION.sub(r"\1\2", gzip.decompress(path.read_bytes()).decode("utf-8"))


def test_dump_is_small_gzipped_otlp_json_lines():
    raw = DUMP.read_bytes()
    assert len(raw) <= 3 * 1024 * 1024
    assert raw[:2] == b"\x1f\x8b" and raw[4:8] == b"\0\0\0\0", "gzip with mtime 0"
    lines = gzip.decompress(raw).decode("utf-8").splitlines()
    assert lines
    for line in lines:
        assert list(json.loads(line)) == ["resourceSpans"]


def test_inspector_backs_every_truth_entry_on_the_frozen_dump():
    proc = _inspect(DUMP)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "skew-corrected 16/200 (8.0%), raw 0/200 (0.0%)" in out  # the race is visible only after correction
    assert "payouts starts after repair-scheduler ends: raw 200/200 (100.0%), skew-corrected 0/200 (0.0%)" in out
    assert "deliveries per message {1: 193, 2: 7}" in out and "every attempt succeeded: 7" in out  # rebalance
    assert "deliveries per message {1: 184, 2: 1, 3: 10, 4: 5}" in out  # the real retry
    assert " | NO  | " not in out


def test_frozen_dump_is_what_generate_makes(tmp_path):
    out = tmp_path / "dump.otlp.jsonl.gz"
    proc = _run(FOLDER / "generate.py", "--seed", "17", "--instances", "200", "--out", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _text(out) == _text(DUMP), (
        "dump.otlp.jsonl.gz is not what `generate.py --seed 17 --instances 200` makes: regenerate it "
        "(python sample_traces/independent/claims_rebalance/generate.py) and re-check truth.yaml with the inspector")


def test_inspector_backs_the_truth_on_a_small_fresh_dump(tmp_path):
    out = tmp_path / "small.otlp.jsonl.gz"
    proc = _run(FOLDER / "generate.py", "--seed", "3", "--instances", "25", "--out", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = _inspect(out, instances=25)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "skew-corrected 2/25 (8.0%), raw 0/25 (0.0%)" in proc.stdout


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


def test_inspector_refuses_a_dump_without_the_race(tmp_path):
    """With no racing instance the ordering and the retry have no evidence: the inspector must say so."""
    out = tmp_path / "calm.otlp.jsonl.gz"
    proc = _run(FOLDER / "generate.py", "--seed", "3", "--instances", "25", "--races", "0", "--out", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = _inspect(out, instances=25)
    assert proc.returncode == 1
    assert re.search(r"findings +\| implicit_ordering \[ledger, payouts\].* \| NO  \| ", proc.stdout)
    assert re.search(r"findings +\| retry_loop \[payouts\] .* \| NO  \| ", proc.stdout)


def test_generate_is_deterministic(tmp_path):
    a, b = tmp_path / "a.gz", tmp_path / "b.gz"
    for out in (a, b):
        assert _run(FOLDER / "generate.py", "--seed", "5", "--instances", "10", "--out", out).returncode == 0
    assert a.read_bytes() == b.read_bytes()
