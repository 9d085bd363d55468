"""The independent scenarios (sample_traces/independent/*): each frozen dump is what its generate.py
makes, and its stdlib-only inspector backs every truth entry (on the frozen dump and on a small fresh
one), refuses a swapped truth, and refuses a dump generated without what was planted.

Nothing here runs choreoscope's analysis: the truth is by construction, checked against the spans
alone (tests/test_corpus.py scores choreoscope against it).
"""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.paths import REPO

ROOT = REPO / "sample_traces" / "independent"
SDK_VERSION = re.compile(r'("telemetry\.sdk\.version","value":\{"stringValue":")[^"]*(")')


@dataclass(frozen=True)
class Scenario:
    seed: int                 # the frozen dump's generate.py --seed and --instances
    instances: int
    evidence: tuple[str, ...]  # lines the inspector prints for the frozen dump
    small: str                # ... and for `--seed 3 --instances 25`
    calm: tuple[str, ...]     # generate.py flags that leave the plants out ...
    unbacked: frozenset[str]  # ... and the truth entries that then fail, exactly


SCENARIOS = {
    "race_8_of_200": Scenario(
        8, 200,
        ("first read started before seat-allocator's write ended in 8/200 (4.0%) instances",
         "loyalty starts after notifier ends in 200/200 (100.0%)"),
        "in 1/25 (4.0%) instances", ("--races", "0"),
        frozenset({"implicit_ordering [seat-allocator, ticket-issuer] booking.created", "retry_loop [ticket-issuer]"})),
    "lending_hybrid": Scenario(
        11, 160,
        ("64/64 entries backed by the data",
         "handlers that retried 16 (attempts {2: 8, 3: 8}, last attempt succeeded 16/16)",
         "traces with the limits+pricing loop: 51",
         "instances where payouts failed (SERVER span ERROR): 8 of 84 accepts",
         "only in 2.0.0: ['lending.credit.model_version', 'lending.credit.provider', 'lending.credit.score_band']"),
        "instances where payouts failed (SERVER span ERROR): 2 of 14 accepts", ("--calm",),
        frozenset({"retry_loop [kyc]", "event_cycle [pricing, limits]", "schema_drift [credit-scoring] credit.scored",
                   "missing_compensation [contracts, payouts]"})),
    "food_delivery_404": Scenario(
        404, 160,
        ("reached kitchen's API before kitchen's write ended in 6/160 (3.8%) orders", "answered 404 6/6",
         "promo-engine starts after kitchen ends in 160/160 (100.0%)",
         "ticket.delayed: calls kitchen in 48/48 (100.0%)", "ticket.accepted: calls kitchen in 0/112 (0.0%)",
         "courier-dispatch +4"),  # its host clock runs 40 ms ahead
        "before kitchen's write ended in 2/25 (8.0%) orders", ("--races", "0"),
        frozenset({"implicit_ordering [kitchen, courier-dispatch] order.placed", "retry_loop [courier-dispatch]"})),
    "claims_rebalance": Scenario(
        17, 200,
        ("skew-corrected 16/200 (8.0%), raw 0/200 (0.0%)",  # the race shows only after the correction
         "payouts starts after repair-scheduler ends: raw 200/200 (100.0%), skew-corrected 0/200 (0.0%)",
         "deliveries per message {1: 193, 2: 7}", "every attempt succeeded: 7",  # the rebalance duplicates
         "deliveries per message {1: 184, 2: 1, 3: 10, 4: 5}"),  # the real retry
        "skew-corrected 2/25 (8.0%), raw 0/25 (0.0%)", ("--races", "0"),
        frozenset({"implicit_ordering [ledger, payouts] payout.requested", "retry_loop [payouts]"})),
    "media_release_grpc": Scenario(
        21, 160,
        ("45/45 entries backed by the data",
         "ingest-orchestrator -> media-catalog: 921 calls, 7 distinct operations",
         "earlier steps never undone: {'billing': 12} (runs that undid some earlier step but not another: 12)",
         "(attempts {2: 7, 3: 3}, last attempt OK 10/10, failed attempts UNAVAILABLE 13/13, sequential True)",
         "stream messages per RPC span (18, 60)",  # the Transcode stream: many messages, no retry
         "media@pg-ops.internal: janitor {'write': 16}; media@pg-transcode.internal: transcoder {'write': 800}",
         "sitemap-builder starts after janitor ends in 16/16 (100.0%) (paired by time",  # cron times only
         "84 observed ({'time': 84})"),  # release-orchestrator -> audit-log without trace context
        "earlier steps never undone: {'billing': 2}", ("--calm",),
        frozenset({"retry_loop [release-orchestrator]", "missing_compensation [release-orchestrator]"})),
}


