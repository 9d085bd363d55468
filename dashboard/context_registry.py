"""The process-wide registry that hands the serving process's live objects to the app script.

Streamlit runs `dashboard/app.py` in its own script threads; DuckDB lets one process hold the
store, so the script must read through cursors of the connection `choreoscope serve` (or
`choreoscope dashboard`) opened. The launcher registers that connection here before the server
starts; the script reads it back with `current()`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import duckdb


@dataclass
class DashboardContext:
    """What the app script may use. `receiver` and `loop` are None offline."""

    con: duckdb.DuckDBPyConnection
    db_path: str
    read_only: bool
    receiver: Any = None  # collector.serve.Receiver when serving
    loop: Any = None  # analysis.live.AnalysisLoop when serving
    intended_paths: list[str] = field(default_factory=list)
    loads: int = 0  # bumped by the Load page, so cached page data is recomputed
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def live(self) -> bool:
        return self.receiver is not None

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A fresh cursor of the shared connection: DuckDB wants one per thread."""
        return self.con.cursor()

    def data_version(self) -> tuple:
        """Changes whenever the analysis tables may have changed: the key of every page cache."""
        runs = self.loop.status.runs if self.loop is not None else 0
        return (self.db_path, runs, self.loads)


_context: DashboardContext | None = None


def register(context: DashboardContext | None) -> None:
    global _context
    _context = context


def current() -> DashboardContext | None:
    return _context
