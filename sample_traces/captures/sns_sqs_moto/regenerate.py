"""Regenerate the sns_sqs_moto capture: SNS -> SQS choreography on a local moto server.

Needs (into /work/main/.venv): pip install -r sample_traces/captures/sns_sqs_moto/requirements.txt
(moto[server], boto3, flask, requests, opentelemetry-sdk, opentelemetry-exporter-otlp-proto-http and the
official instrumentations botocore, boto3sqs, flask, requests, sqlite3). No Debian package, no Docker.

    python sample_traces/captures/sns_sqs_moto/regenerate.py [--instances 40] [--out FILE.gz]

Starts, each as its own process: the OTLP sink (../otlp_sink.py), moto_server on 127.0.0.1:5095, the
services orders-api (Flask, 127.0.0.1:5096), inventory, shipping, loyalty, notifier, then the (untraced)
loadgen. Topics/queues/subscriptions and the SQLite schema are created here with plain boto3/sqlite3
(this process has no tracer, so that setup leaves no spans). Waits until every queue is empty, stops
everything (also on failure), and writes capture.otlp.jsonl.gz (gzip, mtime=0).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SINK = Path(__file__).resolve().parents[1] / "otlp_sink.py"
MOTO_PORT = 5095
API_PORT = 5096
MOTO = f"http://127.0.0.1:{MOTO_PORT}"
ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
       "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "PYTHONUNBUFFERED": "1"}

SCHEMA = """
PRAGMA journal_mode=WAL;
CREATE TABLE orders (id INTEGER PRIMARY KEY AUTOINCREMENT, sku TEXT, qty INTEGER, customer TEXT, status TEXT);
CREATE TABLE reservations (order_id INTEGER PRIMARY KEY, status TEXT);
CREATE TABLE shipments (order_id INTEGER PRIMARY KEY, customer TEXT, status TEXT);
CREATE TABLE points (order_id INTEGER PRIMARY KEY, points INTEGER);
CREATE TABLE emails (order_id INTEGER PRIMARY KEY, kind TEXT);
"""
QUEUES = {"inventory-q": "2", "shipping-q": "1", "loyalty-q": "2", "email-q": "2"}   # VisibilityTimeout (s)
SUBSCRIPTIONS = [("order-events", "inventory-q", False), ("order-events", "shipping-q", False),
                 ("order-events", "loyalty-q", False), ("payment-events", "email-q", True)]
TOPICS = ["order-events", "payment-events", "order-audit"]   # order-audit: no subscription at all
SERVICES = ["orders-api", "inventory", "shipping", "loyalty", "notifier"]


def wait_port(port: int, timeout: float = 20.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"port {port} did not open")


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def setup_aws():
    import boto3

    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                    region_name="us-east-1")
    sns = session.client("sns", endpoint_url=MOTO)
    sqs = session.client("sqs", endpoint_url=MOTO)
    arns = {t: sns.create_topic(Name=t)["TopicArn"] for t in TOPICS}
    urls = {}
    for q, vis in QUEUES.items():
        urls[q] = sqs.create_queue(QueueName=q, Attributes={"VisibilityTimeout": vis})["QueueUrl"]
    for topic, queue, raw in SUBSCRIPTIONS:
        qarn = sqs.get_queue_attributes(QueueUrl=urls[queue], AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        kwargs = {"Attributes": {"RawMessageDelivery": "true"}} if raw else {}   # raw off: attribute left unset
        sns.subscribe(TopicArn=arns[topic], Protocol="sqs", Endpoint=qarn, **kwargs)
    return sqs, urls


def queues_empty(sqs, urls) -> bool:
    for url in urls.values():
        a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        if int(a["ApproximateNumberOfMessages"]) or int(a["ApproximateNumberOfMessagesNotVisible"]):
            return False
    return True


def stop(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instances", type=int, default=60)
    ap.add_argument("--spacing", type=float, default=1.2, help="seconds between orders")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--out", type=Path, default=HERE / "capture.otlp.jsonl.gz")
    args = ap.parse_args(argv)
    for port in (MOTO_PORT, API_PORT):
        if not port_free(port):
            raise SystemExit(f"127.0.0.1:{port} is busy")
    env = {**os.environ, **ENV}
    py = sys.executable
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="sns_sqs_moto-") as tmp:
        tmp = Path(tmp)
        raw = tmp / "capture.jsonl"
        portfile = tmp / "sink.port"
        runlog = tmp / "consumers.log"
        with open(tmp / "procs.log", "w") as logf:   # shared by every child; closed after they all stopped
            sink = subprocess.Popen([py, str(SINK), "--out", str(raw), "--port-file", str(portfile)],
                                    stdout=logf, stderr=logf)
            try:
                moto = subprocess.Popen([py, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(MOTO_PORT)],
                                        stdout=logf, stderr=logf, env=env, cwd=tmp)
                procs.append(moto)
                end = time.time() + 20
                while not portfile.exists() or not portfile.read_text().strip():
                    if time.time() > end:
                        raise RuntimeError("sink did not start")
                    time.sleep(0.1)
                sink_port = int(portfile.read_text().strip())
                wait_port(MOTO_PORT)
                os.environ.update(ENV)
                sqs, urls = setup_aws()
                db = tmp / "shop.db"
                con = sqlite3.connect(db)
                con.executescript(SCHEMA)
                con.close()
                common = ["--sink-port", str(sink_port), "--db", str(db), "--moto", MOTO,
                          "--api-port", str(API_PORT), "--seed", str(args.seed), "--log", str(runlog)]
                for role in SERVICES:
                    procs.append(subprocess.Popen([py, str(HERE / "services.py"), role, *common],
                                                  stdout=logf, stderr=logf, env=env))
                wait_port(API_PORT)
                time.sleep(2.0)     # consumers polling
                t0 = time.time()
                subprocess.run([py, str(HERE / "services.py"), "loadgen", *common,
                                "--instances", str(args.instances), "--spacing", str(args.spacing)],
                               check=True, env=env, stdout=logf, stderr=logf)
                end = time.time() + 60
                while not queues_empty(sqs, urls):
                    if time.time() > end:
                        raise RuntimeError("queues did not drain")
                    time.sleep(0.5)
                time.sleep(2.0)
                for p in procs[:0:-1]:      # services first (they flush their providers), moto last
                    stop(p)
                stop(moto)
                print(f"traffic + drain took {time.time() - t0:.1f}s", file=sys.stderr)
            finally:
                for p in procs:
                    stop(p)
                stop(sink)
        if runlog.exists():
            recs = [json.loads(line) for line in runlog.read_text().splitlines()]
            redelivered = sum(1 for r in recs if r["role"] == "shipping" and not r["deleted"])
            print(f"consumer handlings: {len(recs)}; shipping attempts left undeleted: {redelivered}",
                  file=sys.stderr)
        lines = raw.read_text().splitlines()
        if not lines:
            print((tmp / "procs.log").read_text(), file=sys.stderr)
            raise SystemExit("empty capture")
        data = ("\n".join(lines) + "\n").encode()
        with open(args.out, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0, filename="") as gz:
            gz.write(data)
        print(f"wrote {args.out} ({args.out.stat().st_size} bytes, {len(lines)} export requests)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
