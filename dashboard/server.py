"""Run the Streamlit server inside the calling process, on a thread of its own.

`streamlit run` wants the main thread (signal handlers, its own event loop). `choreoscope serve`
needs the main thread for the receiver's shutdown and the one DuckDB connection shared with the
dashboard, so this module starts Streamlit's server (uvicorn under Streamlit >= 1.50) on an
asyncio loop in a daemon thread: headless, no usage statistics, no file watcher.

Given a `token` (serve's --bearer-token-file, when the dashboard is not on loopback), Streamlit
runs dashboard/token_gate.py instead of app.py: a password field that must match before app.py
runs in that browser session. Given `tls_cert`/`tls_key`, Streamlit serves HTTPS with them.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

APP_SCRIPT = str(Path(__file__).resolve().parent / "app.py")
GATE_SCRIPT = str(Path(__file__).resolve().parent / "token_gate.py")

_required_token: str | None = None  # one dashboard per process, like context_registry's context


def required_token() -> str | None:
    """The token the gate script asks for (None: no gate)."""
    return _required_token


class DashboardStartError(RuntimeError):
    """The dashboard server could not start (port taken, bad address)."""


class DashboardServer:
    """One in-process Streamlit server. `port` 0 picks a free port; `port` holds the bound one."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8501, script: str = APP_SCRIPT,
                 token: str | None = None, tls_cert: str | None = None, tls_key: str | None = None) -> None:
        global _required_token
        self.host = host
        self.port = port
        _required_token = token
        self.script = GATE_SCRIPT if token is not None and script == APP_SCRIPT else script
        self.tls = (tls_cert, tls_key) if tls_cert and tls_key else None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server = None
        self._thread = threading.Thread(target=self._run, name="choreoscope-dashboard", daemon=True)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def start(self, timeout_s: float = 60.0) -> DashboardServer:
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise DashboardStartError(f"dashboard did not start within {timeout_s:.0f}s")
        if self._error is not None:
            raise DashboardStartError(
                f"cannot serve the dashboard on {self.host}:{self.port}: {self._error}; "
                "pick another --dashboard-port (or --port)") from self._error
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._loop is not None and self._server is not None:
            self._loop.call_soon_threadsafe(self._server.stop)
        self._thread.join(timeout_s)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 - SystemExit too: Streamlit exits on a taken port
            self._error = exc if str(exc) else RuntimeError(f"port {self.port} is not available")
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        from streamlit import config
        from streamlit.web import bootstrap
        from streamlit.web.server import Server

        bootstrap.load_config_options({
            "server.headless": True,
            "server.address": self.host,
            "server.port": self.port,
            "server.fileWatcherType": "none",
            "server.runOnSave": False,
            "browser.gatherUsageStats": False,
            "client.toolbarMode": "minimal",
            "theme.base": "light",
            **({"server.sslCertFile": self.tls[0], "server.sslKeyFile": self.tls[1]} if self.tls else {}),
        })
        bootstrap.prepare_streamlit_environment(self.script)
        server = Server(self.script, False)
        await server.start()
        self.port = int(config.get_option("server.port"))
        self._loop = asyncio.get_running_loop()
        self._server = server
        self._ready.set()
        await server.stopped
