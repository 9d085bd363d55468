"""`serve --metrics-port`: Prometheus metrics of a real receiver, scraped over HTTP."""

from __future__ import annotations

import re
import time
import urllib.request

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult
from prometheus_client.parser import text_string_to_metric_families
from receiver_fixtures import ServeProcess, make_spans, running_receiver


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {sample.name: sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples if not sample.labels or sample.name.endswith("_count")}


def test_metrics_count_accepted_duplicate_and_refused_spans(tmp_path):
    with running_receiver(tmp_path, metrics_port=0, queue_spans=1) as rec:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/metrics", rec.metrics_url)
        spans = make_spans()
        exporter = OTLPSpanExporter(endpoint=rec.grpc_address, insecure=True)
        try:
            assert exporter.export(spans) == SpanExportResult.SUCCESS
            assert exporter.export(spans) == SpanExportResult.SUCCESS  # a retry: stored once
        finally:
            exporter.shutdown()
        m = scrape(rec.metrics_url)
        n = len(spans)
        assert m["choreoscope_spans_accepted_total"] == 2 * n
        assert m["choreoscope_spans_stored_total"] == n
        assert m["choreoscope_spans_duplicate_total"] == n
        assert m["choreoscope_spans_rejected_total"] == 0
        assert m["choreoscope_queue_spans"] == 0
        assert m["choreoscope_queue_limit_spans"] == 1
        assert m["choreoscope_commit_duration_seconds_count"] == m["choreoscope_commits_total"] >= 1
        assert m["choreoscope_export_requests_total"] == 2
        # a full queue: hold the writer, fill the queue, the next export is refused (retryable)
        with rec.ingester.write_lock:
            first = rec.ingester.submit_arrow(*_rows(rec, "a"))
            try:
                rec.ingester.submit_arrow(*_rows(rec, "b"))
                raise AssertionError("the queue took more than its limit")
            except Exception as exc:  # noqa: BLE001
                assert type(exc).__name__ == "QueueFull"
            m = scrape(rec.metrics_url)
            assert m["choreoscope_queue_spans"] == 1
            assert m["choreoscope_spans_refused_total"] == 1
            assert m["choreoscope_requests_refused_total"] == 1
        first.result(10)
        assert "choreoscope_analysis_duration_seconds" not in m  # no analysis ran


def _rows(rec, tag: str):
    import pyarrow as pa

    from choreoscope.collector import store

    rows = {name: [None] for name in store.SPAN_COLUMN_NAMES}
    rows["trace_id"], rows["span_id"] = [tag * 32], [tag * 16]
    return pa.table(rows, schema=store.SPAN_ARROW_SCHEMA), None


def test_metrics_report_the_last_analysis(tmp_path):
    with running_receiver(tmp_path, metrics_port=0) as rec:
        from choreoscope.analysis.pipeline import run_pipeline

        cur = rec.con.cursor()
        try:
            run_pipeline(cur)
        finally:
            cur.close()
        m = scrape(rec.metrics_url)
        assert m["choreoscope_analysis_duration_seconds"] >= 0
        assert m["choreoscope_analysis_finished_timestamp_seconds"] > time.time() - 3600
        assert m["choreoscope_analysis_spans"] == 0


def test_serve_prints_where_metrics_are_and_stops_cleanly(tmp_path):
    serve = ServeProcess(tmp_path / "m.duckdb", "--metrics-port", "0")
    try:
        line = serve.proc.stdout.readline()
        url = re.match(r"Prometheus metrics on (\S+)", line).group(1)
        assert scrape(url)["choreoscope_spans_stored_total"] == 0
    finally:
        serve.proc.terminate()
        serve.proc.wait(30)
    assert serve.proc.returncode == 0
