"""`serve --metrics-port`: the receiver's own Prometheus metrics, at http://HOST:PORT/metrics.

Counters and the queue come from the ingester's counters at scrape time (nothing is added to a
request's path); the commit latency is a histogram the writer observes once per group commit;
the analysis figures are read from `analysis_run` (what the last live analysis wrote), so they
are absent until one ran. A registry of its own per receiver, so several can live in one process.
"""

from __future__ import annotations

import duckdb
from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from choreoscope.collector.ingest import Ingester
from choreoscope.collector.tls_auth import ServerSecurity

# Group commits take a few ms; a checkpoint (WAL past its threshold) 50-300 ms.
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _IngestCollector:
    def __init__(self, ingester: Ingester, con: duckdb.DuckDBPyConnection | None):
        self.ingester = ingester
        self.con = con

    def describe(self):
        return []

    def collect(self):
        s = self.ingester.stats()
        for name, doc, value in (
            ("choreoscope_export_requests", "export requests received (any outcome)", s.requests),
            ("choreoscope_spans_accepted", "spans accepted into the ingest queue", s.spans_received - s.spans_rejected),
            ("choreoscope_spans_stored", "spans committed to the store (once each)", s.spans_stored),
            ("choreoscope_spans_duplicate", "spans committed that were already stored (exporter retries)",
             s.spans_duplicate),
            ("choreoscope_spans_rejected", "spans the decoder refused (partial success)", s.spans_rejected),
            ("choreoscope_spans_refused", "spans refused with a retryable answer (queue full)",
             s.spans_refused),
            ("choreoscope_requests_refused", ("export requests refused because the receiver was overloaded "
                                              "(queue full, HTTP decode backlog)"),
             s.requests_refused),
            ("choreoscope_commits", "group commits", s.commits),
            ("choreoscope_commits_failed", ("group commits that failed (disk full, ...); their exporters "
                                            "were answered UNAVAILABLE / 503 to retry"), s.commits_failed),
            ("choreoscope_checkpoints", "CHECKPOINTs of the store file (its WAL folded in)",
             self.ingester.checkpoints),
            ("choreoscope_commits_staged", ("group commits made into the staging database beside the store "
                                            "while it checkpointed (moved into the store after)"),
             self.ingester.groups_staged),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        yield GaugeMetricFamily("choreoscope_queue_spans", "spans queued or being committed", value=s.queue_spans)
        yield GaugeMetricFamily("choreoscope_queue_limit_spans", "spans the queue holds before refusing",
                                value=s.queue_limit)
        yield from self._analysis()

    def _analysis(self):
        if self.con is None:
            return
        try:
            cur = self.con.cursor()
            try:
                rows = cur.execute("SELECT seconds, epoch(finished_at), spans FROM analysis_run").fetchall()
            finally:
                cur.close()
        except duckdb.Error:  # no analysis yet (no table), or the store is closing
            return
        if not rows:
            return
        seconds, finished, spans = rows[0]
        yield GaugeMetricFamily("choreoscope_analysis_duration_seconds", "how long the last analysis took",
                                value=float(seconds or 0))
        yield GaugeMetricFamily("choreoscope_analysis_finished_timestamp_seconds",
                                "when the last analysis finished (unix time)", value=float(finished or 0))
        yield GaugeMetricFamily("choreoscope_analysis_spans", "spans the last analysis covered",
                                value=float(spans or 0))


class ReceiverMetrics:
    """The registry of one receiver; `start` serves it over HTTP, `stop` ends that."""

    def __init__(self, ingester: Ingester, con: duckdb.DuckDBPyConnection | None = None):
        self.registry = CollectorRegistry(auto_describe=False)
        self.commit_seconds = Histogram(
            "choreoscope_commit_duration_seconds", "one group commit: INSERT of the group and COMMIT",
            buckets=COMMIT_BUCKETS, registry=self.registry)
        self.registry.register(_IngestCollector(ingester, con))
        ingester.commit_observer = self.commit_seconds.observe
        self._server = None
        self._thread = None
        self.port: int | None = None

    def start(self, host: str, port: int, security: ServerSecurity | None = None) -> int:
        """Listen on host:port (0 picks a free port); returns the bound port. With TLS in
        `security` the endpoint is HTTPS with the same certificate (and client CA); the bearer
        token is not asked for (Prometheus scrapers are configured per target)."""
        tls = {}
        if security is not None and security.tls:
            tls = {"certfile": security.cert_file, "keyfile": security.key_file}
            if security.mtls:
                tls.update(client_cafile=security.client_ca_file, client_auth_required=True)
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry, **tls)
        except OSError as exc:
            raise OSError(f"cannot serve metrics on {host}:{port}: {exc}; pick another --metrics-port") from exc
        self.port = self._server.server_port
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = self._thread = None
