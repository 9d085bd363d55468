"""The services of the celery_redis capture: one Celery app (Redis broker + Redis result backend), its
tasks, the per-process OpenTelemetry setup, and the Flask storefront. regenerate.py runs each service
as its own OS process:

    python services.py storefront --port PORT        # Flask, the producer (HTTP entry)
    python services.py worker NAME QUEUE[,QUEUE]     # a Celery prefork worker, service.name = NAME

Configuration comes from the environment (set by regenerate.py): CAPTURE_REDIS_URL (broker db 0,
results db 1), CAPTURE_DB (the sqlite file), CAPTURE_OTLP (the sink's /v1/traces URL), CAPTURE_SEED.

Only the official instrumentations create spans: opentelemetry-instrumentation-celery (publish and
run), -sqlalchemy (every SQL statement) and -flask (the storefront's server spans). The tasks'
sleeps stand for their work; their lengths are drawn from a seeded RNG keyed by the order id, so a
re-run draws the same plan (the outcome of the race still depends on real timing).
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time

from celery import Celery, chain, chord, group, signals
from sqlalchemy import create_engine, event, text

REDIS = os.environ.get("CAPTURE_REDIS_URL", "redis://127.0.0.1:6391")
DB_PATH = os.environ.get("CAPTURE_DB", "/tmp/celery_redis_capture.sqlite")
OTLP = os.environ.get("CAPTURE_OTLP", "http://127.0.0.1:4318/v1/traces")
SEED = int(os.environ.get("CAPTURE_SEED", "7"))
VERSION = "1.4.0"

app = Celery("shop", broker=f"{REDIS}/0", backend=f"{REDIS}/1")
app.conf.update(
    task_routes={
        "validate_order": {"queue": "orders"},
        "charge_payment": {"queue": "payments"},
        "ship_order": {"queue": "shipping"},
        "reserve_item": {"queue": "inventory"},
        "summarise_order": {"queue": "reporting"},
        "update_stats": {"queue": "reporting"},
        "send_receipt": {"queue": "notifications"},
        "award_points": {"queue": "loyalty"},
        "archive_order": {"queue": "archive"},   # no worker consumes `archive`: a dead queue
    },
    task_default_queue="default",
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    result_expires=600,
    worker_hijack_root_logger=False,
)

_provider = None
_engine = None


def setup_tracing(service: str) -> None:
    """This process's own TracerProvider and Resource, exporting over OTLP/HTTP to the sink."""
    global _provider, _engine
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    _provider = TracerProvider(resource=Resource.create({"service.name": service, "service.version": VERSION}))
    _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=OTLP), schedule_delay_millis=500))
    trace.set_tracer_provider(_provider)
    CeleryInstrumentor().instrument(tracer_provider=_provider)
    _engine = create_engine(f"sqlite:///{DB_PATH}", connect_args={"timeout": 30})

    @event.listens_for(_engine, "connect")
    def _pragmas(dbapi_conn, _record):
        dbapi_conn.execute("PRAGMA busy_timeout = 30000")

    SQLAlchemyInstrumentor().instrument(engine=_engine, tracer_provider=_provider)


def shutdown_tracing() -> None:
    if _provider is not None:
        _provider.force_flush()
        _provider.shutdown()


def sql(statement: str, **params):
    """One statement in its own transaction; returns the rows of a SELECT."""
    with _engine.begin() as conn:
        result = conn.execute(text(statement), params)
        return result.fetchall() if result.returns_rows else None


def plan(order_id: str, what: str) -> random.Random:
    return random.Random(f"{SEED}:{order_id}:{what}")


def work(ms: float) -> None:
    time.sleep(ms / 1000.0)


# --- flow 1: a chain validate_order -> charge_payment -> ship_order -------------------------------

@app.task(name="validate_order")
def validate_order(order_id: str, total_cents: int) -> dict:
    work(plan(order_id, "validate").uniform(5, 25))
    sql("INSERT INTO order_checks (order_id, outcome) VALUES (:o, 'ok')", o=order_id)
    return {"order_id": order_id, "total_cents": total_cents}


@app.task(name="charge_payment")
def charge_payment(order: dict) -> dict:
    work(plan(order["order_id"], "charge").uniform(10, 40))
    sql("INSERT INTO payments (order_id, amount_cents, status) VALUES (:o, :a, 'captured')",
        o=order["order_id"], a=order["total_cents"])
    return {**order, "payment": "captured"}


@app.task(name="ship_order")
def ship_order(order: dict) -> dict:
    work(plan(order["order_id"], "ship").uniform(5, 30))
    sql("INSERT INTO shipments (order_id, carrier) VALUES (:o, 'dhl')", o=order["order_id"])
    archive_order.delay(order["order_id"])   # to queue `archive`, which no worker consumes
    return {**order, "shipped": True}


@app.task(name="archive_order")
def archive_order(order_id: str) -> None:   # never runs: nobody consumes `archive`
    sql("INSERT INTO archive (order_id) VALUES (:o)", o=order_id)


# --- flow 2: a chord, a group of reserve_item with a summarise_order callback ---------------------

