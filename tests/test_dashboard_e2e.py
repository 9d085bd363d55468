"""End to end: `choreoscope serve` as a subprocess (receiver + live analysis + dashboard in one
process), spans exported by the real OpenTelemetry SDK, the dashboard read by headless Chromium.

Needs Debian's chromium (`apt-get install chromium`) and Playwright for Python; skips without
them unless CHOREOSCOPE_REQUIRE_BROWSER=1 (CI), where a missing browser fails the test.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote_plus

import pytest
from dashboard_fixtures import REPO, chromium_path
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

from choreoscope.sample_traces.generate import run_scenario, scenario_dir

ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
EXPECTED_SERVICES = ("storefront", "order-service", "payment-service", "shipping-service", "inventory-service")


def _browser_or_skip() -> str:
    required = os.environ.get("CHOREOSCOPE_REQUIRE_BROWSER") == "1"
    path = chromium_path()
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        if required:
            pytest.fail("CHOREOSCOPE_REQUIRE_BROWSER=1 but Playwright is not installed (pip install playwright)")
        pytest.skip("Playwright for Python is not installed")
    if path is None:
        if required:
            pytest.fail("CHOREOSCOPE_REQUIRE_BROWSER=1 but chromium is missing (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return path


class Serve:
    """`choreoscope serve` with the dashboard, on free ports, re-analysing every second."""

    def __init__(self, tmp_path: Path, *extra: str) -> None:
        self.stderr = open(tmp_path / "serve.stderr", "w")  # noqa: SIM115 - closed in stop()
        cmd = [sys.executable, "-m", "choreoscope.cli", "serve", "--db", str(tmp_path / "live.duckdb"),
               "--grpc-port", "0", "--http-port", "0", "--dashboard-port", "0", "--analyze-every", "1", *extra]
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=self.stderr, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.grpc = self.dashboard = None
        deadline = time.monotonic() + 90
        while (self.grpc is None or self.dashboard is None) and time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if m := re.match(r"OTLP/gRPC listening on (\S+)", line):
                self.grpc = m.group(1)
            if m := re.match(r"dashboard on (\S+)", line):
                self.dashboard = m.group(1)
        if self.grpc is None or self.dashboard is None:
            self.stop()
            raise RuntimeError(f"serve did not start: {(tmp_path / 'serve.stderr').read_text()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()
        return self.proc.returncode


def test_serve_dashboard_shows_the_live_workflow_side_by_side(tmp_path):
    chromium = _browser_or_skip()
    from playwright.sync_api import sync_playwright

    intended = str(scenario_dir("ecommerce") / "intended.yaml")
    serve = Serve(tmp_path, "--intended", intended)
    try:
        exporter = OTLPSpanExporter(endpoint=serve.grpc, insecure=True)
        run_scenario("ecommerce", exporter, base_time_ns=time.time_ns(), instances=12)
        exporter.shutdown()

        url = f"{serve.dashboard}/workflow?workflow={quote_plus('storefront server POST /orders')}"
        ARTIFACTS.mkdir(exist_ok=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                # Tall: Streamlit scrolls inside its own container, so a full-page shot is the viewport.
                page = browser.new_page(viewport={"width": 1500, "height": 1700})
                # The analysis loop runs every second; the page fills over its websocket.
                deadline = time.monotonic() + 90
                while True:
                    page.goto(url)
                    try:
                        page.get_by_text("Intended (declared)").wait_for(timeout=15_000)
                        break
                    except Exception:
                        if time.monotonic() > deadline:
                            page.screenshot(path=str(ARTIFACTS / "dashboard-workflow-failed.png"), full_page=True)
                            raise
                # Both graphs drawn, each with every expected service (same node set on both sides).
                page.locator("svg").nth(1).wait_for(timeout=30_000)
                for svc in EXPECTED_SERVICES:
                    texts = page.locator("svg text", has_text=re.compile(rf"^{re.escape(svc)}$"))
                    texts.nth(1).wait_for(timeout=30_000)
                legend = page.get_by_text(re.compile(r"undeclared: \d+")).first.inner_text()
                assert int(re.search(r"undeclared: (\d+)", legend).group(1)) >= 1
                page.get_by_text(re.compile(r"missing: [1-9]")).first.wait_for(timeout=10_000)
                page.wait_for_timeout(1500)  # let the graphs finish scaling
                page.screenshot(path=str(ARTIFACTS / "dashboard-workflow.png"), full_page=True)

                _tour_every_page(page, serve.dashboard)

                page.goto(serve.dashboard + "/")
                page.get_by_role("button", name="Analyse now").wait_for(timeout=30_000)
                page.get_by_text("Spans/s").wait_for(timeout=10_000)
                page.screenshot(path=str(ARTIFACTS / "dashboard-overview.png"), full_page=True)
            finally:
                browser.close()
    finally:
        code = serve.stop()
    assert code == 0, (tmp_path / "serve.stderr").read_text()


def _shot(page, name: str) -> None:
    page.wait_for_timeout(1500)  # let charts and graphs finish drawing
    page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)


def _tour_every_page(page, base: str) -> None:
    """Every page of the app in the browser, each with what it must show, screenshot each."""
    # System map: services and events as nodes; a node opens its workflow.
    page.goto(base + "/system_map")
    page.get_by_text("Open a node").wait_for(timeout=30_000)
    for name in (*EXPECTED_SERVICES, "orders.placed"):
        page.locator("svg text", has_text=re.compile(rf"^{re.escape(name)}$")).first.wait_for(timeout=30_000)
    _shot(page, "system-map")
    # Clicking a node with one workflow opens it.
    page.locator("svg text", has_text=re.compile(r"^storefront$")).first.click()
    page.get_by_text("Intended (declared)").wait_for(timeout=30_000)
    page.goto(base + "/system_map?focus=shipping&node=svc%3Ashipping-service")
    page.get_by_text("takes part in").wait_for(timeout=30_000)
    page.locator("svg text", has_text=re.compile(r"^inventory-service$")).first.wait_for(timeout=30_000)
    _shot(page, "system-map-search")
    page.get_by_role("link", name="POST /orders").first.click()
    page.get_by_text("Intended (declared)").wait_for(timeout=30_000)

    page.goto(base + "/instance")
    page.get_by_text("ms since the instance started").first.wait_for(timeout=30_000)
    _shot(page, "instance")

    page.goto(base + "/findings")
    page.get_by_text(re.compile(r"^\d+ of \d+ findings")).wait_for(timeout=30_000)
    page.get_by_text("Severity").first.wait_for(timeout=30_000)
    page.get_by_text(re.compile(r"^.*implicit_ordering — inventory-service")).first.click()
    _shot(page, "findings")
    page.get_by_role("link", name="Evidence as charts").first.click()
    page.get_by_text("started early").first.wait_for(timeout=30_000)
    page.get_by_text(re.compile(r"gap \(ms, corrected clocks\)")).first.wait_for(timeout=30_000)
    page.get_by_text(re.compile(r"--fail-on implicit_ordering")).first.wait_for(timeout=10_000)
    _shot(page, "finding-implicit-ordering")

    page.goto(base + "/events")
    page.get_by_text("skew-corrected clocks", exact=False).first.wait_for(timeout=30_000)
    _shot(page, "events")
    page.goto(base + "/services")
    page.get_by_text("Service details").wait_for(timeout=30_000)
    _shot(page, "services")
    page.goto(base + "/load")
    page.get_by_role("heading", name="Load").wait_for(timeout=30_000)
    _shot(page, "load")


def _lines_until_listening(proc: subprocess.Popen) -> list[str]:
    """`choreoscope dashboard`'s output up to and including its "dashboard on URL" line."""
    lines: list[str] = []
    while not any(line.startswith("dashboard on") for line in lines):
        line = proc.stdout.readline()
        assert line, "".join(lines)
        lines.append(line)
    return lines


