"""The independent food_delivery_404 scenario: its frozen dump is what generate.py makes, and its stdlib-only
inspector backs every truth entry (on the frozen dump and on a small fresh one), refuses a swapped truth and
refuses the ordering and the redelivery retry on a dump where kitchen is never late.

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

FOLDER = REPO / "sample_traces" / "independent" / "food_delivery_404"
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
    assert "reached kitchen's API before kitchen's write ended in 6/160 (3.8%) orders" in proc.stdout
    assert "answered 404 6/6" in proc.stdout
    assert "promo-engine starts after kitchen ends in 160/160 (100.0%)" in proc.stdout
    assert "ticket.delayed: calls kitchen in 48/48 (100.0%)" in proc.stdout
    assert "ticket.accepted: calls kitchen in 0/112 (0.0%)" in proc.stdout
    assert "courier-dispatch +4" in proc.stdout  # its host clock runs 40 ms ahead
    assert " | NO  | " not in proc.stdout


def test_frozen_dump_is_what_generate_makes(tmp_path):
    out = tmp_path / "dump.otlp.jsonl.gz"
    proc = _run(FOLDER / "generate.py", "--seed", "404", "--instances", "160", "--out", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _text(out) == _text(DUMP), (
        "dump.otlp.jsonl.gz is not what `generate.py --seed 404 --instances 160` makes: regenerate it "
        "(python sample_traces/independent/food_delivery_404/generate.py) and re-check truth.yaml with the inspector")


def test_inspector_backs_the_truth_on_a_small_fresh_dump(tmp_path):
    out = tmp_path / "small.otlp.jsonl.gz"
    proc = _run(FOLDER / "generate.py", "--seed", "3", "--instances", "25", "--out", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = _inspect(out, instances=25)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "before kitchen's write ended in 2/25 (8.0%) orders" in proc.stdout


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
    """With kitchen never late there is no 404 and no redelivery: the ordering and its retry are unbacked."""
    out = tmp_path / "calm.otlp.jsonl.gz"
    proc = _run(FOLDER / "generate.py", "--seed", "3", "--instances", "25", "--races", "0", "--out", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = _inspect(out, instances=25)
    assert proc.returncode == 1
    assert re.search(r"findings +\| implicit_ordering \[kitchen, courier-dispatch\].* \| NO  \| ", proc.stdout)
    assert re.search(r"findings +\| retry_loop \[courier-dispatch\] .* \| NO  \| ", proc.stdout)
    assert sum(" | NO  | " in r for r in proc.stdout.splitlines()) == 2


def test_generate_is_deterministic(tmp_path):
    a, b = tmp_path / "a.gz", tmp_path / "b.gz"
    for out in (a, b):
        assert _run(FOLDER / "generate.py", "--seed", "5", "--instances", "10", "--out", out).returncode == 0
    assert a.read_bytes() == b.read_bytes()
