"""Fuzz targets: every place choreoscope reads bytes it did not write.

Each target takes one input (bytes) and returns normally when choreoscope handled it as its
contract says: the OTLP decoders answer a `DecodedExport` or raise `BadRequest`/`TooLarge`
(the receivers' 400/413); the dump loaders never raise and leave the store usable; the intended
readers return a model or raise `IntendedError` (a message naming the file). Anything else
escaping a target is a crash: a bug the receiver would answer with 500, or a command with a
traceback.

Used by fuzz/run.py (atheris, coverage-guided, or a seeded random mutator without it), by the
short seeded property tests (tests/test_fuzz_targets.py) and by the crasher regression test
(tests/test_fuzz_crashers.py, one file per crasher in tests/fuzz_crashers/<target>/).
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

REPO = Path(__file__).resolve().parent.parent
CRASHERS = REPO / "tests" / "fuzz_crashers"
LIMIT = 4 << 20  # decoded-body limit the decoder targets use (the receiver's --max-request-bytes)


# --- seeds: small valid inputs of every kind -------------------------------------------------

def seed_request() -> ExportTraceServiceRequest:
    """An export request with everything OTLP carries: typed, array and nested attributes, events,
    links, status, trace state, two resources."""
    req = ExportTraceServiceRequest()
    for r in range(2):
        rs = req.resource_spans.add()
        kv = rs.resource.attributes.add(key="service.name")
        kv.value.string_value = f"svc-{r}"
        ss = rs.scope_spans.add()
        ss.scope.name, ss.scope.version = "fuzz.scope", "1.0"
        for s in range(2):
            span = ss.spans.add()
            span.trace_id = bytes(range(1 + r, 17 + r))
            span.span_id = bytes(range(1 + s, 9 + s))
            if s:
                span.parent_span_id = bytes(range(1, 9))
            span.name, span.kind = f"orders publish {s}", 1 + s * 3
            span.start_time_unix_nano, span.end_time_unix_nano = 1_700_000_000_000_000_000, 1_700_000_000_500_000_000
            span.trace_state = "vendor=v1"
            span.status.code, span.status.message = 2, "declined"
            attrs = span.attributes
            attrs.add(key="messaging.system").value.string_value = "kafka"
            attrs.add(key="http.response.status_code").value.int_value = 201
            attrs.add(key="ratio").value.double_value = 0.25
            attrs.add(key="retry").value.bool_value = True
            attrs.add(key="blob").value.bytes_value = b"\x00\xff"
            arr = attrs.add(key="tags").value.array_value
            arr.values.add().string_value = "a"
            arr.values.add().int_value = 2
            nested = attrs.add(key="nested").value.kvlist_value
            nested.values.add(key="inner").value.string_value = "x"
            event = span.events.add(name="exception", time_unix_nano=1_700_000_000_100_000_000)
            event.attributes.add(key="exception.type").value.string_value = "Declined"
            link = span.links.add(trace_id=bytes(range(20, 36)), span_id=bytes(range(40, 48)))
            link.attributes.add(key="messaging.message.id").value.string_value = "m-1"
    return req


def _hex_ids(node):
    """OTLP JSON spells ids in hex (protobuf's JSON mapping would write base64)."""
    if isinstance(node, dict):
        return {k: (base64.b64decode(v).hex() if k in ("traceId", "spanId", "parentSpanId") else _hex_ids(v))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_hex_ids(v) for v in node]
    return node


def seed_json() -> bytes:
    return json.dumps(_hex_ids(json_format.MessageToDict(seed_request()))).encode()


JAEGER_SEED = json.dumps({"data": [{
    "traceID": "0102030405060708090a0b0c0d0e0f10",
    "spans": [{"traceID": "0102030405060708090a0b0c0d0e0f10", "spanID": "0102030405060708",
               "operationName": "GET /orders", "startTime": 1700000000000000, "duration": 1500,
               "references": [{"refType": "CHILD_OF", "traceID": "0102030405060708090a0b0c0d0e0f10",
                               "spanID": "0807060504030201"}],
               "tags": [{"key": "span.kind", "type": "string", "value": "server"},
                        {"key": "http.status_code", "type": "int64", "value": 200},
                        {"key": "error", "type": "bool", "value": True},
                        {"key": "blob", "type": "binary", "value": "AAE="},
                        {"key": "ratio", "type": "float64", "value": 0.5}],
               "logs": [{"timestamp": 1700000000000100, "fields": [{"key": "event", "type": "string",
                                                                      "value": "exception"}]}],
               "processID": "p1"}],
    "processes": {"p1": {"serviceName": "orders", "tags": [{"key": "host", "type": "string", "value": "h"}]}},
}]}).encode()

ZIPKIN_SEED = json.dumps([{
    "traceId": "0102030405060708090a0b0c0d0e0f10", "id": "0102030405060708", "parentId": "0807060504030201",
    "name": "get /orders", "kind": "SERVER", "timestamp": 1700000000000000, "duration": 1500,
    "localEndpoint": {"serviceName": "orders", "ipv4": "10.0.0.1"},
    "remoteEndpoint": {"serviceName": "db", "port": 5432},
    "annotations": [{"timestamp": 1700000000000100, "value": "ws"}],
    "tags": {"http.method": "GET", "error": "boom"},
}]).encode()


def _framed(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


def seeds(target: str) -> list[bytes]:
    """Valid inputs for `target`, the starting corpus of the mutators."""
    proto = seed_request().SerializeToString()
    body_json = seed_json()
    if target == "otlp-proto":
        return [proto, b""]
    if target == "otlp-json":
        return [body_json, b"{}", b'{"resourceSpans": []}']
    if target == "otlp-gzip":  # first byte picks protobuf or JSON, the rest is the gzip body
        return [b"p" + gzip.compress(proto), b"j" + gzip.compress(body_json)]
    if target == "loaders":
        # the OTLP JSON line is a file-exporter line ({"resourceSpans"}); TracesData has the same bytes
        return [body_json + b"\n" + body_json + b"\n", proto, _framed(proto) + _framed(proto),
                JAEGER_SEED, ZIPKIN_SEED, gzip.compress(body_json)]
    if target == "intended":
        root = REPO / "sample_traces" / "scenarios"
        return [p.read_bytes() for p in sorted(root.glob("*/intended.yaml"))[:2]] + \
               [p.read_bytes() for p in sorted(root.glob("*/asyncapi/*.yaml"))[:3]]
    raise KeyError(target)


# --- the targets ----------------------------------------------------------------------------

def decode_body(data: bytes, content_type: str, encoding: str = "identity") -> None:
    """The receivers' decode path: decoded, or refused as a bad request / too large."""
    from choreoscope.collector.export_decode import BadRequest, TooLarge, decode_export

    try:
        decode_export(data, content_type, encoding, LIMIT, "fuzz")
    except (BadRequest, TooLarge):
        pass
    except (RecursionError, SystemError):
        # too deep for the stdlib JSON parser or upb: the receivers answer these 400 /
        # INVALID_ARGUMENT (collector.otlp.UNDECODABLE). Any other exception is a bug.
        pass


def target_otlp_proto(data: bytes) -> None:
    decode_body(data, "application/x-protobuf")


def target_otlp_json(data: bytes) -> None:
    decode_body(data, "application/json")


def target_otlp_gzip(data: bytes) -> None:
    ctype = "application/json" if data[:1] == b"j" else "application/x-protobuf"
    decode_body(data[1:], ctype, "gzip")


class _LoaderStore:
    """One store and one scratch file reused across inputs (a store per input would be the
    bottleneck); duplicates of earlier inputs are skipped, which is loader behaviour too."""

    def __init__(self) -> None:
        from choreoscope.collector import store

        self.dir = tempfile.mkdtemp(prefix="choreoscope-fuzz-")
        self.con = store.connect(os.path.join(self.dir, "fuzz.duckdb"))
        self.path = os.path.join(self.dir, "input")
        self.inputs = 0


_loader_store: _LoaderStore | None = None


def target_loaders(data: bytes) -> None:
    """A dump file as `choreoscope load` reads it (format detected from the content, .gz too).
    load_file promises never to raise for bad input, and the store must take the next file."""
    global _loader_store
    from choreoscope.collector.loaders import load_file

    if _loader_store is None:
        _loader_store = _LoaderStore()
    st = _loader_store
    with open(st.path, "wb") as f:
        f.write(data)
    load_file(st.con, st.path)
    st.inputs += 1
    if st.inputs % 2000 == 0:  # keep the store small so the run does not slow down
        st.con.execute("DELETE FROM span_links; DELETE FROM spans; DELETE FROM span_keys")
    # still storing: no transaction left open by a failed chunk
    st.con.execute("BEGIN TRANSACTION")
    st.con.execute("ROLLBACK")


_intended_dir: str | None = None


def target_intended(data: bytes) -> None:
    """An intended-workflow document (choreoscope YAML or AsyncAPI) as `--intended` reads it."""
    global _intended_dir
    from choreoscope.analysis.intended import IntendedError, load_intended

    if _intended_dir is None:
        _intended_dir = tempfile.mkdtemp(prefix="choreoscope-fuzz-intended-")
    path = os.path.join(_intended_dir, "doc.yaml")
    with open(path, "wb") as f:
        f.write(data)
    try:
        load_intended([path])
    except IntendedError:
        pass


TARGETS: dict[str, Callable[[bytes], None]] = {
    "otlp-proto": target_otlp_proto,
    "otlp-json": target_otlp_json,
    "otlp-gzip": target_otlp_gzip,
    "loaders": target_loaders,
    "intended": target_intended,
}


# --- a mutator for runs without atheris (and for the receiver test) --------------------------

def mutate(data: bytes, rng) -> bytes:
    """One structure-blind mutation of `data` (what the issue's 3,000 bodies were made with):
    bit flips, byte runs, truncation, duplication, splicing in deep nesting or huge varints."""
    buf = bytearray(data)
    choice = rng.randrange(10)
    if not buf or choice == 0:
        buf += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
    elif choice == 1:
        for _ in range(rng.randrange(1, 8)):
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
    elif choice == 2:
        del buf[rng.randrange(len(buf)):]
    elif choice == 3:
        i, j = sorted(rng.randrange(len(buf) + 1) for _ in range(2))
        buf[i:i] = buf[i:j] * rng.randrange(1, 4)
    elif choice == 4:
        i = rng.randrange(len(buf))
        buf[i] = rng.choice(b"\x00\xff\x7f\x80{}[]\":,\\0-9eE")
    elif choice == 5:  # deep nesting, JSON or protobuf (a length-delimited field in itself)
        depth = rng.choice((50, 101, 1000, 20000))
        if rng.random() < 0.5:
            i = rng.randrange(len(buf) + 1)
            buf[i:i] = b"[" * depth + b"]" * rng.choice((0, depth))
        else:
            inner = b""
            for _ in range(min(depth, 3000)):
                inner = bytes([0x0A]) + _varint(len(inner)) + inner
            buf += inner
    elif choice == 6:  # a huge or overlong varint
        i = rng.randrange(len(buf) + 1)
        buf[i:i] = b"\xff" * rng.randrange(1, 12) + b"\x01"
    elif choice == 7:
        i = rng.randrange(len(buf))
        del buf[i:i + rng.randrange(1, 32)]
    elif choice == 8:  # a number or string where something else was expected
        i = rng.randrange(len(buf) + 1)
        buf[i:i] = rng.choice((b"1e400", b"-0", b"\"\\ud800\"", b"null", b"9" * 40, b"NaN", b"\"\\u0000\""))
    else:
        i = rng.randrange(len(buf))
        buf[i] = rng.randrange(256)
    return bytes(buf)


def random_json(rng, depth: int = 0):
    """An arbitrary JSON value: every type, odd numbers and strings, a little nesting."""
    pick = rng.randrange(12 if depth < 3 else 8)
    if pick == 0:
        return None
    if pick == 1:
        return rng.random() < 0.5
    if pick == 2:
        return rng.choice((0, -1, 1, 2**31, 2**63, 2**64 + 1, -(2**63) - 1, 10**30))
    if pick == 3:
        return rng.choice((0.5, -0.0, 1e308, 1e-320, float("inf"), float("nan")))
    if pick in (4, 5):
        return rng.choice(("", "x", "0102030405060708", "0" * 32, "zz", "\ud800", "\x00", "é✓",
                           "SPAN_KIND_SERVER", "STATUS_CODE_ERROR", "#/channels/a", "9" * 40, "a" * 300))
    if pick in (6, 7):
        return rng.randrange(-5, 5)
    if pick in (8, 9):
        return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(("key", "value", "type", "traceId", "stringValue", "values", "x", "")):
            random_json(rng, depth + 1) for _ in range(rng.randrange(4))}


def replace_value(doc, rng):
    """`doc` (parsed JSON or YAML) with one node replaced by random_json, in place."""
    parents, todo = [], [doc]
    while todo:
        node = todo.pop()
        if isinstance(node, dict) and node:
            parents.append(node)
            todo.extend(node.values())
        elif isinstance(node, list) and node:
            parents.append(node)
            todo.extend(node)
    if not parents:
        return random_json(rng)
    parent = rng.choice(parents)
    key = rng.choice(list(parent)) if isinstance(parent, dict) else rng.randrange(len(parent))
    parent[key] = random_json(rng)
    return doc


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


# Crashes found whose fix belongs in a file the fuzzing work did not own. Each entry: the
# exception type, a piece of its message, and the fix needed. The short property tests tolerate
# exactly these; tests/test_fuzz_crashers.py keeps their saved inputs as strict xfails, so the
# test fails (XPASS) once the fix lands and the entry must be removed.
KNOWN_OPEN: list[tuple[str, str, str]] = []


def known_open(exc: BaseException) -> str | None:
    """The KNOWN_OPEN fix `exc` is waiting for, or None for an unknown crash."""
    for type_name, text, fix in KNOWN_OPEN:
        if type(exc).__name__ == type_name and text in str(exc):
            return fix
    return None


def crashers(target: str) -> list[Path]:
    """The saved crashers of `target` (tests/fuzz_crashers/<target>/*)."""
    folder = CRASHERS / target
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")) \
        if folder.is_dir() else []
