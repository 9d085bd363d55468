"""Regenerate the rabbitmq_pika live capture.

Starts its own RabbitMQ node (Debian `rabbitmq-server`, node choreo_pika@localhost, AMQP on
127.0.0.1:5681, distribution port 25681, no plugins, all data in a temp dir), the OTLP file sink
(../otlp_sink.py), the services shop-api (Flask), inventory, shipping, billing (pika consumers)
as separate processes, then loadgen, which places N orders over HTTP. It waits until the queues
are drained and every order is shipped, stops everything (also on failure) and writes
capture.otlp.jsonl.gz (gzip, mtime=0).

Needs: `apt-get install -y rabbitmq-server` and, in the venv, the packages of requirements.txt
(opentelemetry-sdk, opentelemetry-exporter-otlp-proto-http, opentelemetry-instrumentation-pika,
-sqlite3, -flask, -requests, pika, flask, requests).

    /work/main/.venv/bin/python sample_traces/captures/rabbitmq_pika/regenerate.py [--instances N] [--out FILE]
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
SERVICES = HERE / "services"
NODE = "choreo_pika@localhost"
AMQP_PORT = 5681
DIST_PORT = 25681
RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")  # run as root directly (the /usr/sbin wrapper su's to rabbitmq)


def log(msg: str) -> None:
    print(f"[regenerate {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Rabbit:
    def __init__(self, tmp: Path):
        self.tmp = tmp / "rabbit"
        for sub in ("home", "mnesia", "log"):
            (self.tmp / sub).mkdir(parents=True, exist_ok=True)
        (self.tmp / "enabled_plugins").write_text("[].\n")
        (self.tmp / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{AMQP_PORT}\n"
            "loopback_users.guest = true\n"
            "log.console = false\n"
        )
        self.env = dict(
            os.environ,
            HOME=str(self.tmp / "home"),  # its own Erlang cookie
            RABBITMQ_NODENAME=NODE,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(AMQP_PORT),
            RABBITMQ_DIST_PORT=str(DIST_PORT),
            RABBITMQ_MNESIA_BASE=str(self.tmp / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.tmp / "log"),
            RABBITMQ_CONFIG_FILE=str(self.tmp / "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.tmp / "enabled_plugins"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        self.proc: subprocess.Popen | None = None

    def ctl(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(RABBIT_BIN / "rabbitmqctl"), "-n", NODE, *args],
            env=self.env, capture_output=True, text=True, timeout=timeout, check=False,
        )

    def start(self) -> None:
        with open(self.tmp / "server.out", "w") as out:   # the child keeps its own copy of the fd
            self.proc = subprocess.Popen(
                [str(RABBIT_BIN / "rabbitmq-server")], env=self.env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        deadline = time.time() + 90
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited: {(self.tmp / 'server.out').read_text()[-2000:]}")
            try:
                if self.ctl("status", timeout=20).returncode == 0:
                    log(f"rabbitmq node {NODE} is up on 127.0.0.1:{AMQP_PORT}")
                    return
            except subprocess.TimeoutExpired:
                pass
            time.sleep(1)
        raise RuntimeError("rabbitmq did not start in 90 s")

    def queues_idle(self) -> bool:
        r = self.ctl("list_queues", "-q", "name", "messages_ready", "messages_unacknowledged")
        if r.returncode != 0:
            return False
        for line in r.stdout.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1].isdigit() and (int(parts[1]) or int(parts[2])):
                return False
        return True

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.ctl("stop", timeout=60)
            except subprocess.TimeoutExpired:
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                # only our own server process (never epmd, which other nodes share)
                self.proc.kill()
                self.proc.wait(timeout=10)
        log("rabbitmq node stopped")


def init_dbs(tmp: Path) -> dict[str, Path]:
    """Schemas are created here, uninstrumented, before any service starts (no DDL spans)."""
    dbs = {"shop": tmp / "shop.db", "warehouse": tmp / "warehouse.db", "billing": tmp / "billing.db"}
    ddl = {
        "shop": [("CREATE TABLE orders (id INTEGER PRIMARY KEY AUTOINCREMENT, customer TEXT, sku TEXT,"
                  " qty INTEGER, status TEXT)")],
        "warehouse": ["CREATE TABLE reservations (order_id INTEGER PRIMARY KEY, status TEXT)",
                      ("CREATE TABLE shipments (order_id INTEGER PRIMARY KEY, sku TEXT, qty INTEGER,"
                       " status TEXT)")],
        "billing": ["CREATE TABLE invoices (order_id INTEGER PRIMARY KEY, status TEXT)"],
    }
    for name, path in dbs.items():
        con = sqlite3.connect(path)
        con.execute("PRAGMA journal_mode=WAL")
        for stmt in ddl[name]:
            con.execute(stmt)
        con.commit()
        con.close()
    return dbs


def count(path: Path, table: str) -> int:
    con = sqlite3.connect(path, timeout=10)
    try:
        return con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    finally:
        con.close()


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"port {port} not listening")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instances", type=int, default=150)
    ap.add_argument("--interval", type=float, default=0.35, help="mean seconds between orders")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=HERE / "capture.otlp.jsonl.gz")
    args = ap.parse_args()
    py = sys.executable

    def _stop(signum, frame):  # SIGTERM/SIGINT: clean up everything in `finally`
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    procs: list[tuple[str, subprocess.Popen]] = []
    sink: subprocess.Popen | None = None
    with tempfile.TemporaryDirectory(prefix="choreo_pika_") as tmp_s:
        tmp = Path(tmp_s)
        rabbit = Rabbit(tmp)
        try:
            dbs = init_dbs(tmp)
            raw = tmp / "capture.jsonl"
            port_file = tmp / "sink.port"
            sink = subprocess.Popen([py, str(SINK), "--out", str(raw), "--port-file", str(port_file),
                                     "--port", "0"], start_new_session=True)
            deadline = time.time() + 20
            while not (port_file.exists() and port_file.read_text().strip()):
                if time.time() > deadline or sink.poll() is not None:
                    raise RuntimeError("sink did not start")
                time.sleep(0.1)
            otlp = f"http://127.0.0.1:{int(port_file.read_text().strip())}/v1/traces"
            log(f"sink at {otlp}")

            rabbit.start()
            http_port = free_port()
            shop_url = f"http://127.0.0.1:{http_port}"
            common = ["--otlp", otlp]

            def spawn(name: str, argv: list[str]) -> subprocess.Popen:
                with open(tmp / f"{name}.log", "w") as logf:   # the child keeps its own copy of the fd
                    p = subprocess.Popen([py, *argv], cwd=SERVICES, start_new_session=True,
                                         stdout=logf, stderr=subprocess.STDOUT)
                procs.append((name, p))
                return p

            spawn("shop-api", ["shop_api.py", *common, "--http-port", str(http_port),
                               "--amqp-port", str(AMQP_PORT), "--db", str(dbs["shop"])])
            wait_port(http_port)
            for role, db in (("inventory", "warehouse"), ("shipping", "warehouse"), ("billing", "billing")):
                spawn(role, ["consumer.py", role, *common, "--amqp-port", str(AMQP_PORT),
                             "--db", str(dbs[db]), "--shop-url", shop_url, "--seed", str(args.seed)])
            deadline = time.time() + 30
            while True:  # all three queues declared and bound before the first order
                r = rabbit.ctl("list_queues", "-q", "name", "consumers")
                names = {ln.split()[0] for ln in r.stdout.splitlines()
                         if len(ln.split()) == 2 and ln.split()[1] == "1"}
                if {"inventory.order-placed", "shipping.order-placed", "billing.order-placed"} <= names:
                    break
                if time.time() > deadline:
                    raise RuntimeError(f"consumers not ready: {r.stdout} {r.stderr}")
                time.sleep(0.5)
            log("services up; driving orders")

            t0 = time.time()
            gen = subprocess.run([py, "loadgen.py", *common, "--shop-url", shop_url,
                                  "--instances", str(args.instances), "--interval", str(args.interval),
                                  "--seed", str(args.seed)], cwd=SERVICES, timeout=600, check=False)
            if gen.returncode != 0:
                raise RuntimeError("loadgen failed")
            log(f"loadgen done in {time.time() - t0:.1f} s; waiting for quiet")

            deadline = time.time() + 120
            while True:
                done = (count(dbs["warehouse"], "shipments"), count(dbs["warehouse"], "reservations"),
                        count(dbs["billing"], "invoices"))
                if all(n >= args.instances for n in done) and rabbit.queues_idle():
                    break
                for name, p in procs:
                    if p.poll() is not None:
                        raise RuntimeError(f"{name} died: {(tmp / f'{name}.log').read_text()[-2000:]}")
                if time.time() > deadline:
                    raise RuntimeError(f"not quiet: shipments/reservations/invoices = {done}")
                time.sleep(0.5)
            time.sleep(1.0)
            log(f"quiet: shipments/reservations/invoices = {done}")
            requeues = (tmp / "shipping.log").read_text().count("requeued")
            log(f"shipping requeued {requeues} deliveries")
        finally:
            for name, p in reversed(procs):
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for name, p in reversed(procs):
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    log(f"{name} did not stop, killing")
                    p.kill()
                    p.wait()
            rabbit.stop()
            if sink is not None and sink.poll() is None:
                sink.send_signal(signal.SIGTERM)
                try:
                    sink.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    sink.kill()
                    sink.wait()
        lines = [ln for ln in raw.read_text().splitlines() if ln.strip()]
        for ln in lines:
            json.loads(ln)
        data = ("\n".join(lines) + "\n").encode()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0, filename="") as gz:
            gz.write(data)
        n_spans = sum(len(ss.get("spans", [])) for ln in lines for rs in json.loads(ln)["resourceSpans"]
                      for ss in rs.get("scopeSpans", []))
        log(f"wrote {args.out} ({args.out.stat().st_size} bytes, {len(lines)} requests, {n_spans} spans)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted; everything was stopped, no capture written")
        sys.exit(130)
