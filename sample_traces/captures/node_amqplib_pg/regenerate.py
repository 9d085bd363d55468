"""Regenerate the node_amqplib_pg live capture: Node.js + Python services on RabbitMQ and PostgreSQL.

    /work/main/.venv/bin/python sample_traces/captures/node_amqplib_pg/regenerate.py [--instances 200] [--out F]

Needs (see README.md):
- Debian packages `rabbitmq-server` (3.10, Erlang) and `postgresql` (15; binaries under
  /usr/lib/postgresql/<ver>/bin): `apt-get install -y rabbitmq-server postgresql`.
- Node.js 20 + npm; the Node packages of package.json/package-lock.json are installed with `npm ci`
  into a temp dir (never into this folder) unless --node-modules points at an installed tree.
- Python packages of requirements.txt in the interpreter running this script (the ledger service is
  started with the same interpreter).

What it does: starts its own RabbitMQ node (choreo_node@localhost, 127.0.0.1:5682, dist port 25682,
data and logs in a temp dir, no plugins) and its own PostgreSQL cluster (initdb in a temp dir,
127.0.0.1:5439, run as the `postgres` user when this runs as root), the OTLP sink
(../otlp_sink.py) with chunked_relay.py in front of it for the Node exporters (they send chunked bodies,
which the sink cannot read), and the services, each its own OS process with its own tracer provider:
checkout, payments, fraud, receipts (Node, @opentelemetry/sdk-node + the official amqplib / pg /
http / express instrumentations) and ledger (Python, pika + psycopg instrumentations). An
uninstrumented Node load generator POSTs N checkouts; an uninstrumented plain-amqplib script then
publishes refund.requested for every 10th payment. When the queues are empty and the sink has been
quiet, the services are stopped (they flush their exporters), the sink is closed, every server is
stopped, and the capture is written gzip'ed (mtime=0). Everything is stopped on failure too.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SINK = Path(__file__).resolve().parents[1] / "otlp_sink.py"
SERVICES = HERE / "services"
PG_PORT = 5439
AMQP_PORT = 5682
DIST_PORT = 25682
NODENAME = "choreo_node@localhost"
CHECKOUT_PORT = 18431
DB = "choreo"
REFUND_EVERY = 10

SCHEMA = """
CREATE TABLE payments (payment_id text PRIMARY KEY, order_id text NOT NULL, amount numeric NOT NULL,
                       currency text NOT NULL, status text NOT NULL, created_at timestamptz DEFAULT now());
CREATE TABLE fraud_checks (payment_id text PRIMARY KEY, score numeric NOT NULL, checked_at timestamptz DEFAULT now());
CREATE TABLE receipts (payment_id text PRIMARY KEY, order_id text NOT NULL, amount numeric NOT NULL,
                       sent_at timestamptz DEFAULT now());
CREATE TABLE ledger_entries (id serial PRIMARY KEY, payment_id text NOT NULL, amount numeric NOT NULL,
                             redelivered boolean NOT NULL, booked_at timestamptz DEFAULT now());
