"""Shared pieces of the dashboard tests: a real store built from the SDK-produced sample dumps,
analysed by the real pipeline (with the scenarios' intended workflows when conformance exists),
and an AppTest of the real dashboard script over it."""

from __future__ import annotations

import importlib.util
import shutil
import socket
from pathlib import Path

from choreoscope.analysis.pipeline import run_pipeline
from choreoscope.collector import store
from choreoscope.collector.loaders import load_paths

REPO = Path(__file__).resolve().parent.parent
DUMPS = sorted((REPO / "sample_traces" / "dumps").glob("*.otlp.jsonl"))
INTENDED = sorted((REPO / "sample_traces" / "scenarios").glob("*/intended.yaml"))
APP = str(REPO / "dashboard" / "app.py")
CHROMIUM = "/usr/bin/chromium"


def conformance_available() -> bool:
    return importlib.util.find_spec("choreoscope.analysis.conformance") is not None


def build_sample_store(path: Path, dumps: list[Path] | None = None) -> list[str]:
    """Load the sample dumps into `path` and analyse them; returns the intended paths used."""
    intended = [str(p) for p in INTENDED] if conformance_available() else []
    con = store.connect(path)
    try:
        result = load_paths(con, dumps or DUMPS)
        assert result.ok and result.spans_loaded > 0, result.errors
        run_pipeline(con, intended)
    finally:
        con.close()
    return intended


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium_path() -> str | None:
    return CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