def test_dashboard_command_analyses_an_unanalysed_store_then_serves_it_read_only(tmp_path):
    import urllib.request

    from dashboard_fixtures import DUMPS, free_port

    from choreoscope.collector import store
    from choreoscope.collector.loaders import load_paths

    db = tmp_path / "loaded.duckdb"
    con = store.connect(db)
    load_paths(con, [d for d in DUMPS if "ecommerce" in d.name])
    con.close()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "choreoscope.cli", "dashboard", str(db), "--port", str(port)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        lines = _lines_until_listening(proc)
        assert any("analysing" in line for line in lines)
        assert f"dashboard on http://127.0.0.1:{port}\n" in lines
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=10) as resp:
            assert resp.read() == b"ok"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    con = store.connect(db, read_only=True)
    assert con.execute("SELECT count(*) FROM workflows").fetchall()[0][0] >= 1
    con.close()


def test_every_page_on_a_store_of_the_real_dumps(tmp_path):
    """`choreoscope dashboard` over a store built from every dump in ../shared/real_traces (traces
    nobody here wrote): every page renders what it must, screenshots in test-artifacts/real-*.png."""
    from dashboard_fixtures import free_port

    from choreoscope.collector import store
    from choreoscope.collector.loaders import load_paths
    from tests.paths import REAL_TRACES

    dumps = sorted(str(p) for p in REAL_TRACES.rglob("*.json") if not p.name.endswith(".manifest.json"))
    if not dumps:
        pytest.skip(f"{REAL_TRACES} is absent")
    chromium = _browser_or_skip()
    from playwright.sync_api import sync_playwright

    db = tmp_path / "real.duckdb"
    con = store.connect(db)
    assert load_paths(con, dumps).spans_loaded > 0
    con.close()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "choreoscope.cli", "dashboard", str(db), "--port", str(port)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    base = f"http://127.0.0.1:{port}"
    try:
        _lines_until_listening(proc)
        ARTIFACTS.mkdir(exist_ok=True)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1500, "height": 1700})
                # (path, text the page must show once filled)
                for path, expected in (("/", re.compile(r"\d+ findings")), ("/workflow", "Recovered"),
                                       ("/system_map", "Open a node"), ("/instance", "ms since the instance started"),
                                       ("/findings", "Severity"), ("/events", "skew-corrected clocks"),
                                       ("/services", "Service details"), ("/load", "Load")):
                    started = time.monotonic()
                    page.goto(base + path)
                    page.get_by_text(expected).first.wait_for(timeout=60_000)
                    name = path.strip("/") or "overview"
                    # the page's time to show what it must, for the log (not asserted: machines differ)
                    print(f"page {name}: {time.monotonic() - started:.2f} s to show {expected!r}")
                    page.wait_for_timeout(1500)
                    page.screenshot(path=str(ARTIFACTS / f"real-{name}.png"), full_page=True)
                page.goto(base + "/system_map")
                for service in ("frontend", "customer", "checkoutservice"):
                    page.locator("svg text", has_text=re.compile(rf"^{service}$")).first.wait_for(timeout=60_000)
            finally:
                browser.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
