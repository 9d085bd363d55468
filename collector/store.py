"""The DuckDB store: the `spans` and `span_links` tables every loader and the receiver fill.

Typed columns hold what analysis needs; the full attributes stay as JSON so nothing the
exporter sent is lost. Exporters retry, so the same span may arrive twice; it is stored once.
`spans` has no index: `span_keys` holds one 128-bit key per stored span, md5(trace_id:span_id) as
UHUGEINT, and its primary key refuses a span already stored. DuckDB's index (ART) on the two
VARCHAR ids made inserts ~5x dearer; on one 16-byte integer far less (INSERT … SELECT from Arrow
of 1.2M random-id rows in 4096-row transactions, one thread: 126k rows/s with the VARCHAR key,
290-330k with span_keys, 900k with no index at all; with the real 36-column rows at 0.2-1M
spans the row itself dominates and the layouts were within noise: bench/ingest.py --store-only).
Two different spans share a key only by an MD5 collision by chance: ~1e-19 at 1e10 spans.
Code that deletes spans must delete their span_keys too, or a re-sent copy counts as a duplicate.

`span_links` has no index either: a span's links travel with it, so a link row is new exactly when
its span is (the span's key decides), and a span's repeated links are dropped before the store
(`SpanBatch.add`). Its primary key on four VARCHAR ids made storing 394k links 14x dearer than
the plain insert (0.85 s against 0.06 s of CPU per 157k links; the spans' own insert and key cost
1.4 s per 400k spans), more than the spans' key: links without their spans (a Parquet
`span_links/` file) are checked against the stored ones in one anti-join instead.

Stores written before span_keys existed had the primary key on `spans`: opening one writable
rebuilds `spans` without it and fills `span_keys` (once, said on stderr). Stores of schema 2 get
the dropped-count columns (NULL for the spans already stored) on their first writable open, said
on stderr too; stores of schema 3 get `span_links` rebuilt without its primary key. Read-only opens
read any older layout as it is.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

import duckdb
import pyarrow as pa

from choreoscope.collector import store_errors

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
    # What the sender dropped (its OTLP counts) plus what choreoscope's limits dropped or truncated
    # (collector/spanbatch.py LIMITS). NULL: the source cannot say and nothing was cut here
    # (otel_traces; spans stored before schema 3). INTEGER: a count beyond 2^31-1 (OTLP's are
    # uint32) is stored as 2^31-1; 4 bytes a row of WAL and store rather than BIGINT's 8. Last, so a
    # migrated store's columns (added by ALTER TABLE) are in the same order as a new store's.
    ("dropped_attributes_count", "INTEGER"),  # the span's, its events' and its links' attributes
    ("dropped_events_count", "INTEGER"),
    ("dropped_links_count", "INTEGER"),
]
# The columns schema 3 added (a store of schema 2 or older is given them by ensure_schema).
DROPPED_COUNT_COLUMNS = ("dropped_attributes_count", "dropped_events_count", "dropped_links_count")

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

_ARROW_JSON = pa.json_(pa.string())


def as_json_typed(table: pa.Table) -> pa.Table:
    """`table` with its string columns named as JSON columns of the store (SPAN_COLUMNS,
    LINK_COLUMNS) marked as Arrow's JSON extension type (no copy): DuckDB then takes them as JSON
    without parsing each text to check it, which a plain string column inserted into a JSON column
    costs: 0.6-1.3 µs a span of 10 attributes less on the spans INSERT (a quarter to a third of it
    in groups of 4k-16k spans), ~0-2 µs (typically ~0.5-1) less on the whole group commit, COMMIT
    itself being a little dearer (`bench/ingest.py --writer`, 2 runs x 4 group sizes). Only for text choreoscope wrote itself (the
    receiver's decoders write it with orjson or as otlp_arrow reproduces it), never for a user's
    file: there DuckDB's check stays (tests/test_ingest_json_typed.py)."""
    json_columns = {name for name, sqltype in SPAN_COLUMNS + LINK_COLUMNS if sqltype == "JSON"}
    columns = []
    changed = False
    for field, column in zip(table.schema, table.columns):
        if field.name in json_columns and field.type == pa.string():
            column = pa.chunked_array([pa.ExtensionArray.from_storage(_ARROW_JSON, chunk)
                                       for chunk in column.chunks], _ARROW_JSON)
            changed = True
        columns.append(column)
    return pa.table(columns, names=table.column_names) if changed else table


def table_ddl(table: str, columns: list[tuple[str, str]], key: str | None) -> str:
    cols = ",\n  ".join(f"{name} {sqltype}" for name, sqltype in columns)
    primary = f",\n  PRIMARY KEY ({key})" if key else ""
    return f"CREATE TABLE IF NOT EXISTS {table} (\n  {cols}{primary}\n)"


# The dedup key of a span row (ids are fixed-width hex; the ':' keeps odd ones unambiguous too).
SPAN_KEY_SQL = "md5_number(trace_id || ':' || span_id)"

# The layout version of a store, kept in STORE_META_TABLE (one row). 1: the primary key on
# `spans` (no table recorded it); 2: `span_keys`; 3: the dropped counts (DROPPED_COUNT_COLUMNS);
# 4: `span_links` without its primary key. A store of a higher version is refused with a message
# to upgrade (collector/store_errors.py); a lower one is migrated by ensure_schema.
STORE_SCHEMA_VERSION = 4
STORE_META_TABLE = "choreoscope_store"

SCHEMA_DDL = [
    table_ddl("spans", SPAN_COLUMNS, None),
    table_ddl("span_links", LINK_COLUMNS, None),
    table_ddl("span_keys", [("key", "UHUGEINT NOT NULL")], "key"),
]


def connect(
    path: str | os.PathLike = DEFAULT_DB, read_only: bool = False, *, create: bool = True
) -> duckdb.DuckDBPyConnection:
    """Open a store, creating the choreoscope tables if needed (`create`, and not read-only).

    Raises StoreBusyError when another process holds the file, StoreDamagedError for a truncated
    or corrupt file, StoreNewerError for a store of a newer schema (or DuckDB), StoreError for
    anything else (not a DuckDB file, a DuckDB file of something else when `create` is false, …).
    Each message is one line naming the file and what to do (collector/store_errors.py).
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
        raise _open_error(path, exc) from exc
    except duckdb.Error as exc:
        raise _open_error(path, exc) from exc
    try:
        # Checked once the file is ours (no writer can be changing it now).
        short = store_errors.truncation(con, path) if path != ":memory:" else None
        if short:
            raise StoreDamagedError(store_errors.damaged_message(path, short))
        found = _schema_version(con)
        if found > STORE_SCHEMA_VERSION:
            raise StoreNewerError(store_errors.newer_schema_message(path, found, STORE_SCHEMA_VERSION))
        if not create:
            has_spans = scalar(con, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'spans'")
            if not has_spans:
                raise StoreError(f"{path} is a DuckDB file but not a choreoscope store (it has no spans table); "
                                 "load trace dumps into a store with `choreoscope load` first")
        if not read_only:
            ensure_schema(con, path)
        if path != ":memory:":
            _staged_spans_in(con, path, read_only)
    except StoreError:
        con.close()
        raise
    except duckdb.Error as exc:  # the catalog or the migration read a damaged block
        con.close()
        raise _open_error(path, exc) from exc
    return con


def _staged_spans_in(con: duckdb.DuckDBPyConnection, path: str, read_only: bool) -> None:
    """Acknowledged spans a killed receiver left in its staging database (collector/
    checkpoint_staging.py) are moved into the store at a writable open; a read-only open cannot,
    and says they are missing from what it reads."""
    from choreoscope.collector import checkpoint_staging  # it builds on this module

    staged = checkpoint_staging.staging_path(path)
    if not read_only:
        try:
            checkpoint_staging.move_left_behind(con, path)
        except duckdb.Error as exc:
            raise StoreError(f"cannot move the acknowledged spans staged in {staged} into {path}: "
                             f"{' '.join(str(exc).split())}. Nothing stored is damaged; move {staged} "
                             "away to open it without them") from exc
    elif os.path.exists(staged):
        print(f"choreoscope: {staged} may hold acknowledged spans a receiver "
              "left behind; they are moved into the store the next time it is opened for writing "
              "(`choreoscope serve` or `load`), and are not read until then", file=sys.stderr, flush=True)


def _open_error(path: str, exc: duckdb.Error) -> StoreError:
    message = store_errors.open_failure_message(path, exc)
    if "newer DuckDB" in message:
        return StoreNewerError(message)
    if store_errors.damage_detail(exc) is not None:
        return StoreDamagedError(message)
    return StoreError(message)


def _schema_version(con: duckdb.DuckDBPyConnection) -> int:
    """The store's schema version (STORE_META_TABLE), 0 for a store written before it was recorded."""
    if not scalar(con, "SELECT count(*) FROM duckdb_tables() WHERE NOT temporary AND schema_name = 'main' "
                       "AND database_name = current_database() "
                       "AND table_name = ?", [STORE_META_TABLE]):
        return 0
    return scalar(con, f"SELECT max(schema_version) FROM {STORE_META_TABLE}") or 0


class StoreError(RuntimeError):
    """The store cannot be opened or is not a choreoscope store."""


class StoreBusyError(StoreError):
    """The DuckDB file is locked by another process."""


class StoreDamagedError(StoreError):
    """The file is truncated or corrupt (found opening it, or by a query reading a bad block)."""


class StoreNewerError(StoreError):
    """The store was written by a newer choreoscope (its schema) or a newer DuckDB (its format)."""


def damaged_store_error(con: duckdb.DuckDBPyConnection, exc: BaseException) -> StoreDamagedError | None:
    """A StoreDamagedError naming the file behind `con` if `exc` is DuckDB finding damage, else None
    (for code that catches query errors: the analysis pipeline, the loaders' callers)."""
    detail = store_errors.damage_detail(exc)
    if detail is None:
        return None
    return StoreDamagedError(store_errors.damaged_message(store_errors.store_path(con), detail))


@contextlib.contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """One transaction: committed when the block ends, rolled back when it raises."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {t for (t,) in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE NOT temporary AND schema_name = 'main' "
        "AND database_name = current_database()").fetchall()}


def _spans_have_primary_key(con: duckdb.DuckDBPyConnection) -> bool:
    return bool(scalar(con, "SELECT count(*) FROM duckdb_constraints() WHERE schema_name = 'main' "
                            "AND table_name = 'spans' AND constraint_type = 'PRIMARY KEY'"))


def _links_have_primary_key(con: duckdb.DuckDBPyConnection) -> bool:
    return bool(scalar(con, "SELECT count(*) FROM duckdb_constraints() WHERE schema_name = 'main' "
                            "AND table_name = 'span_links' AND constraint_type = 'PRIMARY KEY'"))


def _span_columns(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [c for (c,) in con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'main' "
        "AND table_name = 'spans' ORDER BY ordinal_position").fetchall()]


def ensure_schema(con: duckdb.DuckDBPyConnection, path: str | None = None) -> None:
    """Create the tables a store needs; migrate a store of an older layout (see above)."""
    tables = _tables(con)
    legacy = "spans" in tables and _spans_have_primary_key(con)
    fill_keys = "spans" in tables and "span_keys" not in tables
    old_columns = _span_columns(con) if "spans" in tables else SPAN_COLUMN_NAMES
    missing = [(name, sqltype) for name, sqltype in SPAN_COLUMNS if name not in old_columns]
    if legacy or fill_keys:
        n = scalar(con, "SELECT count(*) FROM spans")
        print(f"choreoscope: upgrading store {path or '(in memory)'} ({n:,} spans): duplicate spans are "
              "now refused through the span_keys table instead of a primary key on spans; "
              "this happens once", file=sys.stderr, flush=True)
        with transaction(con):
            if legacy:
                kept = [c for c in SPAN_COLUMN_NAMES if c in old_columns]
                con.execute(table_ddl("_spans_migrating", SPAN_COLUMNS, None))
                con.execute(f"INSERT INTO _spans_migrating ({', '.join(kept)}) SELECT {', '.join(kept)} FROM spans")
                con.execute("DROP TABLE spans")
                con.execute("ALTER TABLE _spans_migrating RENAME TO spans")
                missing = []
            con.execute("DROP TABLE IF EXISTS span_keys")
            con.execute(SCHEMA_DDL[2])
            # DISTINCT: a store without the primary key (none written by choreoscope) could
            # hold a span twice; its key is kept once.
            con.execute(f"INSERT INTO span_keys SELECT DISTINCT {SPAN_KEY_SQL} FROM spans")
    if missing:
        n = scalar(con, "SELECT count(*) FROM spans")
        print(f"choreoscope: upgrading store {path or '(in memory)'} ({n:,} spans): spans now record "
              f"{', '.join(name for name, _ in missing)} (what the sender and choreoscope's limits dropped; "
              "NULL for the spans already stored); this happens once", file=sys.stderr, flush=True)
        with transaction(con):
            for name, sqltype in missing:  # appended: the order SPAN_COLUMNS ends with
                con.execute(f"ALTER TABLE spans ADD COLUMN {name} {sqltype}")
    if "span_links" in tables and _links_have_primary_key(con):
        n = scalar(con, "SELECT count(*) FROM span_links")
        print(f"choreoscope: upgrading store {path or '(in memory)'} ({n:,} span links): links are now "
              "told apart through their spans instead of a primary key on span_links; this happens once",
              file=sys.stderr, flush=True)
        with transaction(con):
            con.execute(table_ddl("_span_links_migrating", LINK_COLUMNS, None))
            con.execute("INSERT INTO _span_links_migrating SELECT * FROM span_links")
            con.execute("DROP TABLE span_links")
            con.execute("ALTER TABLE _span_links_migrating RENAME TO span_links")
    for ddl in SCHEMA_DDL:
        con.execute(ddl)
    # The schema version, for a later choreoscope to read (and an older one to refuse the store).
    con.execute(f"CREATE TABLE IF NOT EXISTS {STORE_META_TABLE} (schema_version INTEGER NOT NULL, "
                "written_by VARCHAR)")
    if (scalar(con, f"SELECT max(schema_version) FROM {STORE_META_TABLE}") or 0) < STORE_SCHEMA_VERSION:
        from choreoscope import __version__

        con.execute(f"DELETE FROM {STORE_META_TABLE}")
        con.execute(f"INSERT INTO {STORE_META_TABLE} VALUES (?, ?)",
                    [STORE_SCHEMA_VERSION, f"choreoscope {__version__}"])


# The rows (with their SPAN_KEY_SQL as _key) whose key is among `_new_span_keys` (hi and lo halves).
_NEW_KEYS_ONLY = """SEMI JOIN _new_span_keys
              ON (_key >> 64)::UBIGINT = _new_span_keys.hi
              AND (_key & 18446744073709551615)::UBIGINT = _new_span_keys.lo"""


def insert_arrow(con: duckdb.DuckDBPyConnection, spans: pa.Table, links: pa.Table | None,
                 skip_duplicates: bool = True, *, keys: bool = True) -> int:
    """Insert span rows and the links they hold, skipping spans already stored. Returns spans added.

    Call it inside a transaction (the loaders' chunks and the receiver's group commit are one
    each): the span keys, the spans and their links must commit together, else a crash between
    them would leave a key whose span (or links) a retry could no longer store. A span twice in
    `spans` is stored once (its first row), with its links once. `skip_duplicates=False` inserts
    without sorting out duplicates (faster) and raises duckdb.ConstraintException if a span is
    already stored or repeated: for callers that retry with the check when that happens.
    `keys=False` (with `skip_duplicates=False`) stores no span keys: for a store that is filled
    once and deduplicated afterwards (`drop_repeated_spans`), the analysis's in-memory store of a
    dump. Links without spans (`spans` empty) are stored unless stored already (`insert_links`).
    """
    if not spans.num_rows:
        insert_links(con, links)
        return 0
    if not skip_duplicates:
        _incoming_spans = spans  # read by name below (DuckDB's replacement scan)
        if keys:
            con.execute(f"INSERT INTO span_keys SELECT {SPAN_KEY_SQL} FROM _incoming_spans").fetchall()
        # con.execute here, not scalar(): the replacement scan looks in the calling frame
        added = con.execute("INSERT INTO spans SELECT * FROM _incoming_spans").fetchall()[0][0]
        if links is not None and links.num_rows:  # every span is new, so is each of its links
            _incoming_links = links
            con.execute("INSERT INTO span_links SELECT * FROM _incoming_links").fetchall()
        return added
    # The rare path (a retry or a re-load): registered views, since the replacement scan of
    # local variables does not reach into INSERT … RETURNING.
    con.register("_incoming_spans", spans.append_column("_ord", pa.array(range(spans.num_rows), pa.int64())))
    try:
        # The keys not stored yet, each once (INSERT OR IGNORE returns the rows it inserted), as
        # two UBIGINT halves: Arrow has no 128-bit unsigned integer.
        new_keys = con.execute(
            f"INSERT OR IGNORE INTO span_keys SELECT {SPAN_KEY_SQL} FROM _incoming_spans "
            "RETURNING (key >> 64)::UBIGINT AS hi, (key & 18446744073709551615)::UBIGINT AS lo").fetchnumpy()
        if not len(new_keys["hi"]):
            return 0
        con.register("_new_span_keys", pa.table({"hi": new_keys["hi"], "lo": new_keys["lo"]}))
        cols = ", ".join(SPAN_COLUMN_NAMES)
        added = scalar(con, f"""
            INSERT INTO spans SELECT {cols} FROM (
              SELECT *, {SPAN_KEY_SQL} AS _key FROM _incoming_spans
            ) {_NEW_KEYS_ONLY}
            QUALIFY row_number() OVER (PARTITION BY _key ORDER BY _ord) = 1""")
        if links is not None and links.num_rows:
            # The links of the spans just stored, once each (a span sent twice in this batch
            # brought its links twice).
            con.register("_incoming_links", links)
            lcols = ", ".join(LINK_COLUMN_NAMES)
            con.execute(f"""
                INSERT INTO span_links SELECT DISTINCT ON ({LINK_KEY}) {lcols} FROM (
                  SELECT *, {SPAN_KEY_SQL} AS _key FROM _incoming_links
                ) {_NEW_KEYS_ONLY}""").fetchall()
        return added
    finally:
        con.unregister("_incoming_spans")
        con.unregister("_new_span_keys")
        con.unregister("_incoming_links")


# What tells one link row from another: the span holding it and the span it points to.
LINK_KEY = "trace_id, span_id, linked_trace_id, linked_span_id"


def insert_links(con: duckdb.DuckDBPyConnection, links: pa.Table | None) -> None:
    """Links that come without their spans (a Parquet `span_links/` file): each stored once, those
    stored already skipped, in one anti-join against the stored links."""
    if links is None or not links.num_rows:
        return
    con.register("_incoming_links", links)
    try:
        lcols = ", ".join(LINK_COLUMN_NAMES)
        con.execute(f"""
            INSERT INTO span_links SELECT DISTINCT ON ({LINK_KEY}) {lcols} FROM _incoming_links
            ANTI JOIN span_links USING ({LINK_KEY})""").fetchall()
    finally:
        con.unregister("_incoming_links")


def drop_repeated_spans(con: duckdb.DuckDBPyConnection) -> int:
    """Remove the later copies of spans stored more than once (and of their links) from a store
    filled with `keys=False`. Returns the copies removed. One aggregate (~0.15 s at 1M spans) when
    there are none, the usual case. No keys are recorded (1.3 s at 1M): such a store is read, not
    added to, and its caller drops `span_keys` so that an insert would fail, not double a span."""
    total, distinct = con.execute(
        "SELECT count(*), count(DISTINCT (trace_id, span_id)) FROM spans").fetchall()[0]
    if total != distinct:
        with transaction(con):
            con.execute("DELETE FROM spans WHERE rowid NOT IN (SELECT min(rowid) FROM spans "
                        "GROUP BY trace_id, span_id)")
            con.execute(f"DELETE FROM span_links WHERE rowid NOT IN (SELECT min(rowid) FROM span_links "
                        f"GROUP BY {LINK_KEY})")
    return total - distinct


# An in-memory store whose tables hold at most this share of the machine's memory uncompressed is
# left uncompressed (`filled_in_memory` says why).
UNCOMPRESSED_SHARE = 1 / 8


def machine_memory() -> int:
    """The machine's physical memory in bytes (4 GiB where it cannot be read)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 4 << 30


_MEMORY_UNITS = {"bytes": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40,
                 "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}


def memory_limit(con: duckdb.DuckDBPyConnection) -> float:
    """The DuckDB instance's memory limit in bytes (inf when unlimited or unreadable)."""
    text = scalar(con, "SELECT current_setting('memory_limit')")
    number, _, unit = str(text).partition(" ")
    try:
        return float(number) * _MEMORY_UNITS[unit or "bytes"]
    except (ValueError, KeyError):
        return float("inf")


def is_in_memory(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the store behind `con` is an in-memory database (no file)."""
    return not scalar(con, "SELECT path FROM duckdb_databases() WHERE database_name = current_database()")


def memory_held(con: duckdb.DuckDBPyConnection) -> int:
    """The bytes DuckDB's buffer pool holds (an in-memory store's tables among them)."""
    return int(scalar(con, "SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory()"))


@contextlib.contextmanager
def filled_in_memory(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Fill a temporary in-memory store (the analysis's, of dumps) without DuckDB's automatic
    checkpoints; compress it once at the end only if it holds more than UNCOMPRESSED_SHARE of the
    machine's memory.

    An in-memory database checkpoints too, each time ~16 MB of changes have gathered: it
    compresses the new rows, 600 MB of spans down to 75 MB a million. During a load that ran in
    the loading process, on one thread, beside the parse workers: ~3 s of CPU per million spans.
    And during the analysis it compressed each stage's tables as they were written, and the later
    stages decompressed them again. Measured on the bench's 1M-span dump (bench/analyze.py's
    load and pipeline, twice each): compressed once after the load, 10.3-11.2 s load and 19.8-22.4
    s analysis at 1.4 GB peak RSS; never compressed, 7.6-9.7 s and 18.3-20.1 s at 1.9 GB. The
    one CHECKPOINT costs more than its share as the store grows: the 3M-span dump's (1.75 GB
    uncompressed, 218 MB after) took ~20 s of CPU against ~3 s for 1M, and the analysis after it
    took as much CPU either way (224 against 227 s), at 5.2 GB peak RSS uncompressed against 3.7
    GB. So a store of up to an eighth of the machine's memory (3 GiB, about 5M spans, on 24 GiB;
    1 GiB, 1.7M spans, on 8 GiB) stays uncompressed, with no checkpoints for its life; a larger
    one is compressed by one CHECKPOINT at the end of the load, on every thread, once the workers
    are done, and checkpoints as DuckDB does from then on. A store file is left as it is: its
    checkpoints are how its rows reach the file."""
    if not is_in_memory(con):
        yield
        return
    threshold = scalar(con, "SELECT current_setting('checkpoint_threshold')")
    con.execute("SET checkpoint_threshold = '1000TB'")
    try:
        yield
    finally:
        if memory_held(con) > machine_memory() * UNCOMPRESSED_SHARE:
            con.execute(f"SET checkpoint_threshold = '{threshold}'")
            con.execute("CHECKPOINT")


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None):
    """The single value of a one-row query. (fetchall, because DuckDB 2 refuses new work on a
    connection whose last result was not read to the end.)"""
    rows = con.execute(sql, params or []).fetchall()
    return rows[0][0] if rows else None
