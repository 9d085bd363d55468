"""The frozen node_amqplib_pg live capture (Node amqplib/pg + Python pika/psycopg on RabbitMQ and
PostgreSQL) backs every entry of its truth.yaml; no broker or database is needed."""

import gzip
import json
import subprocess
import sys
from pathlib import Path

CAPTURE_DIR = Path(__file__).resolve().parents[1] / "sample_traces" / "captures" / "node_amqplib_pg"
CAPTURE = CAPTURE_DIR / "capture.otlp.jsonl.gz"


def test_inspector_backs_every_truth_entry():
    result = subprocess.run([sys.executable, str(CAPTURE_DIR / "inspect_capture.py"), "--capture", str(CAPTURE),
                             "--truth", str(CAPTURE_DIR / "truth.yaml")],
                             capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 not backed" in result.stdout


def test_capture_is_small_otlp_json_lines():
    assert CAPTURE.stat().st_size <= 3 * 1024 * 1024
    with gzip.open(CAPTURE, "rt", encoding="utf-8") as fh:
        lines = [line for line in fh if line.strip()]
    assert lines
    for line in lines:
        doc = json.loads(line)
        assert doc.get("resourceSpans"), "every export request carries spans"


def test_both_languages_and_all_services_present():
    services, languages = set(), set()
    with gzip.open(CAPTURE, "rt", encoding="utf-8") as fh:
        for line in fh:
            for rs in json.loads(line)["resourceSpans"]:
                attrs = {a["key"]: a["value"].get("stringValue") for a in rs["resource"]["attributes"]}
                services.add(attrs["service.name"])
                languages.add(attrs["telemetry.sdk.language"])
    assert services == {"checkout", "payments", "ledger", "fraud", "receipts"}
    assert languages == {"nodejs", "python"}
