"""shop-api: Flask. POST /orders stores the order (sqlite3, table orders) and publishes a thin
`order.placed` event (only the order id) plus an `order.audited` event nobody is bound to;
GET /orders/<id> returns the order (shipping calls it back)."""

from __future__ import annotations

import argparse
import json
import sqlite3
import threading
import uuid

from _otel import exit_on_sigterm, setup


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--otlp", required=True)
    ap.add_argument("--http-port", type=int, required=True)
    ap.add_argument("--amqp-port", type=int, required=True)
    ap.add_argument("--db", required=True)
    args = ap.parse_args()

    provider = setup("shop-api", args.otlp)
    exit_on_sigterm()

    from opentelemetry.instrumentation.flask import FlaskInstrumentor
    from opentelemetry.instrumentation.pika import PikaInstrumentor
    from opentelemetry.instrumentation.sqlite3 import SQLite3Instrumentor

    SQLite3Instrumentor().instrument()
    PikaInstrumentor().instrument()

    import pika
    from flask import Flask, abort, jsonify, request

    app = Flask("shop-api")
    FlaskInstrumentor().instrument_app(app)

    params = pika.ConnectionParameters(host="127.0.0.1", port=args.amqp_port, heartbeat=0)
    connection = pika.BlockingConnection(params)
    channel = connection.channel()
    channel.exchange_declare(exchange="shop", exchange_type="topic", durable=True)
    amqp_lock = threading.Lock()  # a BlockingConnection is not thread-safe

    def publish(routing_key: str, payload: dict) -> None:
        props = pika.BasicProperties(
            content_type="application/json",
            delivery_mode=2,
            message_id=uuid.uuid4().hex,
            type=routing_key,
        )
        with amqp_lock:
            channel.basic_publish(
                exchange="shop", routing_key=routing_key, body=json.dumps(payload), properties=props
            )

    @app.post("/orders")
    def place_order():
        body = request.get_json(force=True)
        db = sqlite3.connect(args.db, timeout=10, isolation_level=None)
        try:
            cur = db.cursor()
            cur.execute(
                "INSERT INTO orders (customer, sku, qty, status) VALUES (?, ?, ?, 'placed')",
                (body["customer"], body["sku"], int(body["qty"])),
            )
            order_id = cur.lastrowid
        finally:
            db.close()
        publish("order.placed", {"order_id": order_id})  # thin event: consumers call back for details
        publish("order.audited", {"order_id": order_id, "action": "placed"})  # no queue is bound to it
        return jsonify({"order_id": order_id, "status": "placed"}), 201

    @app.get("/orders/<int:order_id>")
    def get_order(order_id: int):
        db = sqlite3.connect(args.db, timeout=10, isolation_level=None)
        try:
            cur = db.cursor()
            cur.execute("SELECT id, customer, sku, qty, status FROM orders WHERE id = ?", (order_id,))
            row = cur.fetchone()
        finally:
            db.close()
        if row is None:
            abort(404)
        keys = ("order_id", "customer", "sku", "qty", "status")
        return jsonify(dict(zip(keys, row)))

    try:
        app.run(host="127.0.0.1", port=args.http_port, threaded=True, use_reloader=False)
    finally:
        try:
            connection.close()
        except Exception:  # noqa: BLE001, S110 - shutdown: must go on to provider.shutdown()
            pass
        provider.shutdown()


if __name__ == "__main__":
    main()
