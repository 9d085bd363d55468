"""The frozen sns_sqs_moto capture (SNS -> SQS on moto, official OTel instrumentations) backs its truth.yaml.

No broker is needed: inspect_capture.py (standard library only) recomputes the evidence from the spans.
"""

import gzip
import json
import subprocess
import sys
from pathlib import Path

CAPTURE_DIR = Path(__file__).resolve().parents[1] / "sample_traces" / "captures" / "sns_sqs_moto"
CAPTURE = CAPTURE_DIR / "capture.otlp.jsonl.gz"


def test_capture_is_small_and_otlp_json():
    assert CAPTURE.stat().st_size <= 3 * 1024 * 1024
    lines = gzip.decompress(CAPTURE.read_bytes()).decode("utf-8").splitlines()
    assert lines
    for line in lines:
        doc = json.loads(line)
        assert "resourceSpans" in doc


def test_inspector_backs_every_truth_entry():
    proc = subprocess.run([sys.executable, str(CAPTURE_DIR / "inspect_capture.py"), "--capture", str(CAPTURE),
                           "--truth", str(CAPTURE_DIR / "truth.yaml")],
                           capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "BAD" not in proc.stdout and "???" not in proc.stdout