@app.task(name="reserve_item")
def reserve_item(order_id: str, sku: str, qty: int) -> dict:
    work(plan(order_id, f"reserve:{sku}").uniform(5, 60))
    sql("INSERT INTO reservations (order_id, sku, qty) VALUES (:o, :s, :q)", o=order_id, s=sku, q=qty)
    return {"sku": sku, "qty": qty}


@app.task(name="summarise_order")
def summarise_order(reserved: list, order_id: str) -> dict:
    work(plan(order_id, "summarise").uniform(5, 20))
    sql("INSERT INTO order_summaries (order_id, lines, units) VALUES (:o, :l, :u)",
        o=order_id, l=len(reserved), u=sum(r["qty"] for r in reserved))
    return {"order_id": order_id, "lines": len(reserved)}


# --- flow 3: fan-out send_receipt / update_stats / award_points (the planted race) -----------------

@app.task(name="send_receipt")
def send_receipt(order_id: str) -> None:
    work(plan(order_id, "receipt").uniform(5, 160))   # wide: its order against the others varies
    sql("INSERT INTO receipts (order_id, channel) VALUES (:o, 'email')", o=order_id)


@app.task(name="update_stats")
def update_stats(order_id: str, total_cents: int, items: int) -> None:
    rng = plan(order_id, "stats")
    # recomputing the aggregates is usually quick, sometimes slow (a cold cache)
    work(rng.uniform(150, 260) if rng.random() < 0.15 else rng.uniform(5, 35))
    sql("INSERT INTO order_stats (order_id, items, total_cents) VALUES (:o, :i, :t)",
        o=order_id, i=items, t=total_cents)


@app.task(name="award_points", bind=True, max_retries=10)
def award_points(self, order_id: str, bonus_pct: int) -> None:
    # the points are a share of the order's stats row, which update_stats writes: it must be there
    rows = sql("SELECT total_cents FROM order_stats WHERE order_id = :o", o=order_id)
    if not rows:
        raise self.retry(countdown=0.2)   # not there yet: a Celery retry (same task id, new message)
    work(plan(order_id, "points").uniform(20, 60))   # the customer's tier, the points rules
    sql("INSERT INTO loyalty_points (order_id, points) VALUES (:o, :p)",
        o=order_id, p=rows[0][0] * (100 + bonus_pct) // 10000)


# --- processes ------------------------------------------------------------------------------------

def run_worker(name: str, queues: str) -> None:
    @signals.worker_process_init.connect(weak=False)
    def _init(**_):        # per prefork child, as the instrumentation documents
        setup_tracing(name)

    @signals.worker_process_shutdown.connect(weak=False)
    def _down(**_):
        shutdown_tracing()

    app.worker_main(argv=[
        "worker", "-n", f"{name}@localhost", "-Q", queues, "--pool", "prefork", "--concurrency", "2",
        "--without-mingle", "--without-gossip", "--without-heartbeat", "--loglevel", "WARNING",
    ])


def run_storefront(port: int) -> None:
    from flask import Flask, jsonify, request
    from opentelemetry.instrumentation.flask import FlaskInstrumentor
    from werkzeug.serving import make_server

    setup_tracing("storefront")
    web = Flask("storefront")
    FlaskInstrumentor().instrument_app(web, tracer_provider=_provider)

    @web.post("/orders")
    def place_order():
        body = request.get_json()
        order_id, items = body["order_id"], body["items"]
        total = sum(i["qty"] * i["price_cents"] for i in items)
        sql("INSERT INTO orders (order_id, total_cents) VALUES (:o, :t)", o=order_id, t=total)
        # three independent tasks sent by this one request: nothing orders them
        update_stats.delay(order_id, total, len(items))
        send_receipt.delay(order_id)
        # the loyalty bonus of the running promotion (a storefront-only table) before award_points is sent
        work(plan(order_id, "promo").uniform(30, 70))
        promo = sql("SELECT bonus_pct FROM promotions WHERE active = 1")
        award_points.delay(order_id, promo[0][0] if promo else 0)
        return jsonify({"order_id": order_id}), 202

    @web.post("/orders/<order_id>/checkout")
    def checkout(order_id):
        total = request.get_json()["total_cents"]
        chain(validate_order.s(order_id, total), charge_payment.s(), ship_order.s()).apply_async()
        return jsonify({"order_id": order_id}), 202

    @web.post("/orders/<order_id>/reservations")
    def reserve(order_id):
        items = request.get_json()["items"]
        chord(group(reserve_item.s(order_id, i["sku"], i["qty"]) for i in items),
              summarise_order.s(order_id)).apply_async()
        return jsonify({"order_id": order_id}), 202

    server = make_server("127.0.0.1", port, web, threaded=True)

    def _stop(*_):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever()
    finally:
        shutdown_tracing()


if __name__ == "__main__":
    if sys.argv[1] == "storefront":
        run_storefront(int(sys.argv[sys.argv.index("--port") + 1]))
    elif sys.argv[1] == "worker":
        run_worker(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(__doc__)
