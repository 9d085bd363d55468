"""The columnar decode of OTLP protobuf requests (collector/otlp_arrow.py) against the walk it
replaces (upb's parse, otlp.add_resource_spans, SpanBatch.to_arrow): for every request it takes,
the span and link tables must be identical, row for row; any request it cannot reproduce it must
leave to the walk (None). Real inputs: requests made by the OpenTelemetry SDK's own encoder, the
ingest benchmark's requests, the sample and capture dumps as requests, odd and hostile requests,
generated ones (hypothesis) and mutated bodies (fuzz/targets.py's mutator)."""

from __future__ import annotations

import gzip
import importlib.util
import json
import math
import random
import struct

import pyarrow as pa
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from choreoscope.collector import otlp_arrow
from choreoscope.collector.export_decode import PROTOBUF, BadRequest, decode_export, parse_request
from choreoscope.collector.otlp import add_resource_spans, traces_data_from_json
from choreoscope.collector.spanbatch import SpanBatch
from fuzz import targets as T
from tests.paths import REPO
from tests.receiver_fixtures import make_spans
from tests.sdk_dumps import record_spans

SOURCE = "otlp-grpc"


def walk(body: bytes, source: str = SOURCE):
    """What decode_export did for every protobuf body before the columnar path."""
    request = parse_request(body, PROTOBUF, "", 1 << 30)
    batch = SpanBatch(source=source)
    rejected = add_resource_spans(batch, request.resource_spans, where=f"{source} ")
    spans, links = batch.to_arrow()
    return spans, links, rejected


def _assert_same(got: pa.Table, want: pa.Table, what: str) -> None:
    assert got.schema == want.schema, what
    if got.equals(want):
        return
    got_rows, want_rows = got.to_pylist(), want.to_pylist()
    assert len(got_rows) == len(want_rows), f"{what}: {len(got_rows)} rows, the walk {len(want_rows)}"
    for i, (a, b) in enumerate(zip(got_rows, want_rows)):
        diff = {k: (a[k], b[k]) for k in a if a[k] != b[k]}
        assert not diff, f"{what} row {i}: (columnar, walk) {diff}"
    raise AssertionError(f"{what}: tables differ")  # pragma: no cover - types, not values


def check(body: bytes, source: str = SOURCE) -> bool:
    """Assert the columnar path gives the walk's rows or leaves the body to it; True if it took it."""
    got = otlp_arrow.decode_protobuf(body, source)
    try:
        spans, links, rejected = walk(body, source)
    except Exception:  # noqa: BLE001 - the walk refuses the body: the columnar path must too
        assert got is None, "the columnar path took a body the walk refuses"
        return False
    if got is None:
        return False
    assert rejected == 0, "the columnar path took a request with a rejected span"
    _assert_same(got[0], spans, "spans")
    _assert_same(got[1], links, "links")
    return True


def share(bodies: list[bytes]) -> float:
    taken = [check(body) for body in bodies]
    return sum(taken) / len(taken)


# --- inputs -------------------------------------------------------------------------------------

