"""Why a store file cannot be used, said in one line that names the file and what to do.

`collector.store.connect` refuses, with a StoreError carrying one of these messages, a file that is
truncated (shorter than the blocks it uses: DuckDB would otherwise open it and fail, or not, at
some later query), damaged (DuckDB's block checksums or structure fail while opening), not a
DuckDB file, written by a newer DuckDB, or written by a newer choreoscope (the store's schema
version in the `choreoscope_store` table is higher than this one knows). Damage found later, by a
query reading a bad block, is recognised by `damage_detail` wherever commands catch errors (the
CLI, the analysis pipeline, `load`), so every command gives the same one-line message and exit 2.
"""

from __future__ import annotations

import os

# A DuckDB file starts with a 4 KiB main header and two 4 KiB database headers.
_HEADER_SIZE = 4096

# What DuckDB says when a file's content is damaged (checksums, short reads, structure).
_DAMAGE_MARKERS = (
    "corrupt database file",
    "does not match stored checksum",
    "could not read enough bytes",
    "failed to deserialize",
    "is not a valid duckdb database file",
)
_NEWER_DUCKDB_MARKERS = ("trying to read a database file with version number", "newer version of duckdb")

WHAT_TO_DO = ("restore it from a backup, or move it away and load or receive the spans again "
              "into a new store")


def _one_line(text: str, limit: int = 240) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def truncation(con, path: str) -> str | None:
    """How `path` is shorter than the blocks in use say it must be, or None.

    DuckDB's file is three 4 KiB headers and then fixed-size blocks; `used_blocks` of them hold
    data (the others are free, and a free tail may be cut off the file), so a file shorter than the
    headers plus `used_blocks` blocks has lost some. (A cut that keeps that many bytes is found
    when a query reads a missing block: "Could not read enough bytes".)
    """
    try:
        size = os.path.getsize(path)
    except OSError:
        return None
    rows = con.execute("SELECT block_size, used_blocks FROM pragma_database_size() "
                       "WHERE database_name = current_database()").fetchall()
    if not rows or not rows[0][0]:
        return None
    block_size, used = rows[0]
    needed = 3 * _HEADER_SIZE + used * block_size
    if size < needed:
        return f"the file is truncated ({size:,} bytes; the {used} blocks in use need at least {needed:,})"
    return None


def damage_detail(exc: BaseException | str) -> str | None:
    """DuckDB's words for damage to the file, if `exc` (or its message) is that; else None."""
    text = str(exc)
    lowered = text.lower()
    found = [i for i in (lowered.find(m) for m in _DAMAGE_MARKERS) if i >= 0]
    if not found:
        return None
    # DuckDB's sentence only, also when it is quoted inside another message ("… (Corrupt …); …")
    at = min(found)
    opening = text.rfind("(", 0, at)
    start = opening + 1 if opening >= 0 else text.rfind("\n", 0, at) + 1
    end = text.find(")", at) if opening >= 0 else -1
    if end < 0:
        end = text.find("\n", at)
    return _one_line(text[start:end if end >= 0 else len(text)])


def damaged_message(path: str, detail: str) -> str:
    if "wal" in detail.lower():  # DuckDB could not replay the write-ahead log
        return (f"{path} is damaged and cannot be used: {detail}; move {path}.wal away to open the store "
                "as of its last checkpoint (what only the WAL holds is lost), or restore it from a backup")
    return f"{path} is damaged and cannot be used: {detail}; {WHAT_TO_DO}"


def open_failure_message(path: str, exc: BaseException) -> str:
    """The one-line message for a DuckDB error raised while opening `path`."""
    text = str(exc)
    lowered = text.lower()
    if any(marker in lowered for marker in _NEWER_DUCKDB_MARKERS):
        import duckdb

        return (f"{path} was written by a newer DuckDB than this one (duckdb {duckdb.__version__}): "
                f"{_one_line(text)}; upgrade (pip install -U choreoscope duckdb) to open it")
    if "not a valid duckdb database file" in lowered:
        size = os.path.getsize(path) if os.path.exists(path) else 0
        what = "an empty file" if size == 0 else "not a DuckDB database file"
        return (f"{path} is {what}, so not a choreoscope store; point --db at a store, or move the file "
                "away (a new store is created where none exists)")
    detail = damage_detail(exc)
    if detail is not None:
        return damaged_message(path, detail)
    return f"cannot open {path}: {_one_line(text)}"


def newer_schema_message(path: str, found: int, known: int) -> str:
    from choreoscope import __version__

    return (f"{path} was written by a newer choreoscope (store schema {found}; choreoscope {__version__} "
            f"reads schema {known} and older); upgrade choreoscope (pip install -U choreoscope) to open it")


def store_path(con) -> str:
    """The file behind a connection (for messages about damage found by a query)."""
    try:
        rows = con.execute("SELECT path FROM duckdb_databases() WHERE database_name = current_database()").fetchall()
        return rows[0][0] if rows and rows[0][0] else "the store"
    except Exception:  # noqa: BLE001 - only for a message
        return "the store"


def unreadable(con) -> str | None:
    """DuckDB's words for the first damaged block of the store behind `con`, or None when every
    block of every table reads back with its checksum.

    For commands that open a store and then serve it (the dashboard): damage is otherwise found
    by the first query that reads the block, in the middle of a page. Every column of every row is
    read once (a hash of each, so nothing is kept): ~0.05 s for a store of 100k spans (18 MB).
    """
    import duckdb

    tables = [t for (t,) in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE NOT temporary AND database_name = current_database() "
        "AND schema_name = 'main' ORDER BY table_name").fetchall()]
    for table in tables:
        quoted = '"' + table.replace('"', '""') + '"'
        try:
            con.execute(f"SELECT bit_xor(hash(COLUMNS(*))) FROM {quoted}").fetchall()
        except duckdb.Error as exc:
            detail = damage_detail(exc)
            if detail is not None:
                return f"{detail} (reading table {table})"
            raise
    return None
