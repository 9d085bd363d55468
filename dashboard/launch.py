"""Start the dashboard: `choreoscope dashboard DB` (offline) or inside `choreoscope serve` (live).

Both run Streamlit in this process (dashboard/server.py) and hand the app script the open DuckDB
connection through dashboard.context_registry, because DuckDB lets one process hold the file.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from choreoscope.collector import store
from choreoscope.collector.tls_auth import SecurityConfigError, exposure_warning, is_loopback, load_security
from choreoscope.dashboard.context_registry import DashboardContext, register
from choreoscope.dashboard.server import DashboardServer, DashboardStartError


def _is_duckdb_file(path: str) -> bool:
    """DuckDB's file header: 8 bytes of checksum, then the magic `DUCK`. A trace dump passed by
    mistake otherwise fails inside DuckDB with a message about in-memory databases."""
    try:
        with open(path, "rb") as fh:
            return fh.read(12)[8:12] == b"DUCK"
    except OSError:
        return False


def _check_readable(path: str) -> None:
    """Raise StoreDamagedError if a block of the store is damaged: connect finds a truncated file,
    but a damaged block only when a query reads it, which would be a page of the running dashboard
    showing a traceback. Reads every table once (collector/store_errors.py `unreadable`)."""
    from choreoscope.collector import store_errors

    con = store.connect(path, read_only=True)
    try:
        detail = store_errors.unreadable(con)
    finally:
        con.close()
    if detail is not None:
        raise store.StoreDamagedError(store_errors.damaged_message(path, detail))


def _needs_analysis(path: str) -> str | None:
    """Why the store must be analysed before it is shown (None if its results are current)."""
    con = store.connect(path, read_only=True)
    try:
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        if "spans" not in tables:
            return None
        spans = store.scalar(con, "SELECT count(*) FROM spans")
        if "workflows" not in tables or "analysis_run" not in tables:
            return "it has spans but no analysis yet" if spans else None
        analysed = store.scalar(con, "SELECT spans FROM analysis_run")
        return f"{spans - analysed:+d} spans since the last analysis" if analysed != spans else None
    finally:
        con.close()


def _analyse(path: str, why: str) -> None:
    from choreoscope.analysis.pipeline import run_pipeline

    print(f"analysing {path} ({why})…", flush=True)
    con = store.connect(path)
    try:
        run_pipeline(con)
    finally:
        con.close()


def run(args) -> int:
    """`choreoscope dashboard DB [--host] [--port] [--tls-cert --tls-key] [--bearer-token-file]`: serve
    the dashboard over a store, read-only; off loopback with a token it asks for it first."""
    path = args.db
    if not os.path.exists(path):
        print(f"choreoscope dashboard: {path} does not exist; create it with `choreoscope load` "
              "or `choreoscope serve`", file=sys.stderr)
        return 2
    if not _is_duckdb_file(path):
        print(f"choreoscope dashboard: {path} is not a DuckDB store; load trace dumps into one first: "
              f"choreoscope load {path} --db store.duckdb && choreoscope dashboard store.duckdb",
              file=sys.stderr)
        return 2
    try:
        security = load_security(getattr(args, "tls_cert", None), getattr(args, "tls_key", None), None,
                                 getattr(args, "bearer_token_file", None))
    except SecurityConfigError as exc:
        print(f"choreoscope dashboard: {exc}", file=sys.stderr)
        return 2
    warning = exposure_warning(args.host, security, dashboard=True, receiver=False)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    try:
        _check_readable(path)  # before an analysis writes to it, or a page meets the damage
        why = _needs_analysis(path)
        if why:
            _analyse(path, why)
        con = store.connect(path, read_only=True)
    except store.StoreError as exc:
        print(f"choreoscope dashboard: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - analysis errors name their stage
        print(f"choreoscope dashboard: {exc}", file=sys.stderr)
        return 1
    register(DashboardContext(con=con, db_path=path, read_only=True))
    token = None if is_loopback(args.host) else security.token
    try:
        server = DashboardServer(args.host, args.port, token=token, tls_cert=getattr(args, "tls_cert", None),
                                 tls_key=getattr(args, "tls_key", None)).start()
    except DashboardStartError as exc:
        print(f"choreoscope dashboard: {exc}", file=sys.stderr)
        con.close()
        return 2
    print(f"dashboard on {server.url}" + (" (asks for the bearer token)" if token else ""), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        register(None)
        con.close()
    return 0


def run_in_process(receiver, con, args):
    """Called by `choreoscope serve`: start the live analysis loop and the dashboard over `con`.
    Off loopback with a bearer token, the dashboard asks for the token; with --tls-cert it is HTTPS.

    Returns a callable that stops both (the caller then stops the receiver and closes `con`).
    """
    from choreoscope.analysis.live import AnalysisLoop
    from choreoscope.analysis.live_window import DEFAULT_WINDOW_SPANS

    loop = AnalysisLoop(con, getattr(args, "analyze_every", 30.0), list(getattr(args, "intended", []) or []),
                        window_spans=getattr(args, "live_window", DEFAULT_WINDOW_SPANS))
    loop.start()
    register(DashboardContext(con=con, db_path=str(args.db), read_only=False, receiver=receiver, loop=loop,
                              intended_paths=list(getattr(args, "intended", []) or [])))
    security = getattr(receiver, "security", None)
    token = security.token if security is not None and not is_loopback(args.host) else None
    try:
        server = DashboardServer(args.host, getattr(args, "dashboard_port", 8501), token=token,
                                 tls_cert=getattr(args, "tls_cert", None),
                                 tls_key=getattr(args, "tls_key", None)).start()
    except DashboardStartError as exc:
        print(f"choreoscope serve: {exc}; serving OTLP without the dashboard", file=sys.stderr, flush=True)
        server = None
    else:
        print(f"dashboard on {server.url}" + (" (asks for the bearer token)" if token else ""), flush=True)

    def stop() -> None:
        if server is not None:
            server.stop()
        loop.stop()
        register(None)

    return stop
