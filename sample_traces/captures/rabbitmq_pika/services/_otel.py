"""Per-process OpenTelemetry SDK setup: own TracerProvider + Resource, real OTLP/HTTP exporter.

Only the SDK is configured here; every span is created by an official instrumentation package.
"""

from __future__ import annotations

import signal

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

SERVICE_VERSION = "1.0.0"


def setup(service_name: str, endpoint: str) -> TracerProvider:
    resource = Resource.create({"service.name": service_name, "service.version": SERVICE_VERSION})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint), schedule_delay_millis=500)
    )
    trace.set_tracer_provider(provider)
    return provider


def exit_on_sigterm() -> None:
    """SIGTERM raises SystemExit in the main thread so `finally: provider.shutdown()` runs."""

    def _handler(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _handler)
