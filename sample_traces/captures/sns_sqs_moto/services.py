"""The services of the sns_sqs_moto capture; each runs as its own OS process (started by regenerate.py).

    python services.py ROLE --sink-port P --db FILE --moto URL --api URL [--seed S]

ROLE is one of orders-api, inventory, shipping, loyalty, notifier (each with its own TracerProvider,
Resource and OTLP/HTTP exporter) or loadgen (the traffic driver, NOT instrumented: it plays the outside
client, so orders-api's POST /orders server span is the root of every workflow instance).

Only the official instrumentations create spans: botocore (SNS Publish, SQS calls), boto3sqs (SQS
receive/process), flask, requests, sqlite3. Nothing here creates, names or types a span.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import signal
import sqlite3
import sys
import threading
import time

ACCOUNT = "123456789012"
REGION = "us-east-1"
VERSION = "1.0.0"

QUEUE_OF = {"inventory": "inventory-q", "shipping": "shipping-q", "loyalty": "loyalty-q", "notifier": "email-q"}

_stop = threading.Event()


def _on_term(_signum, _frame):
    _stop.set()


def setup_otel(service: str, sink_port: int):
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.boto3sqs import Boto3SQSInstrumentor
    from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor
    from opentelemetry.instrumentation.sqlite3 import SQLite3Instrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service, "service.version": VERSION}))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=f"http://127.0.0.1:{sink_port}/v1/traces"),
                           schedule_delay_millis=500)
    )
    trace.set_tracer_provider(provider)
    BotocoreInstrumentor().instrument(tracer_provider=provider)
    Boto3SQSInstrumentor().instrument(tracer_provider=provider)
    SQLite3Instrumentor().instrument(tracer_provider=provider)
    RequestsInstrumentor().instrument(tracer_provider=provider)
    return provider


def db_connect(path: str):
    conn = sqlite3.connect(path, timeout=10, check_same_thread=False, isolation_level=None)
    return conn


def boto_client(kind: str, moto: str):
    import boto3

    return boto3.session.Session(region_name=REGION).client(kind, endpoint_url=moto)


def topic_arn(name: str) -> str:
    return f"arn:aws:sns:{REGION}:{ACCOUNT}:{name}"


# ---------------------------------------------------------------- orders-api (Flask)
def run_orders_api(args, provider):
    from flask import Flask, jsonify, request
    from opentelemetry.instrumentation.flask import FlaskInstrumentor
    from werkzeug.serving import make_server

    app = Flask("orders-api")
    FlaskInstrumentor().instrument_app(app, tracer_provider=provider)
    sns = boto_client("sns", args.moto)
    lock = threading.Lock()

    @app.post("/orders")
    def create_order():
        body = request.get_json(force=True)
        conn = db_connect(args.db)
        with lock:
            cur = conn.cursor()
            cur.execute("INSERT INTO orders (sku, qty, customer, status) VALUES (?, ?, ?, 'placed')",
                        (body["sku"], body["qty"], body["customer"]))
            order_id = cur.lastrowid
        conn.close()
        # thin event: only the id - consumers that need details must call back GET /orders/<id>
        sns.publish(TopicArn=topic_arn("order-events"), Message=json.dumps({"type": "OrderPlaced", "order_id": order_id}),
                    MessageAttributes={"event_type": {"DataType": "String", "StringValue": "OrderPlaced"}})
        sns.publish(TopicArn=topic_arn("payment-events"),
                    Message=json.dumps({"type": "PaymentCaptured", "order_id": order_id, "amount": body["qty"] * 9.5}),
                    MessageAttributes={"event_type": {"DataType": "String", "StringValue": "PaymentCaptured"}})
        # audit trail topic: nobody ever subscribed to it (dead event)
        sns.publish(TopicArn=topic_arn("order-audit"), Message=json.dumps({"type": "OrderAudited", "order_id": order_id}))
        return jsonify({"order_id": order_id}), 201

    @app.get("/orders/<int:order_id>")
    def get_order(order_id: int):
        conn = db_connect(args.db)
        cur = conn.cursor()
        cur.execute("SELECT id, sku, qty, customer, status FROM orders WHERE id = ?", (order_id,))
        row = cur.fetchone()
        conn.close()
        if row is None:
            return jsonify({"error": "not found"}), 404
        return jsonify(dict(zip(("id", "sku", "qty", "customer", "status"), row)))

    server = make_server("127.0.0.1", args.api_port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    print("orders-api listening", flush=True)
    _stop.wait()
    server.shutdown()


# ---------------------------------------------------------------- SQS consumers
def consume(args, role: str, handle):
    sqs = boto_client("sqs", args.moto)
    queue_url = sqs.get_queue_url(QueueName=QUEUE_OF[role])["QueueUrl"]
    conn = db_connect(args.db)
    with open(args.log, "a") if args.log else contextlib.nullcontext() as log:
        while not _stop.is_set():
            resp = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=1,
                                       MessageSystemAttributeNames=["ApproximateReceiveCount"])
            for msg in resp.get("Messages", []):
                done = handle(conn, msg)
                if log:
                    log.write(json.dumps({"role": role, "message_id": msg["MessageId"], "t": time.time(),
                                          "receive_count": msg.get("Attributes", {}).get("ApproximateReceiveCount"),
                                          "deleted": bool(done)}) + "\n")
                    log.flush()
                if done:
                    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=msg["ReceiptHandle"])
                # else: leave it; it comes back after the queue's visibility timeout (redelivery = the retry)
    conn.close()


def sns_envelope_payload(msg) -> dict:
    """RawMessageDelivery off (AWS default): the SQS body is SNS's JSON envelope around the message."""
    envelope = json.loads(msg["Body"])
    return json.loads(envelope["Message"])


