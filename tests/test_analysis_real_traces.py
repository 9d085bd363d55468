"""Every real dump in ../shared/real_traces analyses; messaging hops and links are recovered."""

from __future__ import annotations

import pytest

from choreoscope.analysis.report import build_report, validate_report
from tests.analysis_fixtures import REAL_TRACES, analysed_store, service_edges

pytestmark = pytest.mark.skipif(not REAL_TRACES.is_dir(), reason=f"{REAL_TRACES} not present")

DUMPS = sorted(
    p for p in REAL_TRACES.rglob("*.json") if not p.name.endswith(".manifest.json")
) if REAL_TRACES.is_dir() else []


@pytest.mark.parametrize("dump", DUMPS, ids=lambda p: p.name)
def test_every_real_dump_analyses(dump, tmp_path):
    con = analysed_store([dump], tmp_path / "s.duckdb")
    report = build_report(con)
    validate_report(report)
    assert report["summary"]["spans"] > 0
    assert report["workflows"]
    assert sum(w["instances"] for w in report["workflows"]) == report["summary"]["workflow_instances"]


@pytest.mark.parametrize(
    ("dump", "edge"),
    [
        ("messaging-kafka.json", ("servicea", "serviceb", "event", "messages")),
        ("messaging.json", ("frontend", "backend", "event", "backend")),
        ("messaging2.json", ("transfer-service", "notification-service", "event", "notification")),
        ("smartthings-oauth-authorization.json", ("bouncer", "pusher", "event", "iot-events360")),
    ],
)
def test_zipkin_broker_hops_become_event_edges(dump, edge, tmp_path):
    con = analysed_store([REAL_TRACES / "zipkin-lens" / dump], tmp_path / "s.duckdb")
    assert edge in service_edges(build_report(con))


def test_otel_demo_linked_traces_are_stitched_into_shared_instances(tmp_path):
    con = analysed_store([REAL_TRACES / "otel-tui" / "test_data.json"], tmp_path / "s.duckdb")
    links = con.execute(
        """
        SELECT l.trace_id, l.linked_trace_id, a.instance_id, b.instance_id
        FROM span_links l
        JOIN trace_instances a ON a.trace_id = l.trace_id
        JOIN trace_instances b ON b.trace_id = l.linked_trace_id
        WHERE l.trace_id <> l.linked_trace_id
        """
    ).fetchall()
    assert len(links) >= 40, "the capture's links between present traces"
    assert all(a == b for _, _, a, b in links)
    traces, instances = con.execute(
        "SELECT count(DISTINCT trace_id), count(DISTINCT instance_id) FROM trace_instances"
    ).fetchall()[0]
    assert instances < traces
