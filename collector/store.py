"""The DuckDB store: the `spans` and `span_links` tables every loader and the receiver fill.

Typed columns hold what analysis needs; the full attributes stay as JSON so nothing the
exporter sent is lost. (trace_id, span_id) is the primary key and inserts ignore rows already
present, because exporters retry and the same span may arrive twice.
"""

from __future__ import annotations

import os

import duckdb
import pyarrow as pa

DEFAULT_DB = "choreoscope.duckdb"

SPAN_COLUMNS: list[tuple[str, str]] = [
    ("trace_id", "VARCHAR NOT NULL"),  # 32 lowercase hex digits
    ("span_id", "VARCHAR NOT NULL"),  # 16 lowercase hex digits
    ("parent_span_id", "VARCHAR"),
    ("trace_state", "VARCHAR"),
    ("name", "VARCHAR"),
    ("kind", "VARCHAR"),  # UNSPECIFIED INTERNAL SERVER CLIENT PRODUCER CONSUMER
    ("start_ns", "BIGINT"),  # unix epoch nanoseconds
    ("end_ns", "BIGINT"),
    ("status_code", "VARCHAR"),  # UNSET OK ERROR
    ("status_message", "VARCHAR"),
    ("service_name", "VARCHAR"),
    ("service_version", "VARCHAR"),
    ("service_namespace", "VARCHAR"),
    ("service_instance_id", "VARCHAR"),
    ("scope_name", "VARCHAR"),
    ("scope_version", "VARCHAR"),
    ("messaging_system", "VARCHAR"),
    ("messaging_destination", "VARCHAR"),
    ("messaging_operation", "VARCHAR"),  # send create receive process settle
    ("messaging_message_id", "VARCHAR"),
    ("messaging_consumer_group", "VARCHAR"),
    ("db_system", "VARCHAR"),
    ("db_collection", "VARCHAR"),
    ("db_operation", "VARCHAR"),
    ("rpc_system", "VARCHAR"),
    ("rpc_service", "VARCHAR"),
    ("rpc_method", "VARCHAR"),
    ("http_method", "VARCHAR"),
    ("http_route", "VARCHAR"),
    ("http_status_code", "INTEGER"),
    ("server_address", "VARCHAR"),
    ("peer_service", "VARCHAR"),
    ("retry_attempt", "INTEGER"),
    ("attributes", "JSON"),  # span attributes, {key: value}
    ("resource_attributes", "JSON"),
    ("events", "JSON"),  # [{"name", "time_ns", "attributes"}]
    ("source", "VARCHAR"),  # where the span came from: otlp-grpc, otlp-http, or a file name
]

LINK_COLUMNS: list[tuple[str, str]] = [
    ("trace_id", "VARCHAR NOT NULL"),  # the span that holds the link
    ("span_id", "VARCHAR NOT NULL"),
    ("linked_trace_id", "VARCHAR NOT NULL"),
    ("linked_span_id", "VARCHAR NOT NULL"),
    ("linked_trace_state", "VARCHAR"),
    ("attributes", "JSON"),
]

SPAN_COLUMN_NAMES = [name for name, _ in SPAN_COLUMNS]
LINK_COLUMN_NAMES = [name for name, _ in LINK_COLUMNS]

_ARROW_TYPES = {"VARCHAR": pa.string(), "BIGINT": pa.int64(), "INTEGER": pa.int32(), "JSON": pa.string()}


def arrow_schema(columns: list[tuple[str, str]]) -> pa.Schema:
    return pa.schema([(name, _ARROW_TYPES[sqltype.split()[0]]) for name, sqltype in columns])


SPAN_ARROW_SCHEMA = arrow_schema(SPAN_COLUMNS)
LINK_ARROW_SCHEMA = arrow_schema(LINK_COLUMNS)


def _ddl(table: str, columns: list[tuple[str, str]], key: str) -> str:
    cols = ",\n  ".join(f"{name} {sqltype}" for name, sqltype in columns)
    return f"CREATE TABLE IF NOT EXISTS {table} (\n  {cols},\n  PRIMARY KEY ({key})\n)"


SCHEMA_DDL = [
    _ddl("spans", SPAN_COLUMNS, "trace_id, span_id"),
    _ddl("span_links", LINK_COLUMNS, "trace_id, span_id, linked_trace_id, linked_span_id"),
]


def connect(
    path: str | os.PathLike = DEFAULT_DB, read_only: bool = False, *, create: bool = True
) -> duckdb.DuckDBPyConnection:
    """Open a store, creating the choreoscope tables if needed (`create`, and not read-only).

    Raises StoreBusyError when another process holds the file, StoreError for anything else
    (not a DuckDB file, a DuckDB file of something else when `create` is false, …).
    """
    path = str(path)
    try:
        con = duckdb.connect(path, read_only=read_only)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise StoreBusyError(
                f"cannot open {path}: another process holds it ({exc}). Another choreoscope process "
                "(serve?) probably has it open; stop it or point this command at another --db."
            ) from exc
        raise StoreError(f"cannot open {path}: {exc}") from exc
    except duckdb.Error as exc:
        raise StoreError(f"cannot open {path}: {exc}") from exc
    if not create:
        has_spans = scalar(con, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'spans'")
        if not has_spans:
            con.close()
            raise StoreError(f"{path} is a DuckDB file but not a choreoscope store (it has no spans table); "
                             "load trace dumps into a store with `choreoscope load` first")
    if not read_only:
        ensure_schema(con)
    return con


class StoreError(RuntimeError):
    """The store cannot be opened or is not a choreoscope store."""


class StoreBusyError(StoreError):
    """The DuckDB file is locked by another process."""


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    for ddl in SCHEMA_DDL:
        con.execute(ddl)


def insert_arrow(con: duckdb.DuckDBPyConnection, spans: pa.Table, links: pa.Table | None,
                 skip_duplicates: bool = True) -> int:
    """Insert span and link rows, skipping (trace_id, span_id) already stored. Returns spans added.

    Runs in the caller's transaction if one is open (the receiver's group commit does that).
    `skip_duplicates=False` inserts spans without the duplicate check (about twice as fast in
    DuckDB) and raises duckdb.ConstraintException if one is already stored: for callers that
    retry with the check when that happens.
    """
    con.register("_incoming_spans", spans)
    try:
        # INSERT answers with the number of rows it inserted; ignored duplicates are not counted.
        verb = "INSERT OR IGNORE" if skip_duplicates else "INSERT"
        added = scalar(con, f"{verb} INTO spans SELECT * FROM _incoming_spans")
    finally:
        con.unregister("_incoming_spans")
    if links is not None and links.num_rows:
        con.register("_incoming_links", links)
        try:
            con.execute("INSERT OR IGNORE INTO span_links SELECT * FROM _incoming_links")
        finally:
            con.unregister("_incoming_links")
    return added


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None):
    """The single value of a one-row query. (fetchall, because DuckDB 2 refuses new work on a
    connection whose last result was not read to the end.)"""
    rows = con.execute(sql, params or []).fetchall()
    return rows[0][0] if rows else None