"""

IS_ROOT = os.geteuid() == 0


def log(msg: str) -> None:
    print(f"[regenerate {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def pg_bin() -> Path:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if not versions:
        raise SystemExit("PostgreSQL not found under /usr/lib/postgresql (apt-get install -y postgresql)")
    return versions[-1].parent


def as_user(user: str, cmd: list[str]) -> list[str]:
    return ["runuser", "-u", user, "--", *cmd] if IS_ROOT else cmd


class Stack:
    def __init__(self, tmp: Path, node_modules: Path | None):
        self.tmp = tmp
        self.node_modules = node_modules
        self.procs: dict[str, subprocess.Popen] = {}
        self.pg_dir = tmp / "pg"
        self.rabbit_dir = tmp / "rabbit"
        self.pg_started = False
        self.rabbit_started = False
        self.raw = tmp / "raw.otlp.jsonl"
        self.logs = tmp / "logs"
        self.logs.mkdir()

    # ---------------------------------------------------------------- node packages
    def install_node(self) -> None:
        if self.node_modules:
            return
        node_dir = self.tmp / "node"
        node_dir.mkdir()
        for name in ("package.json", "package-lock.json"):
            shutil.copy(HERE / name, node_dir / name)
        log("npm ci into a temp dir")
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=node_dir, check=True,
                       stdout=subprocess.DEVNULL)
        self.node_modules = node_dir / "node_modules"

    # ---------------------------------------------------------------- PostgreSQL
    def start_postgres(self) -> None:
        bindir = pg_bin()
        self.pg_bindir = bindir
        self.pg_dir.mkdir()
        if IS_ROOT:
            shutil.chown(self.pg_dir, "postgres", "postgres")
        data = self.pg_dir / "data"
        subprocess.run(as_user("postgres", [str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                                            "--no-sync", "-E", "UTF8"]),
                       check=True, stdout=subprocess.DEVNULL)
        opts = f"-p {PG_PORT} -k {self.pg_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(as_user("postgres", [str(bindir / "pg_ctl"), "-D", str(data), "-o", opts,
                                            "-l", str(self.pg_dir / "server.log"), "-w", "start"]),
                       check=True, stdout=subprocess.DEVNULL)
        self.pg_started = True
        psql = [str(bindir / "psql"), "-h", "127.0.0.1", "-p", str(PG_PORT), "-U", "postgres", "-v", "ON_ERROR_STOP=1",
                "-q"]
        subprocess.run([*psql, "-d", "postgres", "-c", f"CREATE DATABASE {DB}"], check=True)
        subprocess.run([*psql, "-d", DB, "-c", SCHEMA], check=True)
        log(f"PostgreSQL on 127.0.0.1:{PG_PORT}")

    def sql(self, query: str) -> str:
        out = subprocess.run([str(self.pg_bindir / "psql"), "-h", "127.0.0.1", "-p", str(PG_PORT), "-U", "postgres",
                              "-d", DB, "-At", "-c", query], check=True, capture_output=True, text=True)
        return out.stdout.strip()

    def stop_postgres(self) -> None:
        if self.pg_started:
            subprocess.run(as_user("postgres", [str(self.pg_bindir / "pg_ctl"), "-D", str(self.pg_dir / "data"),
                                                "-m", "fast", "-w", "stop"]),
                           check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.pg_started = False

    # ---------------------------------------------------------------- RabbitMQ
    def rabbit_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "HOME": "/var/lib/rabbitmq" if IS_ROOT else os.environ.get("HOME", str(self.rabbit_dir)),
            "RABBITMQ_NODENAME": NODENAME,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(AMQP_PORT),
            "RABBITMQ_DIST_PORT": str(DIST_PORT),
            "RABBITMQ_MNESIA_BASE": str(self.rabbit_dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.rabbit_dir / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.rabbit_dir / "enabled_plugins"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(self.rabbit_dir / "plugins-expand"),
            "RABBITMQ_PID_FILE": str(self.rabbit_dir / "pid"),
            "RABBITMQ_CONFIG_FILE": str(self.rabbit_dir / "rabbitmq"),
        })
        return env

    def rabbitmqctl(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        out = subprocess.run(as_user("rabbitmq", ["/usr/lib/rabbitmq/bin/rabbitmqctl", "-n", NODENAME, *args]),
                             env=self.rabbit_env(), capture_output=True, text=True, check=check, timeout=timeout)
        return out.stdout

    def start_rabbit(self) -> None:
        self.rabbit_dir.mkdir()
        (self.rabbit_dir / "enabled_plugins").write_text("[].\n")
        (self.rabbit_dir / "rabbitmq.conf").write_text("loopback_users.guest = true\n")
        if IS_ROOT:
            for path in [self.rabbit_dir, *self.rabbit_dir.iterdir()]:
                shutil.chown(path, "rabbitmq", "rabbitmq")
        with open(self.logs / "rabbitmq-server.log", "w") as logf:   # the child keeps its own copy of the fd
            self.procs["rabbitmq-server"] = subprocess.Popen(
                as_user("rabbitmq", ["/usr/lib/rabbitmq/bin/rabbitmq-server"]), env=self.rabbit_env(),
                stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        self.rabbit_started = True
        deadline = time.time() + 90
        while time.time() < deadline:
            if self.procs["rabbitmq-server"].poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited; see {self.logs / 'rabbitmq-server.log'}")
            res = subprocess.run(as_user("rabbitmq", ["/usr/lib/rabbitmq/bin/rabbitmqctl", "-n", NODENAME,
                                                      "await_startup", "--timeout", "5"]),
                                 env=self.rabbit_env(), capture_output=True, text=True, check=False)
            if res.returncode == 0:
                log(f"RabbitMQ {NODENAME} on 127.0.0.1:{AMQP_PORT}")
                return
            time.sleep(1)
        raise RuntimeError("RabbitMQ did not start in 90 s")

    def stop_rabbit(self) -> None:
        if self.rabbit_started:
            try:
                self.rabbitmqctl("stop", check=False, timeout=60)
            except subprocess.TimeoutExpired:
                pass
            proc = self.procs.pop("rabbitmq-server", None)
            if proc:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
            self.rabbit_started = False

    def queue_depth(self) -> int:
        out = self.rabbitmqctl("list_queues", "-q", "--no-table-headers", "name", "messages")
        return sum(int(line.split()[-1]) for line in out.splitlines() if line.strip())

    # ---------------------------------------------------------------- sink + services
    def start_sink(self) -> str:
        port_file = self.tmp / "sink.port"
        with open(self.logs / "sink.log", "w") as logf:   # the child keeps its own copy of the fd
            self.procs["sink"] = subprocess.Popen([sys.executable, str(SINK), "--out", str(self.raw),
                                                   "--port", "0", "--port-file", str(port_file)],
                                                  stdout=logf, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.time() > deadline or self.procs["sink"].poll() is not None:
                raise RuntimeError("sink did not start")
            time.sleep(0.1)
        url = f"http://127.0.0.1:{port_file.read_text().strip()}/v1/traces"
        log(f"sink at {url}")
        return url

    def start_relay(self, sink_url: str) -> str:
        """The Node exporters send chunked bodies, which otlp_sink.py cannot read: see chunked_relay.py."""
        port_file = self.tmp / "relay.port"
        with open(self.logs / "relay.log", "w") as logf:   # the child keeps its own copy of the fd
            self.procs["relay"] = subprocess.Popen([sys.executable, str(HERE / "chunked_relay.py"),
                                                    "--target", sink_url, "--port-file", str(port_file)],
                                                   stdout=logf, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.time() > deadline or self.procs["relay"].poll() is not None:
                raise RuntimeError("relay did not start")
            time.sleep(0.1)
        return f"http://127.0.0.1:{port_file.read_text().strip()}/v1/traces"

    def env(self, extra: dict[str, str]) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "NODE_PATH": str(self.node_modules),
            "AMQP_URL": f"amqp://guest:guest@127.0.0.1:{AMQP_PORT}",
            "PGPORT": str(PG_PORT),
            "PGDATABASE": DB,
            "OTEL_LOG_LEVEL": "ERROR",
            "OTEL_METRICS_EXPORTER": "none",   # NodeSDK would otherwise start OTLP metric/log exporters too
            "OTEL_LOGS_EXPORTER": "none",
        })
        env.update(extra)
        return env

    def start_service(self, name: str, cmd: list[str], extra: dict[str, str]) -> None:
        ready = self.tmp / f"{name}.ready"
        with open(self.logs / f"{name}.log", "w") as logf:   # the child keeps its own copy of the fd
            self.procs[name] = subprocess.Popen(cmd, cwd=SERVICES,
                                                env=self.env({**extra, "READY_FILE": str(ready)}),
                                                stdout=logf, stderr=subprocess.STDOUT)
        self._ready.append((name, ready))

    def start_services(self, sink_url: str, relay_url: str) -> None:
        self._ready: list[tuple[str, Path]] = []
        node = {"OTLP_TRACES_URL": relay_url, "SERVICE_VERSION": "1.0.0"}
        for name in ("payments", "fraud", "receipts"):
            self.start_service(name, ["node", "-r", "./tracing.js", f"{name}.js"], {**node, "SERVICE_NAME": name})
        self.start_service("ledger", [sys.executable, "ledger.py"],
                           {"OTLP_TRACES_URL": sink_url, "SERVICE_VERSION": "1.0.0", "SERVICE_NAME": "ledger"})
        self.start_service("checkout", ["node", "-r", "./tracing.js", "checkout.js"],
                           {**node, "SERVICE_NAME": "checkout", "HTTP_PORT": str(CHECKOUT_PORT)})
        deadline = time.time() + 60
        for name, ready in self._ready:
            while not ready.exists():
                if self.procs[name].poll() is not None:
                    raise RuntimeError(f"{name} exited: {(self.logs / f'{name}.log').read_text()[-2000:]}")
                if time.time() > deadline:
                    raise RuntimeError(f"{name} not ready in 60 s")
                time.sleep(0.1)
        log("services ready: " + ", ".join(n for n, _ in self._ready))

    def run_tool(self, name: str, script: str, extra: dict[str, str], timeout: float) -> None:
        res = subprocess.run(["node", script], cwd=SERVICES, env=self.env(extra), timeout=timeout,
                             capture_output=True, text=True, check=False)
        (self.logs / f"{name}.log").write_text(res.stdout + res.stderr)
        if res.returncode != 0:
            raise RuntimeError(f"{name} failed: {res.stdout}{res.stderr}")

    def wait_quiet(self, quiet_s: float = 3.0, limit_s: float = 120) -> None:
        deadline = time.time() + limit_s
        last_size, since = -1, time.time()
        while time.time() < deadline:
            size = self.raw.stat().st_size if self.raw.exists() else 0
            depth = self.queue_depth()
            if size != last_size or depth:
                last_size, since = size, time.time()
            elif time.time() - since >= quiet_s:
                return
            time.sleep(0.5)
        raise RuntimeError("system did not become quiet")

    def stop_services(self) -> None:
        for name in ("checkout", "payments", "fraud", "receipts", "ledger"):
            proc = self.procs.get(name)
            if proc and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name in ("checkout", "payments", "fraud", "receipts", "ledger"):
            proc = self.procs.pop(name, None)
            if proc:
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def stop_sink(self) -> None:
        for name in ("relay", "sink"):
            proc = self.procs.pop(name, None)
            if proc and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def stop_all(self) -> None:
        for step in (self.stop_services, self.stop_sink, self.stop_rabbit, self.stop_postgres):
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - cleanup: log it, keep stopping the rest
                log(f"while stopping: {exc!r}")
        for name, proc in list(self.procs.items()):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instances", type=int, default=300)
    ap.add_argument("--pace-ms", type=int, default=120, help="gap between two checkouts")
    ap.add_argument("--out", type=Path, default=HERE / "capture.otlp.jsonl.gz")
    ap.add_argument("--node-modules", type=Path, help="an installed node_modules of package-lock.json (else npm ci)")
    ap.add_argument("--keep-tmp", action="store_true")
    args = ap.parse_args()
    started = time.time()
    tmp = Path(tempfile.mkdtemp(prefix="napg_capture_"))
    os.chmod(tmp, 0o755)
    stack = Stack(tmp, args.node_modules.resolve() if args.node_modules else None)
    try:
        stack.install_node()
        stack.start_postgres()
        stack.start_rabbit()
        sink_url = stack.start_sink()
        stack.start_services(sink_url, stack.start_relay(sink_url))
        ids_file = tmp / "payment_ids.txt"
        log(f"driving {args.instances} checkouts")
        stack.run_tool("loadgen", "loadgen.js", {"INSTANCES": str(args.instances), "CHECKOUT_PORT": str(CHECKOUT_PORT),
                                                "PACE_MS": str(args.pace_ms), "IDS_FILE": str(ids_file)},
                       timeout=600)
        stack.wait_quiet()
        log("publishing refund.requested from the uninstrumented publisher")
        stack.run_tool("refund_publisher", "refund_publisher.js",
                       {"IDS_FILE": str(ids_file), "REFUND_EVERY": str(REFUND_EVERY)}, timeout=120)
        stack.wait_quiet()
        counts = {t: stack.sql(f"SELECT count(*) FROM {t}") for t in ("payments", "fraud_checks", "receipts",
                                                                        "ledger_entries")}
        counts["ledger redelivered"] = stack.sql("SELECT count(*) FROM ledger_entries WHERE redelivered")
        counts["refunded"] = stack.sql("SELECT count(*) FROM payments WHERE status = 'refunded'")
        log(f"rows: {counts}")
        stack.stop_services()
        stack.stop_sink()
        nacks = (tmp / "logs" / "ledger.log").read_text().count("nacked for redelivery")
        log(f"ledger nacks: {nacks}")
        lines = [ln for ln in stack.raw.read_text().splitlines() if ln.strip()]
        empty = [ln for ln in lines if not json.loads(ln).get("resourceSpans")]
        if empty:
            raise RuntimeError(f"{len(empty)} export requests reached the sink without spans")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "wb") as fh, gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0) as gz:
            gz.write(("\n".join(lines) + "\n").encode())
        log(f"wrote {args.out} ({args.out.stat().st_size} bytes, {len(lines)} export requests) "
            f"in {time.time() - started:.0f} s")
        return 0
    except Exception:
        log(f"FAILED; logs in {tmp / 'logs'}")
        args.keep_tmp = True
        raise
    finally:
        stack.stop_all()
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
