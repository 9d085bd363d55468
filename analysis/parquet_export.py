"""`choreoscope export parquet`: the store's `spans` and `span_links` as Parquet, partitioned by day.

Layout (Hive partitioning, which DuckDB, Spark, ClickHouse and pyarrow read as a table):

    DIR/spans/day=2025-01-15/part-0.parquet        the store's `spans` columns, as stored
    DIR/span_links/day=2025-01-15/part-0.parquet   `span_links`, filed under the day of the span holding the link

The day is the UTC date of the span's start (`unknown` for a span without one). Within a day rows
keep the store's order (the order they were loaded or received in). `choreoscope load DIR` (or `analyze DIR`)
reads it back into the same rows. An earlier export's `spans/` and `span_links/` in DIR are replaced;
a DIR/spans that holds anything else is refused.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb

from choreoscope.collector.store import LINK_COLUMN_NAMES, SPAN_COLUMN_NAMES, scalar

_DAY = ("coalesce(strftime(make_timestamp({ns} // 1000), '%Y-%m-%d'), 'unknown')")


class ExportError(RuntimeError):
    """The output directory cannot be written as asked."""


def _clear(target: Path) -> None:
    """Remove an earlier export's partitions; refuse a directory holding anything else."""
    if not target.exists():
        return
    if not target.is_dir():
        raise ExportError(f"{target} exists and is not a directory")
    foreign = [p.name for p in target.iterdir() if not (p.is_dir() and p.name.startswith("day="))]
    if foreign:
        raise ExportError(f"{target} holds files that are not an earlier export's day=… partitions "
                          f"({', '.join(sorted(foreign)[:5])}); choose another --out")
    shutil.rmtree(target)


def _copy(con: duckdb.DuckDBPyConnection, query: str, target: Path) -> None:
    target.mkdir(parents=True)
    con.execute(f"COPY ({query}) TO '{_sql_text(str(target))}' (FORMAT parquet, COMPRESSION zstd, "
                "PARTITION_BY (day), FILENAME_PATTERN 'part-{i}', OVERWRITE_OR_IGNORE true)")


def _sql_text(text: str) -> str:
    return text.replace("'", "''")


def export_parquet(con: duckdb.DuckDBPyConnection, out_dir: str) -> dict[str, int]:
    """Write the store behind `con` under `out_dir`; returns the rows written per table and the days."""
    out = Path(out_dir)
    spans_dir, links_dir = out / "spans", out / "span_links"
    for target in (spans_dir, links_dir):
        _clear(target)
    cols = ", ".join(SPAN_COLUMN_NAMES)
    _copy(con, f"SELECT {cols}, {_DAY.format(ns='start_ns')} AS day FROM spans "
               "ORDER BY day, rowid", spans_dir)
    link_cols = ", ".join(f"l.{c}" for c in LINK_COLUMN_NAMES)
    _copy(con, f"SELECT {link_cols}, {_DAY.format(ns='s.start_ns')} AS day FROM span_links l "
               "LEFT JOIN spans s USING (trace_id, span_id) "
               "ORDER BY day, l.rowid", links_dir)
    return {
        "spans": scalar(con, "SELECT count(*) FROM spans"),
        "span_links": scalar(con, "SELECT count(*) FROM span_links"),
        "days": sum(1 for p in spans_dir.iterdir() if p.is_dir()),
    }