def test_every_independent_scenario_is_tested_here():
    assert {p.name for p in ROOT.iterdir() if (p / "truth.yaml").exists()} == set(SCENARIOS)


def _run(*args: str | Path, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, check=False,
                          timeout=timeout, cwd=REPO)


def _generate(name: str, out: Path, seed: int, instances: int, *flags: str) -> Path:
    proc = _run(ROOT / name / "generate.py", "--seed", str(seed), "--instances", str(instances), *flags,
                "--out", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def _inspect(name: str, dump: Path, instances: int, truth: Path | None = None) -> subprocess.CompletedProcess:
    return _run(ROOT / name / "inspect_scenario.py", "--dump", dump, "--truth", truth or ROOT / name / "truth.yaml",
                "--instances", str(instances))


def _unbacked(stdout: str) -> set[str]:
    """The truth entries a run of the inspector did not back (its table rows marked NO)."""
    return {row.split(" | ")[1].strip() for row in stdout.splitlines() if " | NO  | " in row}


def _text(path: Path) -> str:
    """The dump's JSON lines, with the SDK's version (a resource attribute it adds itself) blanked."""
    return SDK_VERSION.sub(r"\1\2", gzip.decompress(path.read_bytes()).decode("utf-8"))


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_dump_is_small_gzipped_otlp_json_lines_and_the_truth_is_corpus_yaml(name):
    raw = (ROOT / name / "dump.otlp.jsonl.gz").read_bytes()
    assert len(raw) <= 3 * 1024 * 1024
    assert raw[:2] == b"\x1f\x8b" and raw[4:8] == b"\0\0\0\0", "gzip with mtime 0"
    lines = gzip.decompress(raw).decode("utf-8").splitlines()
    assert lines and all(list(json.loads(line)) == ["resourceSpans"] for line in lines)
    truth = yaml.safe_load((ROOT / name / "truth.yaml").read_text())  # as tests/corpus.py reads it
    for entry in truth["findings"] + truth["must_not"]:
        assert isinstance(entry["services"], list) and entry["services"], entry


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_inspector_backs_every_truth_entry_on_the_frozen_dump(name):
    s = SCENARIOS[name]
    proc = _inspect(name, ROOT / name / "dump.otlp.jsonl.gz", s.instances)
    assert proc.returncode == 0 and not _unbacked(proc.stdout), proc.stdout + proc.stderr
    for line in s.evidence:
        assert line in proc.stdout


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_frozen_dump_is_what_generate_makes(name, tmp_path):
    s = SCENARIOS[name]
    out = _generate(name, tmp_path / "dump.otlp.jsonl.gz", s.seed, s.instances)
    assert _text(out) == _text(ROOT / name / "dump.otlp.jsonl.gz"), (
        f"{name}/dump.otlp.jsonl.gz is not what `generate.py --seed {s.seed} --instances {s.instances}` makes: "
        f"regenerate it (python sample_traces/independent/{name}/generate.py) and re-check truth.yaml with "
        "the inspector")


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_inspector_backs_the_truth_on_a_small_fresh_dump(name, tmp_path):
    proc = _inspect(name, _generate(name, tmp_path / "small.otlp.jsonl.gz", 3, 25), 25)
    assert proc.returncode == 0 and not _unbacked(proc.stdout), proc.stdout + proc.stderr
    assert SCENARIOS[name].small in proc.stdout


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_inspector_refuses_a_swapped_truth(name, tmp_path):
    """Every finding checked as a look-alike and every look-alike as a finding: all of them must fail."""
    text = (ROOT / name / "truth.yaml").read_text()
    swapped = tmp_path / "swapped.yaml"
    swapped.write_text(text.replace("\nfindings:", "\nSWAP:").replace("\nmust_not:", "\nfindings:")
                       .replace("\nSWAP:", "\nmust_not:"))
    proc = _inspect(name, ROOT / name / "dump.otlp.jsonl.gz", SCENARIOS[name].instances, swapped)
    assert proc.returncode == 1
    rows = [r for r in proc.stdout.splitlines() if r.startswith(("findings ", "must_not "))]
    assert len(rows) == sum(1 for line in text.splitlines() if line.startswith("  - {kind:"))
    assert all(" | NO  | " in r for r in rows), "\n".join(r for r in rows if " | NO  | " not in r)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_inspector_refuses_a_dump_without_the_plants(name, tmp_path):
    s = SCENARIOS[name]
    proc = _inspect(name, _generate(name, tmp_path / "calm.otlp.jsonl.gz", 3, 25, *s.calm), 25)
    assert proc.returncode == 1
    assert _unbacked(proc.stdout) == s.unbacked


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_generate_is_deterministic(name, tmp_path):
    a, b = (_generate(name, tmp_path / f"{n}.gz", 5, 10) for n in "ab")
    assert a.read_bytes() == b.read_bytes()
