"""The three pika consumers of `order.placed` (one OS process each): inventory, shipping, billing.

- inventory: writes a row into `reservations` (warehouse DB file, shared with shipping).
- shipping: calls back GET /orders/<id> on shop-api (the event is thin), then reads `reservations`;
  when the row is not there yet (it raced inventory) it basic_nack(requeue=True)s and RabbitMQ
  redelivers the message (redelivered flag); a later attempt finds the row and writes `shipments`.
- billing: independent; writes its own `invoices` table in its own DB file.
The sleeps are the services' simulated work, with jitter: inventory is a bit faster than
shipping on average, so shipping wins the race only in a minority of orders.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import sys

from _otel import exit_on_sigterm, setup

QUEUES = {
    "inventory": "inventory.order-placed",
    "shipping": "shipping.order-placed",
    "billing": "billing.order-placed",
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("role", choices=sorted(QUEUES))
    ap.add_argument("--otlp", required=True)
    ap.add_argument("--amqp-port", type=int, required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--shop-url", default="")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(f"{args.role}-{args.seed}")

    provider = setup(args.role, args.otlp)
    exit_on_sigterm()

    from opentelemetry.instrumentation.pika import PikaInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor
    from opentelemetry.instrumentation.sqlite3 import SQLite3Instrumentor

    SQLite3Instrumentor().instrument()
    PikaInstrumentor().instrument()
    RequestsInstrumentor().instrument()

    import time

    import pika
    import requests

    db = sqlite3.connect(args.db, timeout=10, isolation_level=None)  # autocommit: visible at once
    http = requests.Session()

    def on_inventory(ch, method, properties, body):
        order_id = json.loads(body)["order_id"]
        time.sleep(max(0.005, rng.gauss(0.060, 0.025)))  # stock lookup
        db.cursor().execute(
            "INSERT INTO reservations (order_id, status) VALUES (?, 'reserved')", (order_id,)
        )
        ch.basic_ack(delivery_tag=method.delivery_tag)

    def on_shipping(ch, method, properties, body):
        order_id = json.loads(body)["order_id"]
        resp = http.get(f"{args.shop_url}/orders/{order_id}", timeout=10)  # callback: thin event
        resp.raise_for_status()
        order = resp.json()
        time.sleep(max(0.005, rng.gauss(0.100, 0.030)))  # rate quote
        cur = db.cursor()
        cur.execute("SELECT status FROM reservations WHERE order_id = ?", (order_id,))
        if cur.fetchone() is None:
            # inventory has not reserved yet: give the message back, RabbitMQ redelivers it
            time.sleep(0.05)
            ch.basic_nack(delivery_tag=method.delivery_tag, requeue=True)
            print(f"shipping: order {order_id} not reserved yet, requeued "
                  f"(redelivered={method.redelivered})", file=sys.stderr, flush=True)
            return
        cur.execute(
            "INSERT INTO shipments (order_id, sku, qty, status) VALUES (?, ?, ?, 'scheduled')",
            (order_id, order["sku"], order["qty"]),
        )
        ch.basic_ack(delivery_tag=method.delivery_tag)

    def on_billing(ch, method, properties, body):
        order_id = json.loads(body)["order_id"]
        time.sleep(rng.uniform(0.0, 0.200))  # tax computation
        db.cursor().execute(
            "INSERT INTO invoices (order_id, status) VALUES (?, 'issued')", (order_id,)
        )
        ch.basic_ack(delivery_tag=method.delivery_tag)

    handler = {"inventory": on_inventory, "shipping": on_shipping, "billing": on_billing}[args.role]
    queue = QUEUES[args.role]
    connection = pika.BlockingConnection(
        pika.ConnectionParameters(host="127.0.0.1", port=args.amqp_port, heartbeat=0)
    )
    channel = connection.channel()
    channel.exchange_declare(exchange="shop", exchange_type="topic", durable=True)
    channel.queue_declare(queue=queue, durable=True)
    channel.queue_bind(queue=queue, exchange="shop", routing_key="order.placed")
    channel.basic_qos(prefetch_count=1)
    channel.basic_consume(queue=queue, on_message_callback=handler)
    print(f"{args.role}: consuming {queue}", file=sys.stderr, flush=True)
    try:
        channel.start_consuming()
    finally:
        try:
            connection.close()
        except Exception:  # noqa: BLE001, S110 - shutdown: must go on to provider.shutdown()
            pass
        provider.shutdown()


if __name__ == "__main__":
    main()