def run_inventory(args, provider):
    rng = random.Random(args.seed)

    def handle(conn, msg):
        order = sns_envelope_payload(msg)
        # stock lookup at the warehouse: usually quick, sometimes slow (the race window)
        time.sleep(rng.uniform(0.2, 0.5) if rng.random() < 0.15 else rng.uniform(0.0, 0.02))
        cur = conn.cursor()
        cur.execute("INSERT INTO reservations (order_id, status) VALUES (?, 'reserved')", (order["order_id"],))
        return True

    consume(args, "inventory", handle)


def run_shipping(args, provider):
    import requests

    session = requests.Session()
    rng = random.Random(args.seed + 3)

    def handle(conn, msg):
        order_id = sns_envelope_payload(msg)["order_id"]
        order = session.get(f"{args.api}/orders/{order_id}", timeout=5).json()   # callback: the event is thin
        time.sleep(rng.uniform(0.04, 0.08))     # carrier rate quote (local work, no span)
        cur = conn.cursor()
        cur.execute("SELECT status FROM reservations WHERE order_id = ?", (order_id,))
        if cur.fetchone() is None:
            return False        # inventory has not reserved yet: do not delete, wait for redelivery
        cur.execute("INSERT INTO shipments (order_id, customer, status) VALUES (?, ?, 'scheduled')",
                    (order_id, order["customer"]))
        return True

    consume(args, "shipping", handle)


def run_loyalty(args, provider):
    rng = random.Random(args.seed + 1)

    def handle(conn, msg):
        order_id = sns_envelope_payload(msg)["order_id"]
        time.sleep(rng.uniform(0.0, 0.03))   # points rule evaluation: quick, independent
        cur = conn.cursor()
        cur.execute("INSERT INTO points (order_id, points) VALUES (?, ?)", (order_id, 10))
        return True

    consume(args, "loyalty", handle)


def run_notifier(args, provider):
    def handle(conn, msg):
        payment = json.loads(msg["Body"])   # RawMessageDelivery=true: the body is the published message itself
        cur = conn.cursor()
        cur.execute("INSERT INTO emails (order_id, kind) VALUES (?, 'payment-receipt')", (payment["order_id"],))
        return True

    consume(args, "notifier", handle)


# ---------------------------------------------------------------- loadgen (not instrumented)
def run_loadgen(args):
    import requests

    rng = random.Random(args.seed + 2)
    for i in range(args.instances):
        r = requests.post(f"{args.api}/orders", json={"sku": f"SKU-{rng.randint(1, 9)}", "qty": rng.randint(1, 4),
                                                       "customer": f"c{i:03d}"}, timeout=10)
        r.raise_for_status()
        time.sleep(args.spacing)


ROLES = {"orders-api": run_orders_api, "inventory": run_inventory, "shipping": run_shipping,
         "loyalty": run_loyalty, "notifier": run_notifier}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("role", choices=[*ROLES, "loadgen"])
    ap.add_argument("--sink-port", type=int)
    ap.add_argument("--db")
    ap.add_argument("--moto", default="http://127.0.0.1:5095")
    ap.add_argument("--api-port", type=int, default=5096)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--instances", type=int, default=40)
    ap.add_argument("--spacing", type=float, default=1.2)
    ap.add_argument("--log")
    args = ap.parse_args(argv)
    args.api = f"http://127.0.0.1:{args.api_port}"
    if args.role == "loadgen":
        run_loadgen(args)
        return 0
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, _on_term)
    provider = setup_otel(args.role, args.sink_port)
    try:
        ROLES[args.role](args, provider)
    finally:
        provider.force_flush()
        provider.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
