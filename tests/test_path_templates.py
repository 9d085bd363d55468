"""HTTP spans without a route are labelled by their URL path with path variables found by
cardinality across spans (analysis/steps.py): many identifier-like values at one position under
one prefix become {id}; a fixed vocabulary (endpoints, versions, locales, files) and too few values
stay. Stores are built from spans recorded by the real OpenTelemetry SDK, exported as OTLP protobuf
and loaded like any dump."""

from __future__ import annotations

import random
import string

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from choreoscope.analysis.pipeline import run_pipeline
from choreoscope.analysis.steps import build_steps
from choreoscope.collector import store
from choreoscope.collector.loaders import load_paths
from tests.paths import REAL_TRACES
from tests.sdk_dumps import to_otlp_proto

OTEL_TUI = REAL_TRACES / "otel-tui" / "test_data.json"


def _codes(n: int, seed: int = 7) -> list[str]:
    """Product codes shaped like the OpenTelemetry demo's (10 upper-case letters and digits)."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        code = "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(10))
        if any(c.isdigit() for c in code) and any(c.isalpha() for c in code):
            out.append(code)
    return out


def _names(n: int, seed: int = 11) -> list[str]:
    """Lower-case user names of letters only (no digits, not locale-shaped)."""
    rng = random.Random(seed)
    return sorted({"".join(rng.choice(string.ascii_lowercase) for _ in range(6)) for _ in range(n * 2)})[:n]


def _store(tmp_path, requests, name="paths"):
    """A store of one span per request (service, kind, method, url[, route]), recorded by the SDK."""
    exporter = InMemorySpanExporter()
    providers = {}
    for service, kind, method, url, *route in requests:
        if service not in providers:
            providers[service] = TracerProvider(resource=Resource.create({"service.name": service}))
            providers[service].add_span_processor(SimpleSpanProcessor(exporter))
        attrs = {"http.request.method": method, "url.full": f"http://shop:8080{url}"}
        if route:
            attrs["http.route"] = route[0]
        with providers[service].get_tracer("t").start_as_current_span(method, kind=kind, attributes=attrs):
            pass
    for provider in providers.values():
        provider.shutdown()
    dump = tmp_path / f"{name}.binpb"
    dump.write_bytes(to_otlp_proto(list(exporter.get_finished_spans())))
    con = store.connect(tmp_path / f"{name}.duckdb")
    result = load_paths(con, [str(dump)])
    assert result.ok, result.errors
    return con


def _client(urls, method="GET", service="loadgenerator"):
    return [(service, SpanKind.CLIENT, method, u) for u in urls]


def _operations(con, service=None) -> dict[str, int]:
    build_steps(con)
    where = "WHERE service = ?" if service else ""
    rows = con.execute(f"SELECT operation, count(*) FROM span_labels {where} GROUP BY 1",
                       [service] if service else []).fetchall()
    assert not con.execute("SELECT table_name FROM duckdb_tables() WHERE temporary").fetchall()
    return dict(rows)


def test_many_product_codes_are_one_route_and_the_vocabulary_stays(tmp_path):
    codes = _codes(12)
    urls = [f"/api/products/{c}" for c in codes for _ in range(1 + codes.index(c) % 3)]
    urls += ["/api/products", "/api/products", "/api/cart", "/api/checkout", "/api/products/featured", "/"]
    con = _store(tmp_path, _client(urls) + _client(["/api/cart", "/api/checkout"], method="POST"))
    ops = _operations(con)
    assert ops == {
        "GET /api/products/{id}": sum(1 + i % 3 for i in range(12)),
        "GET /api/products": 2, "GET /api/cart": 1, "GET /api/checkout": 1,
        "GET /api/products/featured": 1, "GET /": 1, "POST /api/cart": 1, "POST /api/checkout": 1,
    }
    run_pipeline(con)
    entries = con.execute("SELECT entry_operation, count(*) FROM workflows GROUP BY 1").fetchall()
    assert dict(entries)["GET /api/products/{id}"] == 1
    assert all(n == 1 for _, n in entries) and len(entries) == len(ops)


def test_too_few_products_stay_distinct(tmp_path):
    codes = _codes(4)
    ops = _operations(_store(tmp_path, _client([f"/api/products/{c}" for c in codes[:2]] * 5)))
    assert ops == {f"GET /api/products/{c}": 5 for c in codes[:2]}


def test_the_threshold_counts_per_service_role_and_method(tmp_path):
    """Three codes at each of two services, or by GET and by DELETE, are too few at each."""
    codes = _codes(6)
    requests = (_client([f"/api/products/{c}" for c in codes[:3]], service="a")
                + _client([f"/api/products/{c}" for c in codes[3:]], service="b")
                + _client([f"/api/items/{c}" for c in codes[:3]])
                + _client([f"/api/items/{c}" for c in codes[3:]], method="DELETE"))
    ops = _operations(_store(tmp_path, requests))
    assert len(ops) == 12 and not any("{id}" in op for op in ops)


def test_users_with_settings_look_alikes(tmp_path):
    """`/users/alice/settings` is never compared with `/users/settings` (another segment count);
    a few user names stay; many thinly used names become {id} while the often used `settings`
    at the same position keeps its literal."""
    few = ["/users/alice/settings", "/users/bob/settings", "/users/settings", "/users/alice", "/users/bob"]
    ops = _operations(_store(tmp_path, _client(few), name="few"))
    assert set(ops) == {f"GET {u}" for u in few}

    names = _names(60)
    many = [f"/users/{n}" for n in names] + [f"/users/{n}/settings" for n in names] + ["/users/settings"] * 10
    ops = _operations(_store(tmp_path, _client(many), name="many"))
    assert ops == {"GET /users/{id}": 60, "GET /users/{id}/settings": 60, "GET /users/settings": 10}


def test_versions_locales_and_files_stay(tmp_path):
    urls = [f"/v{i}/orders" for i in range(1, 8)] + ["/v2beta1/orders", "/v1alpha/orders"]
    urls += [f"/{loc}/products" for loc in ("en", "de", "fr", "en-US", "pt-BR", "zh-Hant", "ja")]
    files = ["app.js", "vendor.js", "main.css", "logo.png", "chunk-1a2b.js", "chunk-9f8e.js", "font.woff2"]
    urls += [f"/static/{f}" for f in files]
    urls += [f"/assets/file{i}.js" for i in range(60)]
    ops = _operations(_store(tmp_path, _client(urls)))
    assert set(ops) == {f"GET {u}" for u in urls}


def test_nested_variables_and_ids_after_a_variable(tmp_path):
    codes = _codes(12)
    urls = [f"/users/{codes[i]}/orders/{codes[11 - i]}" for i in range(6)]
    urls += [f"/users/{c}" for c in codes[:6]] + ["/users/me"]
    ops = _operations(_store(tmp_path, _client(urls)))
    assert ops == {"GET /users/{id}/orders/{id}": 6, "GET /users/{id}": 6, "GET /users/me": 1}


def test_numbers_uuids_and_routes_keep_their_labels(tmp_path):
    uuid = "123e4567-e89b-12d3-a456-426614174000"
    codes = _codes(6)
    requests = _client(["/orders/42", f"/carts/{uuid}", "/blobs/0123456789abcdef0123"])
    # A server span with a route is labelled by the route however many codes its URLs hold.
    requests += [("shop", SpanKind.SERVER, "GET", f"/p/{c}", "/p/:code") for c in codes]
    ops = _operations(_store(tmp_path, requests))
    assert ops == {"GET /orders/{id}": 1, "GET /carts/{id}": 1, "GET /blobs/{id}": 1, "GET /p/:code": 6}


def test_messaging_labels_are_not_path_templated(tmp_path):
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "relay"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    for code in _codes(8):
        with tracer.start_as_current_span(f"queue/{code} send", kind=SpanKind.PRODUCER, attributes={
                "messaging.system": "rabbitmq", "messaging.destination.name": f"queue/{code}",
                "messaging.operation.type": "send", "http.request.method": "POST"}):
            pass
    provider.shutdown()
    dump = tmp_path / "m.binpb"
    dump.write_bytes(to_otlp_proto(list(exporter.get_finished_spans())))
    con = store.connect(tmp_path / "m.duckdb")
    assert load_paths(con, [str(dump)]).ok
    ops = _operations(con)
    assert set(ops) == {f"queue/{c}" for c in _codes(8)}


@pytest.mark.skipif(not OTEL_TUI.is_file(), reason="../shared/real_traces is absent")
def test_otel_demo_capture_has_one_workflow_per_route(tmp_path):
    """The OpenTelemetry demo's load generator calls seven routes; its ten product codes were ten
    workflow types (20 workflows in all before path templating by cardinality, 11 after)."""
    con = store.connect(tmp_path / "otel-tui.duckdb")
    assert load_paths(con, [str(OTEL_TUI)]).ok
    run_pipeline(con)
    per_entry = con.execute("SELECT entry_service, entry_role, entry_operation, count(*) FROM workflows "
                            "GROUP BY ALL").fetchall()
    assert all(n == 1 for *_, n in per_entry)
    assert sorted(op for svc, _, op, _ in per_entry if svc == "loadgenerator") == [
        "GET /", "GET /api/cart", "GET /api/data/", "GET /api/products/{id}", "GET /api/recommendations",
        "POST /api/cart", "POST /api/checkout",
    ]
    assert con.execute("SELECT count(*) FROM workflows").fetchone()[0] == 11
    products = con.execute("SELECT service, count(*) FROM span_labels WHERE operation LIKE '%/api/products/%' "
                           "GROUP BY 1").fetchall()
    assert {s for s, _ in products} == {"loadgenerator", "frontend", "frontend-proxy"}
    assert not con.execute("SELECT count(*) FROM span_labels WHERE regexp_matches(operation, "
                           "'/api/products/[A-Z0-9]{10}')").fetchone()[0]
