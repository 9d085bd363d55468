"""The decode pool serves requests first come, first served: a worker set free goes to the request
waiting longest, never to one that arrives just then (which made the export latency's tail:
bench/ingest.py, issue #12); protobuf requests waiting for a worker go to it together. Workers
here are stand-ins whose pipes record the order of the jobs, but in the last test: real decode
worker processes given real requests at once."""

from __future__ import annotations

import threading
import time

from choreoscope.collector.export_decode import BATCH_BYTES, DecodePool, _Worker


class GatedPipe:
    """A worker's pipe: records each job's body (and which went together); the reply to a batch
    whose first body is in `gates` waits for its event."""

    def __init__(self, gates: dict[bytes, threading.Event]):
        self.gates = gates
        self.order: list[bytes] = []
        self.batches: list[list[bytes]] = []
        self._jobs: list[bytes] = []

    def send(self, jobs) -> None:
        self._jobs = [job[0] for job in jobs]
        self.order.extend(self._jobs)
        self.batches.append(self._jobs)

    def recv(self):
        gate = self.gates.get(self._jobs[0])
        if gate is not None:
            gate.wait(10)
        return [(True, body) for body in self._jobs]

    def close(self) -> None:
        pass


def pool_of_one(pipe: GatedPipe) -> DecodePool:
    pool = DecodePool(0)
    worker = _Worker(process=None, conn=pipe)
    pool.workers = 1
    pool._idle, pool._all = [worker], [worker]
    return pool


def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_a_freed_worker_goes_to_the_request_waiting_longest():
    # JSON requests: each decoded on its own (protobuf ones waiting go together: below)
    gates = {b"first": threading.Event(), b"second": threading.Event()}
    pipe = GatedPipe(gates)
    pool = pool_of_one(pipe)
    results: dict[bytes, object] = {}

    def request(body: bytes) -> None:
        results[body] = pool.decode(body, "application/json", "", 1 << 20, "test")

    threads = [threading.Thread(target=request, args=(b"first",))]
    threads[0].start()
    wait_for(lambda: pipe.order == [b"first"])
    for n, body in enumerate((b"second", b"third"), start=1):
        threads.append(threading.Thread(target=request, args=(body,)))
        threads[-1].start()
        wait_for(lambda n=n: len(pool._waiting) == n)
    gates[b"first"].set()
    # handed over, not left idle for a newcomer to take
    wait_for(lambda: pipe.order == [b"first", b"second"])
    assert pool._idle == []
    late = threading.Thread(target=request, args=(b"late",))
    late.start()
    wait_for(lambda: len(pool._waiting) == 2)  # behind "third"
    gates[b"second"].set()
    for t in [*threads, late]:
        t.join(10)
    assert pipe.order == [b"first", b"second", b"third", b"late"]
    assert results == {body: body for body in pipe.order}
    assert len(pool._idle) == 1 and not pool._waiting


def test_closing_the_pool_refuses_the_requests_still_waiting():
    gates = {b"busy": threading.Event()}
    pipe = GatedPipe(gates)
    pool = pool_of_one(pipe)
    errors: list[BaseException] = []

    def request(body: bytes) -> None:
        try:
            pool.decode(body, "application/x-protobuf", "", 1 << 20, "test")
        except RuntimeError as exc:
            errors.append(exc)

    busy = threading.Thread(target=request, args=(b"busy",))
    busy.start()
    wait_for(lambda: pipe.order == [b"busy"])
    waiting = threading.Thread(target=request, args=(b"waiting",))
    waiting.start()
    wait_for(lambda: len(pool._waiting) == 1)
    with pool._cond:  # what close() does first (its workers here are stand-ins, not processes)
        pool._closed = True
        for turn in pool._waiting:
            turn.cond.notify()
    waiting.join(5)
    assert len(errors) == 1 and "closed" in str(errors[0])
    gates[b"busy"].set()
    busy.join(5)
    assert pipe.order == [b"busy"] and len(pool._idle) == 1 and not pool._waiting