def _bench():
    spec = importlib.util.spec_from_file_location("bench_ingest", REPO / "bench" / "ingest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sdk_requests() -> list[bytes]:
    """Requests the SDK's OTLP encoder makes, one resource or several, from spans with everything
    OTLP carries (tests/receiver_fixtures.py, tests/sdk_dumps.py)."""
    bodies = []
    for i, service in enumerate(("checkout", "payment", "shipping", "ledger")):
        spans = make_spans(service, n_traces=1 + i * 3, tag=f"-{i}")
        bodies.append(encode_spans(spans).SerializeToString())
        if i:
            bodies.append(encode_spans(spans + make_spans("other", 2, tag=f"x{i}")).SerializeToString())
    bodies.append(encode_spans(record_spans()).SerializeToString())
    return bodies


def bench_requests() -> list[bytes]:
    bench = _bench()
    bodies = []
    for links in (0, 1, 3):
        for n_spans, n_attrs in ((1, 1), (10, 0), (37, 7), (100, 10), (150, 20)):
            bodies += bench.build_requests(links, 2, n_spans, n_attrs, links)
    return bodies


def _dump_lines():
    for path in sorted((REPO / "sample_traces").rglob("*.otlp.jsonl")):
        yield path.name, path.read_text().splitlines()
    for path in sorted((REPO / "sample_traces" / "captures").rglob("*.otlp.jsonl.gz")):
        yield path.parent.name, gzip.decompress(path.read_bytes()).decode().splitlines()


def dump_requests() -> dict[str, list[bytes]]:
    """Each line of the sample and capture dumps (OTLP JSON, a file exporter's lines) as the
    protobuf request it would have been; and, per dump, its lines merged into requests of ~20."""
    out = {}
    for name, lines in _dump_lines():
        messages = [traces_data_from_json(json.loads(line)) for line in lines if line.strip()]
        bodies = [ExportTraceServiceRequest(resource_spans=m.resource_spans).SerializeToString()
                  for m in messages]
        for i in range(0, len(messages), 20):
            merged = ExportTraceServiceRequest()
            for m in messages[i:i + 20]:
                merged.resource_spans.extend(m.resource_spans)
            bodies.append(merged.SerializeToString())
        out.setdefault(name, []).extend(bodies)
    return out


# --- the differential tests ---------------------------------------------------------------------

def test_sdk_requests_are_decoded_exactly_and_all_columnar():
    assert share(sdk_requests()) == 1.0


def test_bench_requests_are_decoded_exactly_and_all_columnar():
    # repeated keys (the bench's attribute 7 is its attribute 0 again), arrays, doubles, links
    assert share(bench_requests()) == 1.0


def test_sample_and_capture_dumps_as_requests():
    # the generated scenarios and the captures of real instrumentations (celery/redis, node
    # amqplib/pg, pika, botocore SNS/SQS: SQL and redis statements, ARNs, queue URLs): all columnar
    shares = {name: share(bodies) for name, bodies in dump_requests().items()}
    assert len(shares) >= 9 and all(s == 1.0 for s in shares.values()), shares


def test_decode_export_takes_the_columnar_path_and_gives_the_walks_tables(monkeypatch):
    bench = _bench()
    body = bench.build_requests(0, 1, 400, 10, 2)[0]
    assert len(body) >= otlp_arrow.MIN_BYTES
    calls = []
    real = otlp_arrow.decode_protobuf
    monkeypatch.setattr(otlp_arrow, "decode_protobuf", lambda *a: calls.append(1) or real(*a))
    spans, links, _ = walk(body)
    for encoded, encoding in ((body, ""), (gzip.compress(body), "gzip")):
        out = decode_export(encoded, PROTOBUF, encoding, 1 << 26, SOURCE)
        _assert_same(out.spans, spans, "spans")
        _assert_same(out.links, links, "links")
        assert (out.rejected, out.message) == (0, "")
    assert len(calls) == 2
    # small bodies are walked (the columnar path's fixed cost is not repaid)
    small = bench.build_requests(0, 1, 3, 2)[0]
    decode_export(small, PROTOBUF, "", 1 << 26, SOURCE)
    assert len(calls) == 2
    # a body the columnar path refuses is the walk's to refuse, with its message
    with pytest.raises(BadRequest):
        decode_export(body[: len(body) // 2], PROTOBUF, "", 1 << 26, SOURCE)


# --- odd requests -------------------------------------------------------------------------------

TID, SID, PID = bytes(range(1, 17)), bytes(range(1, 9)), bytes(range(9, 17))


def _value(v) -> AnyValue:
    out = AnyValue()
    if v is None:
        pass
    elif isinstance(v, bool):
        out.bool_value = v
    elif isinstance(v, int):
        out.int_value = v
    elif isinstance(v, float):
        out.double_value = v
    elif isinstance(v, str):
        out.string_value = v
    elif isinstance(v, bytes):
        out.bytes_value = v
    elif isinstance(v, list):
        out.array_value.SetInParent()
        for item in v:
            out.array_value.values.append(_value(item))
    elif isinstance(v, dict):
        out.kvlist_value.SetInParent()
        for key, item in v.items():
            out.kvlist_value.values.append(KeyValue(key=key, value=_value(item)))
    return out


def _kvs(pairs) -> list[KeyValue]:
    return [KeyValue(key=k, value=_value(v)) for k, v in pairs]


def request(spans: list[Span], resource=(("service.name", "svc"),), scope=("lib", "1.0")) -> bytes:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    if resource is not None:
        rs.resource.attributes.extend(_kvs(resource))
    ss = rs.scope_spans.add()
    if scope is not None:
        ss.scope.name, ss.scope.version = scope
    ss.spans.extend(spans)
    return req.SerializeToString()


def span(attrs=(), i: int = 0, **fields) -> Span:
    sp = Span(trace_id=TID, span_id=bytes([i % 255 + 1]) * 8, parent_span_id=PID, name=f"op {i}", kind=2,
              start_time_unix_nano=1_700_000_000_000_000_000 + i, end_time_unix_nano=1_700_000_000_000_001_000 + i)
    sp.attributes.extend(_kvs(attrs))
    for key, value in fields.items():
        if key == "events":
            for name, t, ev_attrs in value:
                ev = sp.events.add(name=name, time_unix_nano=t)
                ev.attributes.extend(_kvs(ev_attrs))
        elif key == "links":
            for trace_id, span_id, state, link_attrs in value:
                lk = sp.links.add(trace_id=trace_id, span_id=span_id, trace_state=state)
                lk.attributes.extend(_kvs(link_attrs))
        elif key == "status":
            sp.status.code, sp.status.message = value
        else:
            setattr(sp, key, value)
    return sp


ODD: dict[str, tuple[bytes, bool | None]] = {
    # name: (body, whether the columnar path must take it; None: either is right)
    "plain": (request([span([("a", "b")])]), True),
    "no attributes": (request([span()]), True),
    "zero trace id": (request([span(trace_id=b"\0" * 16)]), False),
    "short span id": (request([span(span_id=b"\1" * 7)]), False),
    "no span id": (request([span(span_id=b"")]), False),
    "zero parent": (request([span(parent_span_id=b"\0" * 8)]), True),
    "no parent": (request([span(parent_span_id=b"")]), True),
    "short parent": (request([span(parent_span_id=b"\1" * 4)]), False),
    "start beyond int64": (request([span(start_time_unix_nano=2**64 - 1)]), False),
    "kind out of range": (request([span(kind=9), span(kind=-3, i=1), span(kind=5, i=2)]), True),
    "status codes": (request([span(status=(c, m), i=c) for c, m in ((0, ""), (1, "ok"), (2, "boom"), (7, "x"))]),
                     True),
    "trace state": (request([span(trace_state="k=v,x=y"), span(trace_state="", i=1)]), True),
    "repeated keys": (request([span([("a", 1), ("b", "x"), ("a", "last"), ("b", True), ("c", 2.5)])]), True),
    "repeated typed key": (request([span([("http.route", "/a"), ("http.route", "/b"), ("http.route", "")])]),
                           True),
    "nan": (request([span([("x", math.nan)])]), False),
    "infinity": (request([span([("x", -math.inf)])]), False),
    "doubles": (request([span([("x", v)], i=i) for i, v in enumerate(
        (0.0, -0.0, 1.0, 1e16, 1e-7, 0.1, 1 / 3, 5e-324, 1.7976931348623157e308, 123456789.125))]), True),
    "ints": (request([span([("x", v)], i=i) for i, v in enumerate((0, -1, 2**63 - 1, -(2**63)))]), True),
    "null in text": (request([span([("k", "nullable")])]), False),
    "null in key": (request([span([("annulled", 1)])]), False),
    "huge value": (request([span([("big", "x" * 30_000)])]), False),
    "value at the limit": (request([span([("big", "é" * 24_990)])]), None),
    "200 attributes": (request([span([(f"k{j}", j) for j in range(200)])]), False),
    "128 attributes": (request([span([(f"k{j}", j) for j in range(128)])]), True),
    "unicode and control characters": (request([span(
        [("ключ ✓", "é ✓ 😀"), ("ctl", "a\x00b\x01c\x1f\n\t\r\b\f\"\\/\x7f\u2028"), ("q\"k\\", "v")],
        name="naïve \n name", events=[("é\x02", 5, [("x\x1b", "\\\"")])])]), True),
    "empty string values": (request([span([("", ""), ("http.request.method", ""), ("http.method", "GET")])]),
                            True),
    "arrays": (request([span([("s", ["a", "b\n"]), ("i", [1, -2]), ("d", [0.5, 2.0]), ("b", [True, False]),
                              ("mixed", ["a", 1, 2.5, False]), ("empty", [])])]), True),
    "nested array": (request([span([("n", [[1, 2], [3]])])]), False),
    "kvlist": (request([span([("m", {"a": 1, "b": [1, 2]})])]), False),
    "bytes": (request([span([("raw", b"\x00\xff")])]), False),
    "empty value": (request([span([("none", None)])]), False),
    "empty array item": (request([span([("arr", [None])])]), False),
    "events": (request([span(events=[("e1", 1, [("a", 1)]), ("e2", 2**64 - 1, []), ("", 0, [("k", [1])])])]),
               True),
    "129 events": (request([span(events=[(f"e{j}", j, []) for j in range(129)])]), False),
    "links": (request([span(links=[(TID, PID, "a=b", [("n", 1)]), (bytes(16 * [7]), SID, "", [])])]), True),
    "repeated link": (request([span(links=[(TID, PID, "", [("n", 1)]), (TID, PID, "", [("n", 2)])])]), False),
    "zero link id": (request([span(links=[(b"\0" * 16, PID, "", [])])]), False),
    "129 links": (request([span(links=[(TID, bytes([j + 1]) * 8, "", []) for j in range(129)])]), False),
    "arn destination": (request([span([("messaging.system", "aws.sns"),
                                       ("messaging.destination.name", "arn:aws:sns:us-east-1:1:orders")])]), True),
    "url destination": (request([span([("messaging.destination.name", "https://sqs.x/1/q")])]), True),
    "sqs without destination": (request([span([("messaging.system", "aws.sqs"),
                                               ("aws.queue_url", "https://sqs.x/1/q")])]), True),
    "sqs with destination": (request([span([("messaging.system", "aws.sqs"),
                                            ("messaging.destination.name", "q")])]), True),
    "destination template": (request([span([("messaging.destination.template", "user-{id}")])]), True),
    "routing key": (request([span([("messaging.system", "rabbitmq"), ("messaging.destination.name", "pay"),
                                   ("messaging.rabbitmq.routing_key", "payment.requested")])]), True),
    "statement without collection": (request([span([("db.system", "postgresql"),
                                                    ("db.statement", "SELECT * FROM orders")])]), True),
    "statement with collection": (request([span([("db.system", "postgresql"), ("db.sql.table", "orders"),
                                                 ("db.statement", "SELECT * FROM orders")])]), True),
    "typed values": (request([span([
        ("http.response.status_code", 404), ("http.status_code", 500), ("rpc.system", "grpc"),
        ("messaging.operation", "PUBLISH"), ("retry.attempt", "3"), ("peer.service", 7),
        ("server.address", True), ("db.system.name", ["a"]), ("messaging.message.id", 12)])]), True),
    "http status out of range": (request([span([("http.response.status_code", 2**40)]),
                                          span([("http.response.status_code", [200])], i=1)]), True),
    "http status text": (request([span([("http.response.status_code", "200 OK")])]), True),
    "http status double": (request([span([("http.response.status_code", 200.0)])]), True),
    "messaging operation int": (request([span([("messaging.operation.type", 5)])]), True),
    "messaging operation non-ascii": (request([span([("messaging.operation.type", "İ")])]), True),
    "messaging operation array": (request([span([("messaging.operation.type", ["Send", 1]), ("k", 1)]),
                                           span([("messaging.operation", "DELIVER")], i=1)]), True),
    "namespace array": (request([span([("db.system", "sqlite"), ("db.statement", "INSERT INTO t VALUES (1)"),
                                       ("db.operation", "INSERT ['a']"), ("db.name", ["a"])])]), True),
    "temporary destination": (request([span([("messaging.destination.name", "amq.gen-1"),
                                             ("messaging.destination.temporary", True)])]), True),
    "typed double": (request([span([("peer.service", 1.5)])]), True),
    "resource values": (request([span()], resource=(
        ("service.name", 7), ("service.version", True), ("service.namespace", ""), ("l", [1, "a"]),
        ("m", {"k": "v"}), ("d", 0.5), ("service.name", "last"))), True),
    "resource double service": (request([span()], resource=(("service.version", 1.5),)), True),
    "no resource": (request([span()], resource=None), True),
    "empty service name": (request([span()], resource=(("service.name", ""),)), True),
    "no scope": (request([span()], scope=None), True),
    "no spans": (request([]), True),
}


@pytest.mark.parametrize("name", sorted(ODD))
def test_odd_requests(name):
    body, expected = ODD[name]
    taken = check(body)
    if expected is not None:
        assert taken == expected


def test_two_oneof_members_on_the_wire():
    # ptars keeps both members of a oneof sent twice; upb the last: left to the walk
    def field(tag: int, payload: bytes) -> bytes:
        return bytes([tag, len(payload)]) + payload

    value = b"\x0a\x03abc" + b"\x18\x05"  # string_value "abc", then int_value 5
    kv = field(0x0A, b"k") + field(0x12, value)
    sp = span().SerializeToString() + field(0x4A, kv)  # Span.attributes
    body = field(0x0A, field(0x12, field(0x12, sp)))  # resource_spans, scope_spans, spans
    assert ExportTraceServiceRequest.FromString(body).resource_spans[0].scope_spans[0].spans[0] \
        .attributes[0].value.int_value == 5
    assert not check(body)


def test_many_resources_and_scopes():
    req = ExportTraceServiceRequest()
    for r in range(5):
        rs = req.resource_spans.add()
        rs.resource.attributes.extend(_kvs([("service.name", f"s{r}"), ("service.instance.id", r)]))
        for s in range(r % 3 + 1):
            ss = rs.scope_spans.add()
            ss.scope.name = f"scope{s}" if s else ""
            ss.spans.extend(span([("k", r * 10 + s)], i=r * 10 + s) for _ in range(s + 1))
        rs.scope_spans.add()  # no spans
    assert check(req.SerializeToString())


# --- generated and mutated requests ------------------------------------------------------------

KEYS = ["a", "b", "é", "http.route", "http.response.status_code", "http.status_code", "messaging.system",
        "messaging.destination.name", "messaging.operation.type", "db.system", "db.sql.table", "retry.attempt",
        "peer.service", "service.name", "server.address", "k\"\\", "x\ny", "db.statement", "db.query.text",
        "db.name", "db.operation", "aws.queue_url", "messaging.destination.template",
        "messaging.destination.temporary"]


def _random_value(rng: random.Random, depth: int = 0, tame: bool = False):
    kind = rng.randrange(9 if depth == 0 else 6)
    if tame and kind == 8:  # SDK-shaped: no empty values, maps or doubles of any bits
        kind = 0
    if tame and kind == 2:
        return rng.choice([0.5, 1.0, 1e20, -0.0, 1 / 3])
    if kind == 0:
        return rng.choice(["", "v", "GET", "send", "publish", "/a/b", "é✓", "a\"b\\c\n\x01", "200", "12345"])
    if kind == 1:
        return rng.choice([0, 1, -1, 200, 2**31, 2**63 - 1, -(2**63)])
    if kind == 2:
        return struct.unpack("d", rng.randbytes(8))[0] if rng.random() < 0.3 else rng.choice([0.5, 1.0, 1e20, -0.0])
    if kind == 3:
        return rng.random() < 0.5
    if kind == 4:
        return "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(0, 12)))
    if kind == 5:
        return rng.choice(["x" * rng.randrange(1, 50), "nul", "ARN", "arn:aws:sqs:x:1:q", "https://sqs.x/1/q",
                           "SELECT a FROM t", "INSERT INTO t VALUES (1)", "SET x = 1", "aws.sqs", "INSERT shop"])
    if kind in (6, 7):
        return [_random_value(rng, depth + 1, tame) for _ in range(rng.randrange(0, 4))]
    return None if rng.random() < 0.5 else {"k": 1}


def random_request(rng: random.Random) -> bytes:
    """A request of random spans; half of them SDK-shaped (valid ids, tame values), the rest
    with anything (bad ids, NaN, maps, empty values...)."""
    spans = []
    tame = rng.random() < 0.5
    for i in range(rng.randrange(0, 12)):
        attrs = [(rng.choice(KEYS), _random_value(rng, tame=tame)) for _ in range(rng.randrange(0, 14))]
        sp = span(attrs, i=i, kind=rng.randrange(-1, 8))
        if not tame and rng.random() < 0.1:
            sp.trace_id = rng.choice([b"", b"\0" * 16, rng.randbytes(15)])
        if rng.random() < 0.2:
            sp.parent_span_id = rng.choice([b"", b"\0" * 8, rng.randbytes(8)] + ([] if tame else [rng.randbytes(3)]))
        for _ in range(rng.randrange(0, 3) if rng.random() < 0.3 else 0):
            ev = sp.events.add(name=rng.choice(["e", "é", "exception"]), time_unix_nano=rng.randrange(2**64))
            ev.attributes.extend(_kvs([(rng.choice(KEYS), _random_value(rng, tame=tame))
                                       for _ in range(rng.randrange(3))]))
            ev.dropped_attributes_count = rng.choice([0, 0, 3, 2**32 - 1])
        for _ in range(rng.randrange(0, 3) if rng.random() < 0.3 else 0):
            lk = sp.links.add(trace_id=rng.randbytes(16), span_id=rng.choice([rng.randbytes(8), PID]),
                              trace_state=rng.choice(["", "a=b"]))
            lk.attributes.extend(_kvs([(rng.choice(KEYS), _random_value(rng, tame=tame))
                                       for _ in range(rng.randrange(3))]))
        if rng.random() < 0.2:
            sp.status.code, sp.status.message = rng.randrange(-1, 4), rng.choice(["", "m"])
        sp.dropped_attributes_count = rng.choice([0, 0, 0, 1, 2**32 - 1])
        sp.dropped_events_count = rng.choice([0, 0, 5, 2**31])
        sp.dropped_links_count = rng.choice([0, 0, 2**32 - 1])
        spans.append(sp)
    resource = [(rng.choice(KEYS + ["service.version", "service.name"]), _random_value(rng, tame=tame))
                for _ in range(rng.randrange(0, 5))]
    return request(spans, resource=resource, scope=rng.choice([None, ("s", ""), ("s", "1")]))


def test_random_requests():
    rng = random.Random(12)
    bodies = [random_request(rng) for _ in range(400)]
    taken = [check(body) for body in bodies]
    assert sum(taken) >= 100  # the odd half is mostly the walk's; most of the SDK-shaped half columnar


def test_mutated_bodies():
    """fuzz/targets.py's mutator over real requests: whatever the bytes, the columnar path gives
    the walk's rows or leaves the body to the walk (which refuses what it refuses)."""
    rng = random.Random(5)
    seeds = T.seeds("otlp-proto") + sdk_requests()[:3] + _bench().build_requests(0, 2, 5, 7, 1)
    seeds += [p.read_bytes() for p in T.crashers("otlp-proto")]
    for _ in range(600):
        body = rng.choice(seeds)
        for _ in range(rng.randrange(1, 4)):
            body = T.mutate(body, rng)
        check(body)


try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover - hypothesis is a test extra
    given = None

if given is not None:
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.integers(min_value=0, max_value=2**32))
    def test_generated_requests(seed):
        check(random_request(random.Random(seed)))


def test_concurrent_decodes_agree():
    """The receiver decodes in its request threads when it has no decode workers: one ptars
    handler, used by several threads at once."""
    from concurrent.futures import ThreadPoolExecutor

    bodies = _bench().build_requests(0, 24, 60, 8, 1) + sdk_requests()
    alone = [otlp_arrow.decode_protobuf(body, SOURCE) for body in bodies]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda body: otlp_arrow.decode_protobuf(body, SOURCE), bodies * 3))
    for i, got in enumerate(together):
        want = alone[i % len(bodies)]
        assert want is not None and got is not None
        assert got[0].equals(want[0]) and got[1].equals(want[1])


