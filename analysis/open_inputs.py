"""Open what a command was pointed at: dump files (loaded into a temporary in-memory store) or a
.duckdb store (analysed in place, results written back for the dashboard)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from choreoscope.collector import store


class InputError(ValueError):
    """The inputs cannot be analysed (missing file, nothing loadable)."""


@dataclass
class OpenedInput:
    con: duckdb.DuckDBPyConnection
    description: str
    load_errors: list[str] = field(default_factory=list)
    rejected: int = 0


def is_store(path: str) -> bool:
    return path.endswith((".duckdb", ".db"))


def open_inputs(inputs: list[str], db: str) -> OpenedInput:
    """Open `inputs` (or the store `db` if there are none)."""
    if not inputs:
        if not Path(db).exists():
            raise InputError(f"no input given and the store {db} does not exist: pass trace dumps or --db")
        return OpenedInput(store.connect(db, create=False), db)
    stores = [p for p in inputs if is_store(p)]
    if stores:
        if len(inputs) > 1:
            raise InputError("give either one .duckdb store or trace dump files, not both")
        if not Path(stores[0]).exists():
            raise InputError(f"{stores[0]}: no such store")
        return OpenedInput(store.connect(stores[0], create=False), stores[0])
    for path in inputs:
        if not Path(path).exists():
            raise InputError(f"{path}: no such file")
    from choreoscope.collector.loaders import load_paths

    con = duckdb.connect(":memory:")
    store.ensure_schema(con)
    result = load_paths(con, inputs)
    opened = OpenedInput(con, ", ".join(inputs), list(result.errors), result.spans_rejected)
    if store.scalar(con, "SELECT count(*) FROM spans") == 0:
        raise InputError("no spans could be loaded from " + ", ".join(inputs) + _errors_suffix(opened))
    return opened


def _errors_suffix(opened: OpenedInput) -> str:
    return ("\n  " + "\n  ".join(opened.load_errors[:20])) if opened.load_errors else ""


def warn_load_errors(opened: OpenedInput) -> None:
    if opened.load_errors:
        print(f"warning: {len(opened.load_errors)} problem(s) while loading; those records were skipped:"
              + _errors_suffix(opened), file=sys.stderr)
