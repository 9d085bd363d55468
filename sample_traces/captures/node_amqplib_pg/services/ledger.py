"""ledger: Python consumer of payment.requested (pika + psycopg 3, official OpenTelemetry instrumentations).

It books the payment from the row that the payments service INSERTs - it reads the `payments` table,
not the event. When it is faster than payments (a real race, a minority of instances) the row is not
there yet: it nacks with requeue=True (RabbitMQ redelivers the message) and the handler raises, which
the consume loop logs before it resumes.
"""

import json
import os
import random
import signal
import sys
import time

import pika
import psycopg
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.pika import PikaInstrumentor
from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

provider = TracerProvider(
    resource=Resource.create({"service.name": "ledger", "service.version": os.environ.get("SERVICE_VERSION", "1.0.0")})
)
provider.add_span_processor(
    BatchSpanProcessor(OTLPSpanExporter(endpoint=os.environ["OTLP_TRACES_URL"]), schedule_delay_millis=500)
)
trace.set_tracer_provider(provider)
PikaInstrumentor().instrument()
PsycopgInstrumentor().instrument()

EXCHANGE = "pay"
QUEUE = "ledger.payment.requested"
stopping = False


class PaymentNotYetRecorded(Exception):
    pass


def main() -> int:
    db = psycopg.connect(
        host="127.0.0.1", port=int(os.environ["PGPORT"]), user="postgres",
        dbname=os.environ["PGDATABASE"], autocommit=True,
    )
    conn = pika.BlockingConnection(pika.URLParameters(os.environ["AMQP_URL"]))
    ch = conn.channel()
    ch.exchange_declare(EXCHANGE, exchange_type="topic", durable=False)
    ch.queue_declare(QUEUE, durable=False)
    ch.queue_bind(QUEUE, EXCHANGE, routing_key="payment.requested")
    ch.basic_qos(prefetch_count=1)

    def on_message(channel, method, properties, body):
        event = json.loads(body)
        time.sleep(random.uniform(0.015, 0.045))            # load the customer's account
        with db.cursor() as cur:
            cur.execute("SELECT payment_id, amount, status FROM payments WHERE payment_id = %s", (event["payment_id"],))
            row = cur.fetchone()
            if row is None:
                time.sleep(0.05)                               # small back-off before handing it back
                channel.basic_nack(method.delivery_tag, requeue=True)
                raise PaymentNotYetRecorded(event["payment_id"])
            cur.execute(
                "INSERT INTO ledger_entries (payment_id, amount, redelivered) VALUES (%s, %s, %s)",
                (row[0], row[1], bool(method.redelivered)),
            )
        channel.basic_ack(method.delivery_tag)

    ch.basic_consume(QUEUE, on_message)

    def on_term(*_):
        global stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    ready = os.environ.get("READY_FILE")
    if ready:
        with open(ready, "w") as fh:
            fh.write("ready\n")
    while not stopping:
        try:
            conn.process_data_events(time_limit=0.2)
        except PaymentNotYetRecorded as exc:
            print(f"ledger: payment {exc} not recorded yet, nacked for redelivery", file=sys.stderr)
    conn.close()
    db.close()
    provider.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