def test_requests_decoded_together_give_each_its_own_rows(monkeypatch):
    """A decode worker takes the requests waiting for it in one columnar pass (export_decode.
    decode_exports): each gets the rows, rejections and errors it would get alone; one the columnar
    path cannot take (bytes attribute), a broken gzip or a truncated body sinks none of the others."""
    from choreoscope.collector.export_decode import TooLarge, decode_exports

    bench = _bench()
    bodies = bench.build_requests(0, 6, 100, 10, 1) + bench.build_requests(1, 2, 0, 0) + sdk_requests()[:4]
    jobs = [(body, PROTOBUF, "", 1 << 26, SOURCE) for body in bodies]
    jobs.append((gzip.compress(bodies[0]), PROTOBUF, "gzip", 1 << 26, SOURCE))
    passes = []
    real = otlp_arrow.decode_protobuf_many
    monkeypatch.setattr(otlp_arrow, "decode_protobuf_many", lambda b, s: passes.append(len(b)) or real(b, s))

    def alone(job):
        try:
            return True, decode_export(*job)
        except Exception as exc:  # noqa: BLE001
            return False, exc

    def assert_same_replies(jobs, replies):
        assert len(replies) == len(jobs)
        for n, (job, (ok, got)) in enumerate(zip(jobs, replies)):
            want_ok, want = alone(job)
            assert ok == want_ok, n
            if not ok:
                assert type(got) is type(want) and str(got) == str(want), n
                continue
            _assert_same(got.spans, want.spans, f"request {n} spans")
            assert (got.links is None) == (want.links is None), n
            if got.links is not None:
                _assert_same(got.links, want.links, f"request {n} links")
            assert (got.rejected, got.message) == (want.rejected, want.message), n

    assert_same_replies(jobs, decode_exports(jobs))
    assert passes == [len(jobs)]  # one pass, none of them walked

    odd = request([span([("blob", b"\x00\x01")])])
    assert otlp_arrow.decode_protobuf(odd, SOURCE) is None
    mixed = [jobs[0], (odd, PROTOBUF, "", 1 << 26, SOURCE), (b"\x1f\x8b broken", PROTOBUF, "gzip", 1 << 26, SOURCE),
             (bodies[1][: len(bodies[1]) // 2], PROTOBUF, "", 1 << 26, SOURCE),
             (gzip.compress(bodies[2]), PROTOBUF, "gzip", 100, SOURCE), *jobs[2:5]]
    replies = decode_exports(mixed)
    assert_same_replies(mixed, replies)
    assert isinstance(replies[2][1], BadRequest) and isinstance(replies[4][1], TooLarge)


# --- the protobuf dump loader -----------------------------------------------------------------

def _store_state(path, monkeypatch, *, columnar: bool, workers: int) -> tuple:
    from choreoscope.collector import loaders, store
    from choreoscope.collector.loaders import load_paths, otlp_proto

    with monkeypatch.context() as m:
        m.setattr(loaders, "TASK_BYTES", 200_000)
        m.setattr(otlp_proto, "TASK_BYTES", 200_000)
        if not columnar:
            m.setattr(otlp_arrow, "decode_protobuf", lambda *a: None)
        db = path.with_suffix(f".{columnar}{workers}.duckdb")
        con = store.connect(db)
        res = load_paths(con, [path], workers=workers).files[0]
        state = (res.errors, res.spans_loaded, res.spans_rejected,
                 con.execute("SELECT * FROM spans ORDER BY trace_id, span_id").fetchall(),
                 con.execute("SELECT * FROM span_links ORDER BY ALL").fetchall())
        con.close()
    return state


def test_a_framed_protobuf_dump_loads_the_walks_rows_with_large_messages_by_columns(tmp_path, monkeypatch):
    """The Collector file exporter's proto format: its large messages go the columnar way, serially
    and in the parse workers, and the store holds what the walk stored; a small message and a
    broken last frame are the walk's, as before."""
    bench = _bench()
    bodies = [*bench.build_requests(0, 4, 300, 10, 2), sdk_requests()[0]]
    assert sum(len(b) >= otlp_arrow.MIN_BYTES for b in bodies) == 4
    framed = b"".join(len(b).to_bytes(4, "big") + b for b in bodies) + (9999).to_bytes(4, "big") + b"\x0a\x05"
    dump = tmp_path / "spans.otlp.pb"
    dump.write_bytes(framed)
    calls = []
    real = otlp_arrow.decode_protobuf
    monkeypatch.setattr(otlp_arrow, "decode_protobuf", lambda *a: calls.append(1) or real(*a))
    serial = _store_state(dump, monkeypatch, columnar=True, workers=0)
    assert len(calls) == 3  # the large messages but the first (which tells the format: walked)
    assert serial == _store_state(dump, monkeypatch, columnar=False, workers=0)
    assert serial == _store_state(dump, monkeypatch, columnar=True, workers=2)
    assert serial[1] == sum(walk(b)[0].num_rows for b in bodies)
    assert len(serial[0]) == 1 and "truncated" in serial[0][0]