def test_protobuf_requests_waiting_go_to_the_freed_worker_together():
    """In the order they came: of the leader's source, protobuf, up to BATCH_BYTES in all; the
    others wait for the next worker set free."""
    gates = {b"busy": threading.Event(), b"a": threading.Event()}
    pipe = GatedPipe(gates)
    pool = pool_of_one(pipe)
    results: dict[bytes, object] = {}
    big = b"x" * (BATCH_BYTES - 1)

    def request(body: bytes, content_type: str = "application/x-protobuf", source: str = "test") -> None:
        results[body] = pool.decode(body, content_type, "", 1 << 30, source)

    threads = [threading.Thread(target=request, args=(b"busy",))]
    threads[0].start()
    wait_for(lambda: pipe.order == [b"busy"])
    for n, args in enumerate(((b"a",), (b"json", "application/json"), (b"b",), (b"http", "application/x-protobuf", "http"),
                              (big,), (b"c",)), start=1):
        threads.append(threading.Thread(target=request, args=args))
        threads[-1].start()
        wait_for(lambda n=n: len(pool._waiting) == n)
    gates[b"busy"].set()
    wait_for(lambda: len(pipe.batches) == 2)
    assert pipe.batches[1] == [b"a", b"b", b"c"]  # the big one would pass BATCH_BYTES with them
    gates[b"a"].set()
    for t in threads:
        t.join(10)
    assert pipe.batches[2:] == [[b"json"], [b"http"], [big]]
    assert results == {body: body for body in pipe.order}
    assert len(pool._idle) == 1 and not pool._waiting


def test_requests_at_once_to_a_real_worker_are_decoded_together_each_as_alone():
    import gzip
    import importlib.util

    from choreoscope.collector.export_decode import PROTOBUF, decode_export
    from tests.paths import REPO

    spec = importlib.util.spec_from_file_location("bench_ingest", REPO / "bench" / "ingest.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bodies = bench.build_requests(0, 10, 100, 10, 1)
    jobs = [(body, PROTOBUF, "", 1 << 26, "otlp-grpc") for body in bodies]
    jobs += [(gzip.compress(bodies[0])[:40], PROTOBUF, "gzip", 1 << 26, "otlp-grpc"),  # truncated gzip
             (bodies[1][:500], PROTOBUF, "", 1 << 26, "otlp-grpc")]  # truncated protobuf

    def outcome(decode, job):
        try:
            got = decode(*job)
        except Exception as exc:  # noqa: BLE001
            return type(exc).__name__, str(exc)
        return got.spans.to_pylist(), None if got.links is None else got.links.to_pylist(), got.rejected

    alone = [outcome(decode_export, job) for job in jobs]
    pool = DecodePool(1)
    try:
        results: dict[int, object] = {}
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, outcome(pool.decode, jobs[i])))
                   for i in range(len(jobs))]
        with pool._lock:  # all of them at once: the first takes the worker, the others wait behind it
            for t in threads:
                t.start()
        for t in threads:
            t.join(60)
        assert [results[i] for i in range(len(jobs))] == alone
        assert pool.passes < len(jobs) - 2
    finally:
        pool.close()


def test_a_worker_killed_while_idle_is_replaced_and_the_request_still_decoded():
    import os
    import signal

    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from choreoscope.collector.export_decode import PROTOBUF, decode_export
    from tests.receiver_fixtures import make_spans

    body = encode_spans(make_spans("checkout", n_traces=3)).SerializeToString()
    pool = DecodePool(1)
    try:
        dead = pool._all[0].process
        os.kill(dead.pid, signal.SIGKILL)
        dead.join(10)
        got = pool.decode(body, PROTOBUF, "", 1 << 26, "otlp-grpc")
        want = decode_export(body, PROTOBUF, "", 1 << 26, "otlp-grpc")
        assert got.spans.equals(want.spans) and pool._all[0].process is not dead
    finally:
        pool.close()
