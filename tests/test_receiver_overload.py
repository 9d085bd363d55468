"""`choreoscope serve` overloaded and killed: eight SDK gRPC exporters push batches at a server whose
queue holds one request; mid-run the server is killed with SIGKILL, a new one is started on the
same store, and every batch not acknowledged is sent again — and, as an exporter whose
acknowledgement was lost would, some that were — in a burst that arrives at once (the new server
paused while they connect), so exports are refused with RESOURCE_EXHAUSTED and retried by the
exporters themselves. Every acknowledged span must be stored, none twice, and the server's memory
must stay bounded (issue targets: RSS <= 500 MB at 10x overload)."""

from __future__ import annotations

import logging
import re
import signal
import threading
import time

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.sdk.trace.export import SpanExportResult
from receiver_fixtures import ServeProcess, assert_stored_exactly, make_spans, span_count

from choreoscope.collector import store

CLIENTS = 8
BATCHES = 6           # per client, of 100 spans
QUEUE_SPANS = 100     # one request in the queue: the rest wait for the exporter's retry
MAX_RSS_MIB = 500


def _peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024


class _Refusals(logging.Handler):
    """Counts the exporters' own reports of RESOURCE_EXHAUSTED answers (they retry them)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "RESOURCE_EXHAUSTED" in record.getMessage()


def test_overload_kill_9_and_resend_store_every_acknowledged_span_once(tmp_path):
    refusals = _Refusals()
    logging.getLogger("opentelemetry.exporter.otlp.proto.grpc.exporter").addHandler(refusals)
    try:
        _overload_kill_and_resend(tmp_path, refusals)
    finally:
        logging.getLogger("opentelemetry.exporter.otlp.proto.grpc.exporter").removeHandler(refusals)


def _overload_kill_and_resend(tmp_path, refusals: _Refusals) -> None:
    db = tmp_path / "overload.duckdb"
    batches = [[make_spans(service=f"load-{c}", n_traces=25, tag=f"-{c}-{b}") for b in range(BATCHES)]
               for c in range(CLIENTS)]
    acknowledged: list[list] = [[] for _ in range(CLIENTS)]
    pending: list[list] = [[] for _ in range(CLIENTS)]
    server = {"serve": ServeProcess(db, "--queue-spans", str(QUEUE_SPANS))}
    killed = threading.Event()

    def client(c: int) -> None:
        exporter = GrpcExporter(endpoint=server["serve"].grpc_address, insecure=True, timeout=8)
        for batch in batches[c]:
            if killed.is_set() or exporter.export(batch) != SpanExportResult.SUCCESS:
                pending[c].append(batch)
            else:
                acknowledged[c].append(batch)
        exporter.shutdown()

    threads = [threading.Thread(target=client, args=(c,)) for c in range(CLIENTS)]
    for t in threads:
        t.start()
    first = server["serve"]
    deadline = time.monotonic() + 120
    while sum(map(len, acknowledged)) < CLIENTS * BATCHES // 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    rss_first = _peak_rss_mib(first.proc.pid)
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)
    killed.set()
    for t in threads:
        t.join(120)
    assert sum(map(len, acknowledged)) >= CLIENTS * BATCHES // 3
    assert any(pending), "the kill left batches to send again"

    # a new server on the same store (it replays the WAL); the exporters send again what was not
    # acknowledged, and the last acknowledged batch of each client too
    second = ServeProcess(db, "--queue-spans", str(QUEUE_SPANS))
    resend = [pending[c] + acknowledged[c][-1:] for c in range(CLIENTS)]
    resent_acknowledged = sum(len(acknowledged[c][-1:]) for c in range(CLIENTS))

    def again(c: int) -> None:
        exporter = GrpcExporter(endpoint=second.grpc_address, insecure=True, timeout=30)
        todo = list(resend[c])
        deadline = time.monotonic() + 150
        while todo and time.monotonic() < deadline:  # a batch the exporter gave up on is sent again
            batch = todo.pop(0)
            if exporter.export(batch) != SpanExportResult.SUCCESS:
                todo.append(batch)
            elif batch not in acknowledged[c]:
                acknowledged[c].append(batch)
        exporter.shutdown()

    # a burst: the server is paused while the eight exporters connect, so their exports arrive at
    # once at a queue that holds one
    second.proc.send_signal(signal.SIGSTOP)
    threads = [threading.Thread(target=again, args=(c,)) for c in range(CLIENTS)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    second.proc.send_signal(signal.SIGCONT)
    for t in threads:
        t.join(180)
    rss_second = _peak_rss_mib(second.proc.pid)
    second.proc.send_signal(signal.SIGTERM)
    _, err = second.proc.communicate(timeout=60)
    assert second.proc.returncode == 0, err
    stats = re.search(r"(\d+) duplicates, \d+ rejected, (\d+) requests refused", err)
    assert stats, err
    # the re-sent acknowledged batches (and any committed just before the kill), stored once
    assert int(stats.group(1)) >= resent_acknowledged * 100 > 0
    assert refusals.count > 0  # overloaded: the exporters were told RESOURCE_EXHAUSTED and retried

    sent = [span for client_batches in acknowledged for batch in client_batches for span in batch]
    assert len(sent) == CLIENTS * BATCHES * 100  # in the end every batch was acknowledged
    con = store.connect(db, read_only=True)
    try:
        assert span_count(con) == len(sent)
        assert_stored_exactly(con, sent)
    finally:
        con.close()
    assert rss_first <= MAX_RSS_MIB and rss_second <= MAX_RSS_MIB, (rss_first, rss_second)
    print(f"\noverload: {len(sent)} spans, queue {QUEUE_SPANS} spans, {refusals.count} exports refused and "
          f"retried, {stats.group(1)} duplicate spans re-sent and stored once; peak RSS {rss_first:.0f} / "
          f"{rss_second:.0f} MiB")
