"""The scenario generator: deterministic dumps, the features each story promises, consistent truth."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import pytest
import yaml
from opentelemetry.sdk.trace.export import ConsoleSpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from choreoscope.collector import semconv as sc
from choreoscope.collector.otlp import traces_data_from_json
from choreoscope.sample_traces import SCENARIOS
from choreoscope.sample_traces.asyncapi_docs import ASYNCAPI_2, ASYNCAPI_SCENARIOS
from choreoscope.sample_traces.generate import DUMPS_DIR, generate_spans, main, run_scenario, scenario_dir


@pytest.fixture(scope="module")
def spans_by_scenario():
    return {name: generate_spans(name) for name in SCENARIOS}


def _svc(span) -> str:
    return span.resource.attributes[sc.SERVICE_NAME]


def _dest(span):
    return sc.first(span.attributes, sc.MESSAGING_DESTINATION)


def test_regenerating_gives_the_committed_dumps_byte_for_byte(tmp_path):
    assert main(["--out", str(tmp_path)]) == 0
    for name in SCENARIOS:
        committed = DUMPS_DIR / f"{name}.otlp.jsonl"
        assert (tmp_path / committed.name).read_bytes() == committed.read_bytes(), name
    total = sum((DUMPS_DIR / f"{n}.otlp.jsonl").stat().st_size for n in SCENARIOS)
    assert total < 4_000_000


def test_a_different_seed_changes_ids_and_timings():
    a = generate_spans("hybrid_billing", seed=7, instances=3)
    b = generate_spans("hybrid_billing", seed=8, instances=3)
    assert [s.name for s in a] == [s.name for s in b]
    assert a[0].context.trace_id != b[0].context.trace_id


@pytest.mark.parametrize("name", SCENARIOS)
def test_committed_dump_parses_as_otlp_json_with_every_span(name, spans_by_scenario):
    lines = (DUMPS_DIR / f"{name}.otlp.jsonl").read_text().splitlines()
    count, kinds, linked, hex_ids = 0, Counter(), 0, True
    for line in lines:
        obj = json.loads(line)
        hex_ids &= all(len(s["traceId"]) == 32 and len(s["spanId"]) == 16
                       for rs in obj["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"])
        data = traces_data_from_json(obj)
        for rs in data.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    count += 1
                    kinds[span.kind] += 1
                    linked += len(span.links)
    spans = spans_by_scenario[name]
    assert hex_ids
    assert count == len(spans)
    assert len(lines) > 1  # a few hundred spans per line, like the Collector's file exporter
    assert linked == sum(len(s.links) for s in spans)
    assert kinds[2] and kinds[4] or kinds[3]  # SERVER + PRODUCER, or CLIENT calls


def test_ecommerce_has_every_promised_feature(spans_by_scenario):
    spans = spans_by_scenario["ecommerce"]
    by_id = {s.context.span_id for s in spans}
    kinds = {s.kind for s in spans}
    assert kinds == {SpanKind.SERVER, SpanKind.CLIENT, SpanKind.PRODUCER, SpanKind.CONSUMER}
    consumers = [s for s in spans if s.kind == SpanKind.CONSUMER]
    # every consumer carries a message id, and it matches a producer's (except the orphan)
    produced = {sc.first(s.attributes, sc.MESSAGING_MESSAGE_ID) for s in spans if s.kind == SpanKind.PRODUCER}
    for c in consumers:
        mid = sc.first(c.attributes, sc.MESSAGING_MESSAGE_ID)
        assert mid
        assert (mid in produced) == (_dest(c) != "prices.updated")
    # continuing consumers are children of the producer span; analytics starts new traces with a link
    producers = {s.context.span_id: s for s in spans if s.kind == SpanKind.PRODUCER}
    for c in consumers:
        if _svc(c) == "analytics-service":
            assert c.parent is None and len(c.links) == 1
            assert c.links[0].context.span_id in producers
            assert c.attributes[sc.MESSAGING_OPERATION[0]] == "receive"
        elif _dest(c) == "prices.updated":
            assert c.parent is None and not c.links  # orphan
        else:
            assert c.parent.span_id in producers
    # old and new conventions side by side
    inv = [s for s in spans if _svc(s) == "inventory-service" and s.kind == SpanKind.CONSUMER]
    assert all(s.attributes["messaging.operation"] == "process" and "messaging.destination" in s.attributes
               for s in inv)
    assert any(s.attributes.get("messaging.operation") == "publish" for s in spans)
    assert any(s.attributes.get("db.sql.table") == "reservations" for s in spans)
    assert any(s.attributes.get("db.collection.name") == "reservations" for s in spans)
    # shipping: failed attempts with an exception event, redelivered with messaging.retry.attempt
    ship = [s for s in consumers if _svc(s) == "shipping-service"]
    failed = [s for s in ship if s.status.status_code == StatusCode.ERROR]
    assert failed and all(s.events[0].name == "exception" for s in failed)
    assert all(s.status.description == "reservation not found" for s in failed)
    assert any(s.attributes.get("messaging.retry.attempt") for s in ship)
    # callback: shipping's CLIENT GET is the parent of order-service's GET /orders/{id}
    callbacks = [s for s in spans if _svc(s) == "order-service" and s.name == "GET /orders/{id}"]
    assert len(callbacks) == 40 and all(s.parent.span_id in by_id for s in callbacks)
    # schema drift on orders.placed between 1.4.0 and 1.5.0; dead event produced
    placed = [s for s in spans if _dest(s) == "orders.placed" and s.kind == SpanKind.PRODUCER]
    keys = {s.resource.attributes[sc.SERVICE_VERSION]: {k for k in s.attributes if k.startswith("order.")}
            for s in placed}
    assert keys["1.5.0"] - keys["1.4.0"] == {"order.channel"}
    assert keys["1.4.0"] - keys["1.5.0"] == {"order.coupon_code"}
    assert any(_dest(s) == "inventory.low" for s in spans)
    assert not any(_dest(s) == "inventory.low" for s in consumers)
    # resources carry name, version and namespace
    assert all(s.resource.attributes[sc.SERVICE_NAMESPACE] == "shop" for s in spans)


def test_shipping_succeeds_only_after_inventory_and_soon_after():
    spans = generate_spans("ecommerce", clock_offsets_ms={})
    by_trace: dict = {}
    for s in spans:
        if s.kind == SpanKind.CONSUMER and _dest(s) == "orders.placed":
            by_trace.setdefault(s.context.trace_id, []).append(s)
    gaps = []
    for group in by_trace.values():
        inv = [s for s in group if _svc(s) == "inventory-service"]
        ok = [s for s in group if _svc(s) == "shipping-service" and s.status.status_code != StatusCode.ERROR]
        if inv and ok:
            gaps.append((ok[0].start_time - inv[0].end_time) / 1e6)
    assert len(gaps) == 40
    assert all(0 <= g < 40 for g in gaps), sorted(gaps)  # within one redelivery interval plus lag


def test_loan_saga_compensates_except_when_it_forgets():
    spans = generate_spans("loan_saga")
    roots = [s for s in spans if s.parent is None]
    assert len(roots) == 40 and {_svc(s) for s in roots} == {"loan-orchestrator"}
    credit_routes = {s.attributes[sc.HTTP_ROUTE[0]] for s in spans
                     if _svc(s) == "credit-service" and s.kind == SpanKind.SERVER}
    assert len(credit_routes) >= 6
    failed = {s.context.trace_id for s in roots if s.status.status_code == StatusCode.ERROR}
    released = {s.context.trace_id for s in spans if s.name == "DELETE /credit-holds/{id}"}
    assert failed and released < failed and failed - released
    assert any("http.status_code" in s.attributes for s in spans)
    assert any("http.response.status_code" in s.attributes for s in spans)


def test_event_router_loops_back_to_ocr():
    spans = generate_spans("event_router", instances=4)
    per_trace = Counter((s.context.trace_id, _dest(s)) for s in spans
                        if s.kind == SpanKind.PRODUCER and _dest(s) == "ocr.requested")
    assert sorted(per_trace.values()) == [1, 1, 1, 2]  # instance 2 re-runs OCR


def test_hybrid_billing_broken_propagation_leaves_only_the_message_id():
    spans = generate_spans("hybrid_billing", instances=6)
    producers = {sc.first(s.attributes, sc.MESSAGING_MESSAGE_ID): s for s in spans if s.kind == SpanKind.PRODUCER}
    dunning = [s for s in spans if _svc(s) == "dunning-service" and s.kind == SpanKind.CONSUMER]
    assert len(dunning) == 6
    for s in dunning:
        assert s.parent is None and not s.links
        producer = producers[sc.first(s.attributes, sc.MESSAGING_MESSAGE_ID)]
        assert producer.context.trace_id != s.context.trace_id
    crm = [s for s in spans if _svc(s) == "crm-service" and s.kind == SpanKind.CONSUMER]
    assert all(s.parent is None and len(s.links) == 1 for s in crm)
    assert any(s.attributes.get("http.request.resend_count") == 1 for s in spans)


def test_clock_offsets_shift_exactly_the_named_service():
    base = generate_spans("notification_fanout", instances=3, clock_offsets_ms={})
    skewed = generate_spans("notification_fanout", instances=3, clock_offsets_ms={"loyalty-service": 42.5})
    assert len(base) == len(skewed)
    for a, b in zip(base, skewed, strict=True):
        assert a.context.span_id == b.context.span_id
        shift = 42_500_000 if _svc(a) == "loyalty-service" else 0
        assert (b.start_time - a.start_time, b.end_time - a.end_time) == (shift, shift)
        for ea, eb in zip(a.events, b.events, strict=True):
            assert eb.timestamp - ea.timestamp == shift


def test_base_time_moves_everything():
    a = generate_spans("loan_saga", instances=1)
    b = generate_spans("loan_saga", instances=1, base_time_ns=a[0].start_time + 10**12)
    assert all(y.start_time - x.start_time == a[0].start_time + 10**12 - 1_736_931_600_000_000_000
               for x, y in zip(a, b, strict=True))


def _named_services(doc: dict) -> set[str]:
    names = set()
    for wf in doc.get("workflows", []):
        names.add(wf["entry"]["service"])
        for ev in wf.get("events", []):
            names |= set(ev.get("producers", [])) | set(ev.get("consumers", []))
        for c in wf.get("calls", []):
            names |= {c["caller"], c["callee"]}
        for o in wf.get("orderings", []):
            names |= {o["before"], o["after"]}
        for c in wf.get("compensations", []):
            names |= {c["step"]["service"], c["compensated_by"]["service"]}
    return names | set(doc.get("services", {}))


@pytest.mark.parametrize("name", SCENARIOS)
def test_truth_and_intended_name_only_real_services(name, spans_by_scenario):
    spans = spans_by_scenario[name]
    seen = {_svc(s) for s in spans}
    peers = {sc.first(s.attributes, sc.SERVER_ADDRESS) for s in spans if s.kind == SpanKind.CLIENT} - {None}
    base = scenario_dir(name)
    truth = yaml.safe_load((base / "truth.yaml").read_text())
    intended = yaml.safe_load((base / "intended.yaml").read_text())
    assert truth["scenario"] == name and intended["version"] == 1
    declared_only = {svc for c in truth["conformance"] if c["kind"] == "missing_edge" for svc in c["services"]}
    events = {_dest(s) for s in spans}
    for edge in truth["edges"]:
        assert edge["source"] in seen
        assert edge["target"] in (peers if edge.get("external") else seen), edge
        assert edge["via"] in ("call", "event") and (edge["via"] == "call" or edge["event"] in events)
    for item in truth["findings"] + truth["must_not"] + truth["conformance"]:
        assert set(item["services"]) <= seen | declared_only, item
    for wf in truth["workflows"]:
        assert wf["entry"]["service"] in seen and wf["pattern"] in ("orchestration", "choreography", "hybrid")
    assert set(truth["clock_offsets_ms"]) <= seen
    assert _named_services(intended) <= seen | peers | declared_only
    assert declared_only - seen <= _named_services(intended)


@pytest.mark.parametrize("name", ASYNCAPI_SCENARIOS)
def test_asyncapi_documents_follow_their_version_semantics(name, spans_by_scenario):
    seen = {_svc(s) for s in spans_by_scenario[name]}
    truth = yaml.safe_load((scenario_dir(name) / "truth.yaml").read_text())
    declared_only = {svc for c in truth["conformance"] if c["kind"] == "missing_edge" for svc in c["services"]}
    intended = yaml.safe_load((scenario_dir(name) / "intended.yaml").read_text())
    expected = {(p, ev["name"], "send") for wf in intended["workflows"] for ev in wf.get("events", [])
                for p in ev["producers"]}
    expected |= {(c, ev["name"], "receive") for wf in intended["workflows"] for ev in wf.get("events", [])
                 for c in ev["consumers"]}
    found, versions = set(), Counter()
    for path in sorted(Path(scenario_dir(name) / "asyncapi").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        service = doc["info"]["title"]
        assert service in seen | declared_only and path.stem == service
        versions[doc["asyncapi"]] += 1
        if doc["asyncapi"].startswith("2."):
            for channel, item in doc["channels"].items():
                # 2.x: publish = the application receives, subscribe = the application sends
                found |= {(service, channel, "receive") for _ in [item.get("publish")] if _}
                found |= {(service, channel, "send") for _ in [item.get("subscribe")] if _}
        else:
            for op in doc["operations"].values():
                channel = doc["channels"][op["channel"]["$ref"].rsplit("/", 1)[1]]
                found.add((service, channel["address"], op["action"]))
    assert found == expected
    assert versions["2.6.0"] == len(ASYNCAPI_2[name]) >= 2 and versions["3.0.0"] >= 2


def test_run_scenario_feeds_any_sdk_exporter_and_leaves_it_open():
    out = io.StringIO()
    exporter = ConsoleSpanExporter(out=out)
    run_scenario("hybrid_billing", exporter, instances=2)
    first = out.getvalue().count('"kind": "SpanKind.')
    assert first == len(generate_spans("hybrid_billing", instances=2))
    run_scenario("hybrid_billing", exporter, instances=1)  # still usable: shutdown is the caller's
    assert out.getvalue().count('"kind": "SpanKind.') > first


def test_all_dumps_load_into_one_store_without_id_collisions(tmp_path):
    from choreoscope.collector import store
    from choreoscope.collector.loaders import load_paths

    con = store.connect(tmp_path / "all.duckdb")
    result = load_paths(con, [str(p) for p in sorted(DUMPS_DIR.glob("*.otlp.jsonl"))])
    assert result.ok and result.duplicates_skipped == 0
    assert store.scalar(con, "SELECT count(*) FROM spans") == result.spans_loaded
