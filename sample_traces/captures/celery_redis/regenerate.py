"""Regenerate the celery_redis capture: Celery 5 over a real Redis broker/result backend, traced only by
the official OpenTelemetry instrumentations, written by the capture sink.

Needs: Debian `redis-server` (apt-get install -y redis-server) and the PyPI packages of
requirements.txt in the interpreter that runs this script (celery[redis], flask, sqlalchemy,
opentelemetry-sdk, -exporter-otlp-proto-http, -instrumentation-celery/-sqlalchemy/-flask).

    python regenerate.py [--instances 60] [--out capture.otlp.jsonl.gz] [--seed 7]

It starts, each as its own process: redis-server on 127.0.0.1:6391 (temp dir, --save ''), the OTLP
sink (sample_traces/captures/otlp_sink.py), six Celery prefork workers (one service.name each) and
the Flask storefront; drives --instances orders through the three flows over HTTP (the driver itself
is not traced), waits until every task is done and the sink has gone quiet, stops everything (also
on failure) and writes the gzipped capture with mtime=0.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
SINK = Path(__file__).resolve().parents[1] / "otlp_sink.py"
REDIS_PORT = 6391

WORKERS = [  # service.name, queues it consumes (no worker consumes `archive`)
    ("orders-worker", "orders"),
    ("payments-worker", "payments"),
    ("fulfilment-worker", "shipping,inventory"),
    ("reporting-worker", "reporting"),
    ("notifications-worker", "notifications"),
    ("loyalty-worker", "loyalty"),
]

SCHEMA = """
PRAGMA journal_mode = WAL;
CREATE TABLE orders (order_id TEXT PRIMARY KEY, total_cents INTEGER);
CREATE TABLE order_checks (order_id TEXT, outcome TEXT);
CREATE TABLE payments (order_id TEXT, amount_cents INTEGER, status TEXT);
CREATE TABLE shipments (order_id TEXT, carrier TEXT);
CREATE TABLE archive (order_id TEXT);
CREATE TABLE reservations (order_id TEXT, sku TEXT, qty INTEGER);
CREATE TABLE order_summaries (order_id TEXT, lines INTEGER, units INTEGER);
CREATE TABLE receipts (order_id TEXT, channel TEXT);
CREATE TABLE order_stats (order_id TEXT PRIMARY KEY, items INTEGER, total_cents INTEGER);
CREATE TABLE loyalty_points (order_id TEXT, points INTEGER);
CREATE TABLE promotions (name TEXT, bonus_pct INTEGER, active INTEGER);
INSERT INTO promotions VALUES ('winter', 10, 1);
"""
DONE_TABLES = ["shipments", "order_summaries", "receipts", "order_stats", "loyalty_points"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


def post(url: str, body: dict) -> int:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status


class Processes:
    """Everything started, stopped in reverse order by pid (each in its own session)."""

    def __init__(self, logdir: Path):
        self.logdir = logdir
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], env: dict | None = None, cwd: Path | None = None) -> subprocess.Popen:
        with open(self.logdir / f"{name}.log", "wb") as log:   # the child keeps its own copy of the fd
            p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                 start_new_session=True)
        self.procs.append((name, p))
        return p

    def stop(self, name: str | None = None, timeout: float = 20) -> None:
        for n, p in reversed(list(self.procs)):
            if name is not None and n != name:
                continue
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)   # its own session: the worker and its children
                    p.wait()
            try:   # prefork children left behind by a killed parent
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.procs.remove((n, p))


def make_orders(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    orders = []
    for i in range(n):
        items = [{"sku": f"sku-{rng.randint(100, 999)}", "qty": rng.randint(1, 3),
                  "price_cents": rng.randint(300, 9000)} for _ in range(rng.randint(2, 4))]
        orders.append({"order_id": f"ord-{seed}-{i:04d}", "items": items})
    return orders


def drive(base: str, orders: list[dict]) -> None:
    def one(order: dict) -> None:
        oid = order["order_id"]
        total = sum(i["qty"] * i["price_cents"] for i in order["items"])
        post(f"{base}/orders", order)
        time.sleep(0.05)
        post(f"{base}/orders/{oid}/checkout", {"total_cents": total})
        time.sleep(0.05)
        post(f"{base}/orders/{oid}/reservations", {"items": order["items"]})

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = []
        for order in orders:
            futures.append(pool.submit(one, order))
            time.sleep(0.25)
        for f in futures:
            f.result()


def run(instances: int, out: Path, seed: int) -> None:
    if port_in_use(REDIS_PORT):
        raise SystemExit(f"port {REDIS_PORT} is busy: another redis-server of this capture still running?")
    redis_server = shutil.which("redis-server")
    if not redis_server:
        raise SystemExit("redis-server not found: apt-get install -y redis-server")
    tmp = Path(tempfile.mkdtemp(prefix="celery_redis_capture_"))
    procs = Processes(tmp)
    try:
        db = tmp / "shop.sqlite"
        with sqlite3.connect(db) as conn:
            conn.executescript(SCHEMA)
        (tmp / "redis").mkdir()
        procs.start("redis", [redis_server, "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--dir", str(tmp / "redis"), "--daemonize", "no"])
        wait_for(lambda: port_in_use(REDIS_PORT), 10, "redis-server")

        sink_out, port_file = tmp / "capture.jsonl", tmp / "sink.port"
        procs.start("sink", [sys.executable, str(SINK), "--out", str(sink_out), "--port-file", str(port_file)])
        wait_for(lambda: port_file.exists() and port_file.read_text().strip(), 10, "the sink")
        env = {**os.environ, "CAPTURE_REDIS_URL": f"redis://127.0.0.1:{REDIS_PORT}", "CAPTURE_DB": db.name,   # relative: db.name = shop.sqlite
               "CAPTURE_OTLP": f"http://127.0.0.1:{port_file.read_text().strip()}/v1/traces",
               "CAPTURE_SEED": str(seed), "PYTHONUNBUFFERED": "1"}
        env.pop("OTEL_SERVICE_NAME", None)

        services = str(HERE / "services.py")
        for name, queues in WORKERS:
            procs.start(name, [sys.executable, services, "worker", name, queues], env=env, cwd=tmp)
        web_port = free_port()
        procs.start("storefront", [sys.executable, services, "storefront", "--port", str(web_port)], env=env,
                    cwd=tmp)
        wait_for(lambda: port_in_use(web_port), 30, "the storefront")
        # the workers are ready when their queues' consumers are registered: give them a moment, then a probe
        time.sleep(6)

        orders = make_orders(instances, seed)
        t0 = time.time()
        drive(f"http://127.0.0.1:{web_port}", orders)
        print(f"drove {instances} orders in {time.time() - t0:.1f}s", file=sys.stderr)

        def all_done() -> bool:
            with sqlite3.connect(db, timeout=30) as conn:
                return all(conn.execute(f"SELECT count(DISTINCT order_id) FROM {t}").fetchone()[0] >= instances
                           for t in DONE_TABLES)
        wait_for(all_done, 120, "every order to finish its three flows")

        def quiet(seconds: float = 3.0):
            last = {"size": -1, "since": time.time()}

            def check() -> bool:
                size = sink_out.stat().st_size if sink_out.exists() else 0
                if size != last["size"]:
                    last.update(size=size, since=time.time())
                return time.time() - last["since"] >= seconds
            return check
        wait_for(quiet(), 60, "the sink to go quiet")
        for name in ["storefront"] + [w for w, _ in WORKERS]:
            procs.stop(name)
        wait_for(quiet(2.0), 30, "the sink to go quiet after shutdown")
        procs.stop("sink")
        procs.stop()

        lines = [line for line in sink_out.read_text().splitlines() if line.strip()]
        for line in lines:
            json.loads(line)
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            gz.write(("\n".join(lines) + "\n").encode())
        print(f"wrote {out} ({out.stat().st_size} bytes, {len(lines)} export requests) "
              f"in {time.time() - t0:.1f}s", file=sys.stderr)
    except BaseException:
        print(f"failed; logs kept in {tmp}", file=sys.stderr)
        procs.stop()
        raise
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    finally:
        procs.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument("--out", type=Path, default=HERE / "capture.otlp.jsonl.gz")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))   # so `finally` stops everything
    run(args.instances, args.out, args.seed)


if __name__ == "__main__":
    main()
