"""Open what a command was pointed at: dump files (loaded into a temporary in-memory store) or a
.duckdb store (analysed in place, results written back for the dashboard).

For `analyze --engine spark`, inputs in choreoscope's own Parquet layout (`choreoscope export
parquet`) are not loaded: `parquet_lake` finds their files and `open_lake` gives the DuckDB stages a
store whose `spans` and `span_links` are views over the same files (object storage, which only
Spark reads, gets empty tables that the engine fills: `SparkEngine.copy_inputs`)."""

from __future__ import annotations

import sys
import tempfile
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
    spill: tempfile.TemporaryDirectory | None = None  # an in-memory store's spill directory


def _memory_store() -> tuple[duckdb.DuckDBPyConnection, tempfile.TemporaryDirectory]:
    """An in-memory DuckDB that spills into a directory of its own: by default it spills into
    `.tmp` in the working directory, which may be read-only (a container) or someone's repository.
    The directory goes with the OpenedInput holding it."""
    spill = tempfile.TemporaryDirectory(prefix="choreoscope-spill-")
    con = duckdb.connect(":memory:")
    con.execute("SET temp_directory = ?", [spill.name])
    return con, spill


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

    con, spill = _memory_store()
    store.ensure_schema(con)
    result = load_paths(con, inputs, dedup_after=True)
    con.execute("DROP TABLE span_keys")  # empty (dedup_after): this store is read, not added to
    opened = OpenedInput(con, ", ".join(inputs), list(result.errors), result.spans_rejected, spill)
    if store.scalar(con, "SELECT count(*) FROM spans") == 0:
        raise InputError("no spans could be loaded from " + ", ".join(inputs) + _errors_suffix(opened))
    return opened


def _errors_suffix(opened: OpenedInput) -> str:
    return ("\n  " + "\n  ".join(opened.load_errors[:20])) if opened.load_errors else ""


def warn_load_errors(opened: OpenedInput) -> None:
    if opened.load_errors:
        print(f"warning: {len(opened.load_errors)} problem(s) while loading; those records were skipped:"
              + _errors_suffix(opened), file=sys.stderr)


@dataclass(frozen=True)
class ParquetLake:
    """Inputs in choreoscope's own Parquet layout, read as they are (no load, no normalisation):
    the `spans` and `span_links` files (local), or the export roots' `spans/` and `span_links/`
    directories on object storage (`remote`: a URL such as s3a://bucket/lake, read by Spark only)."""

    spans: tuple[str, ...]
    span_links: tuple[str, ...]
    remote: bool = False


def _is_url(path: str) -> bool:
    return "://" in path


def parquet_lake(inputs: list[str]) -> ParquetLake | None:
    """The inputs as a ParquetLake when every one is choreoscope's own Parquet layout: a URL of an
    export root, or local files and directories whose files are all Parquet with every column of
    the store's `spans` (or `span_links`) table. Else None: they are loaded as any dump is (an
    `otel_traces` export goes through the normalisation of `collector/loaders/parquet.py`)."""
    if not inputs or any(is_store(p) for p in inputs):
        return None
    urls = [p for p in inputs if _is_url(p)]
    if urls:
        if len(urls) != len(inputs):
            return None
        roots = [p.rstrip("/") for p in urls]
        return ParquetLake(tuple(f"{r}/spans" for r in roots), tuple(f"{r}/span_links" for r in roots), remote=True)
    if not all(Path(p).exists() for p in inputs):
        return None
    import pyarrow as pa
    import pyarrow.parquet as pq

    from choreoscope.collector.loaders import expand_paths

    found: dict[str, list[str]] = {"spans": [], "span_links": []}
    for path in expand_paths(inputs):
        try:
            names = set(pq.read_schema(path).names)
        except (pa.ArrowException, OSError):
            return None
        if set(store.SPAN_COLUMN_NAMES) <= names:
            found["spans"].append(path)
        elif set(store.LINK_COLUMN_NAMES) <= names and "start_ns" not in names:
            found["span_links"].append(path)
        else:
            return None
    if not found["spans"]:
        return None
    return ParquetLake(tuple(found["spans"]), tuple(found["span_links"]))


def _parquet_view(name: str, columns: list[tuple[str, str]], files: tuple[str, ...]) -> str:
    cols = ", ".join(f"CAST({c} AS {sqltype.split()[0]}) AS {c}" for c, sqltype in columns)
    listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    return f"CREATE VIEW {name} AS SELECT {cols} FROM read_parquet([{listed}], hive_partitioning = false)"


def open_lake(lake: ParquetLake) -> OpenedInput:
    """An in-memory store over `lake` for the stages that run on DuckDB: `spans` and `span_links`
    are views over the local files (DuckDB reads only the columns and row groups a query needs);
    for a remote lake they are empty tables for `SparkEngine.copy_inputs` to fill."""
    con, spill = _memory_store()
    if lake.remote:
        store.ensure_schema(con)
        return OpenedInput(con, ", ".join(lake.spans), spill=spill)
    con.execute(_parquet_view("spans", store.SPAN_COLUMNS, lake.spans))
    if lake.span_links:
        con.execute(_parquet_view("span_links", store.LINK_COLUMNS, lake.span_links))
    else:
        cols = ", ".join(f"CAST(NULL AS {t.split()[0]}) AS {c}" for c, t in store.LINK_COLUMNS)
        con.execute(f"CREATE VIEW span_links AS SELECT {cols} WHERE false")
    if store.scalar(con, "SELECT count(*) FROM spans") == 0:
        raise InputError("no spans in " + ", ".join(lake.spans))
    return OpenedInput(con, ", ".join(lake.spans), spill=spill)
