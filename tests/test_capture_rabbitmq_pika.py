"""The frozen rabbitmq_pika live capture: its inspector backs every truth entry (no broker needed)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

FOLDER = Path(__file__).resolve().parents[1] / "sample_traces" / "captures" / "rabbitmq_pika"
CAPTURE = FOLDER / "capture.otlp.jsonl.gz"


def test_capture_is_small_and_otlp_json():
    assert CAPTURE.stat().st_size <= 3 * 1024 * 1024
    n = 0
    with gzip.open(CAPTURE, "rt") as fh:
        for line in fh:
            if not line.strip():
                continue
            doc = json.loads(line)
            assert "resourceSpans" in doc
            n += 1
    assert n > 0


def test_inspector_backs_every_truth_entry():
    proc = subprocess.run(
        [sys.executable, str(FOLDER / "inspect_capture.py")],
        capture_output=True, text=True, check=False, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "entries backed by the data" in proc.stdout
