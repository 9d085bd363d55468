"""Each dashboard page, run by Streamlit's AppTest against a real store built from the sample
dumps and analysed by the real pipeline (with the scenarios' intended workflows)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from dashboard_fixtures import APP, DUMPS, build_sample_store, conformance_available
from streamlit.testing.v1 import AppTest

from choreoscope.collector import store
from choreoscope.dashboard.context_registry import DashboardContext, current, register

ECOMMERCE = "storefront server POST /orders"


@pytest.fixture(scope="module")
def sample_store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dashboard") / "sample.duckdb"
    build_sample_store(path)
    return path


@pytest.fixture
def ro(sample_store):
    """The store opened read-only and registered, as `choreoscope dashboard DB` does."""
    con = store.connect(sample_store, read_only=True)
    register(DashboardContext(con=con, db_path=str(sample_store), read_only=True))
    yield con
    register(None)
    con.close()


def page(name: str, **params: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    if name != "overview":
        at.switch_page(f"app_pages/{name}.py")
    for k, v in params.items():
        at.query_params[k] = v
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [e.label for e in at.expander]
    parts += [m.label + " " + str(m.value) for m in at.metric]
    return "\n".join(parts)


def frames_text(at: AppTest) -> str:
    return "\n".join(df.value.astype(str).to_csv() for df in at.dataframe)


def test_overview_lists_workflows_with_patterns_and_finding_counts(ro):
    at = page("overview")
    assert at.title[0].value == "Overview"
    spans = ro.execute("SELECT count(*) FROM spans").fetchall()[0][0]
    assert f"{spans:,}" in [m.value for m in at.metric]
    wf = at.dataframe[0].value
    names = ro.execute("SELECT name, pattern FROM workflows JOIN workflow_patterns USING (workflow_id)").fetchall()
    assert sorted(wf["name"]) == sorted(n for n, _ in names)
    assert dict(zip(wf["name"], wf["pattern"])) == dict(names)
    n_findings = ro.execute("SELECT count(*) FROM findings").fetchall()[0][0]
    assert n_findings > 0
    assert f"**{n_findings} findings:**" in texts(at)
    assert "Analyse now" not in [b.label for b in at.button]  # offline: no analysis loop


def _dot_nodes(dot: str) -> list[str]:
    return re.findall(r'^\s+s\d+ \[label="([^"\\]+)', dot, flags=re.MULTILINE)


def _edge_colors(dot: str, color: str) -> int:
    return sum(1 for line in dot.splitlines() if " -> " in line and f', color="{color}"' in line)


def _dot_edges(dot: str) -> list[str]:
    return re.findall(r"^\s+(s\d+ -> s\d+)", dot, flags=re.MULTILINE)


@pytest.mark.skipif(not conformance_available(), reason="analysis/conformance.py not present")
def test_workflow_page_shows_recovered_and_intended_side_by_side_with_diff_counts(ro):
    at = page("workflow", workflow=ECOMMERCE)
    shown = texts(at)
    for svc in ("storefront", "order-service", "payment-service", "shipping-service", "inventory-service"):
        assert svc in shown or svc in "\n".join(g.proto.spec for g in at.get("graphviz_chart"))
    counts = dict(ro.execute("SELECT status, count(*) FROM conformance_edges WHERE workflow_id = ? GROUP BY 1",
                             [ECOMMERCE]).fetchall())
    # The sample's known deviations: shipping calls order-service back (undeclared), loyalty never consumes.
    assert counts.get("undeclared", 0) >= 1 and counts.get("missing", 0) >= 1 and counts["matched"] >= 5
    for status in ("matched", "undeclared", "missing"):
        assert f"{status}: {counts.get(status, 0)}</span>" in shown
    recovered, intended = [g.proto.spec for g in at.get("graphviz_chart")[:2]]
    # Same nodes, same edges in the same order: one layout for both; visibility differs.
    assert _dot_nodes(recovered) == _dot_nodes(intended) and _dot_edges(recovered) == _dot_edges(intended)
    assert "loyalty-service" in "".join(_dot_nodes(intended))
    assert _edge_colors(recovered, '#c62828') == 0 and _edge_colors(intended, '#c62828') == counts["missing"]
    assert _edge_colors(recovered, '#e8710a') == counts["undeclared"]
    assert _edge_colors(intended, '#e8710a') == 0
    kinds = {k for (k,) in ro.execute(
        "SELECT DISTINCT kind FROM findings WHERE workflow_id = ? OR workflow_id IS NULL", [ECOMMERCE]).fetchall()}
    labels = "\n".join(e.label for e in at.expander)
    assert {"undeclared_edge", "missing_edge"} <= {k for k in kinds if k in labels}
    assert len(at.get("page_link")) > 0  # variants / instances link to the Instance page


def test_workflow_page_without_intended_says_so(tmp_path):
    path = tmp_path / "plain.duckdb"
    con = store.connect(path)
    from choreoscope.analysis.pipeline import run_pipeline
    from choreoscope.collector.loaders import load_paths

    load_paths(con, [d for d in DUMPS if "ecommerce" in d.name])
    run_pipeline(con, [])
    register(DashboardContext(con=con, db_path=str(path), read_only=False))
    try:
        at = page("workflow", workflow=ECOMMERCE)
        assert "No intended workflow to compare with" in "\n".join(i.value for i in at.info)
        assert "observed: " in texts(at)
        assert len(at.get("graphviz_chart")) == 2  # recovered services + step graph
    finally:
        register(None)
        con.close()


def test_instance_page_draws_the_waterfall_across_traces(ro):
    iid, traces, spans, errors = ro.execute(
        "SELECT instance_id, traces, spans, errors FROM instances WHERE traces > 1 "
        "ORDER BY errors DESC, spans DESC LIMIT 1").fetchall()[0]
    at = page("instance", instance=iid)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Spans"] == str(spans) and metrics["Traces"] == str(traces) and metrics["Errors"] == str(errors)
    charts = at.get("arrow_vega_lite_chart") or at.get("vega_lite_chart")
    assert charts, "no waterfall chart"
    assert "Hops between traces" in [s.value.split(" (")[0] for s in at.subheader]
    # A trace id opens the instance that holds it.
    trace = ro.execute("SELECT trace_id FROM span_steps WHERE instance_id = ? LIMIT 1", [iid]).fetchall()[0][0]
    at2 = page("instance", instance=trace)
    assert {m.label: m.value for m in at2.metric}["Spans"] == str(spans)


def test_findings_page_lists_every_kind_and_filters(ro):
    kinds = sorted(k for (k,) in ro.execute("SELECT DISTINCT kind FROM findings").fetchall())
    at = page("findings")
    labels = "\n".join(e.label for e in at.expander)
    for kind in kinds:
        assert kind in labels
    at.multiselect(key="f_kind").set_value([kinds[0]]).run()
    labels = [e.label for e in at.expander]
    assert labels and all(kinds[0] in label for label in labels)


def test_event_catalog_shows_producers_consumers_and_flags(ro):
    at = page("events")
    table = at.dataframe[0].value
    row = table[table["event"] == "orders.placed"].iloc[0]
    assert list(row["producers"]) == ["order-service"]
    assert {"inventory-service", "payment-service", "shipping-service"} <= set(row["consumers"])
    flagged = dict(ro.execute("SELECT event, kind FROM findings WHERE kind IN ('dead_event', 'schema_drift')")
                   .fetchall())
    for event, kind in flagged.items():
        expected = {"dead_event": "dead", "schema_drift": "drift"}[kind]
        assert expected in table[table["event"] == event].iloc[0]["flags"]


def test_services_page_shows_roles_and_fan_out(ro):
    at = page("services")
    table = at.dataframe[0].value.set_index("service")
    assert "entry" in table.loc["storefront", "roles"]
    assert table.loc["order-service", "fan_out"] >= 5
    assert "sink" in table.loc["analytics-service", "roles"]


def test_load_page_loads_into_a_temporary_store_when_read_only(ro, sample_store):
    from choreoscope.dashboard.app_pages.load import load_and_analyse

    ctx = current()
    before = ro.execute("SELECT count(*) FROM spans").fetchall()[0][0]
    target, messages = load_and_analyse(ctx, [str(d) for d in DUMPS if "ecommerce" in d.name], [])
    try:
        assert target is not ctx and target.db_path != str(sample_store)
        assert any("spans loaded" in m for m in messages)
        n = target.con.execute("SELECT count(*) FROM workflows").fetchall()[0][0]
        assert n >= 1
        assert ro.execute("SELECT count(*) FROM spans").fetchall()[0][0] == before  # original untouched
    finally:
        target.con.close()


def test_instance_page_without_an_id_offers_the_workflows_instances_and_shows_one(ro):
    at = page("instance")
    workflow_box = next(s for s in at.selectbox if s.label == "Workflow")
    instance_box = next(s for s in at.selectbox if s.label == "Instance")
    wf = workflow_box.value
    n = ro.execute("SELECT count(*) FROM instances WHERE workflow_id = ?", [wf]).fetchall()[0][0]
    assert len(instance_box.options) == min(n, 200)
    spans = ro.execute("SELECT spans FROM instances WHERE instance_id = ?", [instance_box.value]).fetchall()[0][0]
    assert {m.label: m.value for m in at.metric}["Spans"] == str(spans)
    assert at.get("arrow_vega_lite_chart") or at.get("vega_lite_chart")


def test_offline_dashboard_sees_when_the_stores_analysis_is_stale(tmp_path):
    from choreoscope.analysis.pipeline import run_pipeline
    from choreoscope.collector import store
    from choreoscope.collector.loaders import load_paths
    from choreoscope.dashboard.launch import _needs_analysis
    from choreoscope.sample_traces.generate import DUMPS_DIR

    db = tmp_path / "s.duckdb"
    con = store.connect(db)
    load_paths(con, [str(DUMPS_DIR / "hybrid_billing.otlp.jsonl")])
    con.close()
    assert _needs_analysis(str(db)) == "it has spans but no analysis yet"
    con = store.connect(db)
    run_pipeline(con)
    con.close()
    assert _needs_analysis(str(db)) is None
    con = store.connect(db)
    result = load_paths(con, [str(DUMPS_DIR / "notification_fanout.otlp.jsonl")])
    con.close()
    assert _needs_analysis(str(db)) == f"+{result.spans_loaded} spans since the last analysis"


def _graph(at: AppTest) -> str:
    charts = at.get("graphviz_chart")
    assert charts, "no graph drawn"
    return charts[0].proto.spec


def _labels(dot: str) -> list[str]:
    return re.findall(r'^\s+n\d+ \[label="([^"]+)"', dot, flags=re.MULTILINE)


def test_system_map_draws_every_service_and_event_coloured_by_findings(ro):
    from choreoscope.dashboard.system_map import SEVERITY_COLORS

    at = page("system_map")
    assert at.title[0].value == "System map"
    dot = _graph(at)
    names = {label.split("\\n")[0] for label in _labels(dot)}
    services = {s for (s,) in ro.execute("SELECT DISTINCT service FROM workflow_steps WHERE NOT virtual").fetchall()}
    events = {e for (e,) in ro.execute(
        "SELECT DISTINCT event FROM workflow_edges WHERE via = 'event' AND event IS NOT NULL").fetchall()}
    assert services <= names and events <= names
    # Uninstrumented peers are marked; a dead event says it has no consumer.
    assert any("psp.example.net\\n(uninstrumented)" == label for label in _labels(dot))
    assert "inventory.low\\n(no consumer)" in _labels(dot)
    assert "prices.updated\\n(no producer seen)" in _labels(dot)
    # The implicit ordering's services and the god coordinator's edge carry their severity colour.
    rank = {"info": 1, "warning": 2, "critical": 3}
    named = [sev for sev, services in ro.execute("SELECT severity, services FROM findings").fetchall()
             if "loan-orchestrator" in services]
    line = next(line for line in dot.splitlines() if 'label="loan-orchestrator\\n' in line)
    assert SEVERITY_COLORS[max(named, key=rank.get)] in line  # the worst finding naming it
    sev = dict(ro.execute("SELECT kind, severity FROM findings WHERE kind IN ('god_coordinator')").fetchall())
    n_id = {label.split("\\n")[0]: nid for nid, label in
            re.findall(r'^\s+(n\d+) \[label="([^"]+)"', dot, flags=re.MULTILINE)}
    edge = next(line for line in dot.splitlines()
                if line.strip().startswith(f"{n_id['loan-orchestrator']} -> {n_id['credit-service']} "))
    assert SEVERITY_COLORS[sev["god_coordinator"]] in edge
    assert len([line for line in dot.splitlines() if " -> " in line]) > 30
    # Clicking a node opens its workflow (one) or selects it on the map (several: listed below it).
    storefront = next(line for line in dot.splitlines() if 'label="storefront\\n' in line)
    assert 'URL="workflow?workflow=storefront+server+POST+%2Forders"' in storefront
    hub = next(line for line in dot.splitlines() if 'label="notification-hub\\n' in line)
    assert 'URL="system_map?node=svc%3Anotification-hub"' in hub


def test_system_map_threshold_search_grouping_and_node_links(ro):
    at = page("system_map")
    all_edges = len([line for line in _graph(at).splitlines() if " -> " in line])
    at.slider(key="map_min_count").set_value(45).run()
    kept = [line for line in _graph(at).splitlines() if " -> " in line]
    assert 0 < len(kept) < all_edges
    assert "hidden" in texts(at)
    at.slider(key="map_min_count").set_value(1).run()

    at.text_input(key="map_focus").set_value("shipping").run()
    names = {label.split("\\n")[0] for label in _labels(_graph(at))}
    assert {"shipping-service", "order-service", "orders.placed", "inventory-service"} <= names
    assert "loan-orchestrator" not in names and "workflow-router" not in names
    at.text_input(key="map_focus").set_value("").run()

    at.toggle(key="map_group").set_value(True).run()
    labels = _labels(_graph(at))
    namespaces = {n for (n,) in ro.execute("SELECT DISTINCT service_namespace FROM spans").fetchall()}
    assert {label.split("\\n")[0] for label in labels} >= namespaces
    assert any("uninstrumented peers" in label for label in labels)
    assert len(labels) == len(namespaces) + 1

    at.toggle(key="map_group").set_value(False).run()
    at.selectbox(key="map_node").set_value("svc:shipping-service").run()
    links = [(link.proto.label, link.proto.page) for link in at.get("page_link")]
    assert any(label == "storefront server POST /orders" or "POST /orders" in label for label, _ in links)
    assert any("findings" in target for _, target in links)


def test_system_map_groups_by_namespace_when_there_are_many_services():
    import pandas as pd

    from choreoscope.dashboard.system_map import build, threshold_for

    services = pd.DataFrame([{"service": f"svc-{i:03d}", "virtual": False, "spans": 10, "errors": 0,
                              "workflows": [f"wf{i % 7}"], "namespace": f"team-{i % 12}"} for i in range(400)])
    edges = pd.DataFrame([{"src_service": f"svc-{i % 400:03d}", "dst_service": f"svc-{(i * 7 + 3) % 400:03d}",
                           "via": "call" if i % 3 else "event", "event": None if i % 3 else f"topic-{i % 50}",
                           "count": 1 + i % 90, "workflows": [f"wf{i % 7}"], "inferred": False,
                           "dst_virtual": False} for i in range(1200)])
    m = build(services, edges, None, group=True)
    assert {n.kind for n in m.nodes.values()} == {"namespace"} and len(m.nodes) == 12
    assert len(m.edges) <= 12 * 11
    t = threshold_for(edges, 150)
    assert (edges["count"] >= t).sum() <= 150 < (edges["count"] >= t - 1).sum()
    assert len(build(services, edges, None, min_count=t).edges) <= 150 * 2


def _finding(ro, kind: str) -> str:
    return ro.execute("SELECT finding_id FROM findings WHERE kind = ? ORDER BY confidence DESC LIMIT 1",
                      [kind]).fetchall()[0][0]


def test_implicit_ordering_evidence_is_a_gap_histogram_with_the_early_instances(ro):
    fid = _finding(ro, "implicit_ordering")
    evidence = json.loads(ro.execute("SELECT evidence FROM findings WHERE finding_id = ?", [fid]).fetchall()[0][0])
    at = page("findings", finding=fid)
    # Summary and recommendation come first, then the evidence.
    md = [m.value for m in at.markdown]
    summary = ro.execute("SELECT summary FROM findings WHERE finding_id = ?", [fid]).fetchall()[0][0]
    assert md.index(f"**{summary}**") < md.index("#### Evidence")
    charts = at.get("arrow_vega_lite_chart") or at.get("vega_lite_chart")
    assert charts, "no histogram"
    assert "first_gap_ms" in charts[0].proto.spec and '"bin"' in charts[0].proto.spec
    assert f"{evidence['started_early']} started early" in texts(at)
    instance_links = [link for link in at.get("page_link") if "instance" in link.proto.page]
    assert len(instance_links) >= min(evidence["started_early"], 12)
    assert all("started" in link.proto.label and "ms early" in link.proto.label for link in instance_links[:12])
    code = "\n".join(c.value for c in at.code)
    assert "choreoscope check" in code and "--fail-on implicit_ordering" in code


def test_schema_drift_and_retry_loop_evidence(ro):
    at = page("findings", finding=_finding(ro, "schema_drift"))
    shown = frames_text(at)
    assert "1.4.0" in shown and "1.5.0" in shown and "order.coupon_code" in shown
    at = page("findings", finding=_finding(ro, "retry_loop"))
    charts = at.get("arrow_vega_lite_chart") or at.get("vega_lite_chart")
    assert charts and "attempts" in charts[0].proto.spec
    assert "--fail-on retry_loop" in "\n".join(c.value for c in at.code)


def test_findings_list_links_each_finding_to_its_page(ro):
    at = page("findings")
    targets = [link.proto.query_string for link in at.get("page_link") if link.proto.label
               in ("Evidence as charts", "Open the finding")]
    n = ro.execute("SELECT count(*) FROM findings").fetchall()[0][0]
    assert len(targets) == n and all("finding=" in t for t in targets)


def test_event_catalog_lag_is_on_corrected_clocks_and_names_the_corrected_services(ro):
    at = page("events")
    fixed = ro.execute("SELECT service, offset_ns FROM clock_offsets WHERE offset_ns <> 0").fetchall()
    shown = texts(at)
    assert "skew-corrected clocks" in shown
    for service, _ in fixed:
        assert service in shown
    table = at.dataframe[0].value.set_index("event")
    lag = ro.execute("""SELECT quantile_cont((dst_start_adj - src_start_adj) / 1e6, 0.5) FROM span_edges
                        WHERE via = 'event' AND src_role = 'producer' AND dst_role = 'consumer'
                          AND src_messaging_destination = 'orders.placed'""").fetchall()[0][0]
    assert abs(table.loc["orders.placed", "lag_p50_ms"] - lag) < 1e-6
