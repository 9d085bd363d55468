"""The frozen celery_redis capture: its inspector backs every truth entry, and the file is sound."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

CAPTURE_DIR = Path(__file__).resolve().parents[1] / "sample_traces" / "captures" / "celery_redis"
CAPTURE = CAPTURE_DIR / "capture.otlp.jsonl.gz"


def test_inspector_backs_every_truth_entry():
    result = subprocess.run([sys.executable, str(CAPTURE_DIR / "inspect_capture.py")],
                            capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_capture_is_small_and_every_line_is_an_otlp_export():
    assert CAPTURE.stat().st_size <= 3 * 1024 * 1024
    lines = 0
    with gzip.open(CAPTURE, "rt", encoding="utf-8") as fh:
        for line in fh:
            doc = json.loads(line)
            assert "resourceSpans" in doc
            lines += 1
    assert lines > 0
