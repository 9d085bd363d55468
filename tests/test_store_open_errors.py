"""A store file that is truncated, corrupt, not DuckDB's, or written by a newer choreoscope: every
command that opens a store answers one line naming the file and what to do, and exits 2; never a
traceback (collector/store_errors.py, collector.store.connect, choreoscope.cli.main).

The damaged files are made from a real store: cut to a third of its length (DuckDB itself would
open it and fail, or not, at some later query: connect compares the file's size with the blocks in
use), or with bytes overwritten in every 4 KiB page past the first 300 KB (DuckDB's block
checksums fail when a command reads them: at open, or in the query that touches them).
"""

from __future__ import annotations

import shutil
import signal
import sys
from pathlib import Path

import duckdb
import pytest
from receiver_fixtures import ServeProcess, make_spans

from choreoscope.cli import main
from choreoscope.collector import store
from choreoscope.sample_traces.generate import DUMPS_DIR

DUMPS = [str(DUMPS_DIR / f"{n}.otlp.jsonl") for n in ("hybrid_billing", "ecommerce")]
OTHER_DUMP = str(DUMPS_DIR / "notification_fanout.otlp.jsonl")


@pytest.fixture(scope="module")
def good_store(tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("open_errors") / "good.duckdb"
    assert main(["load", *DUMPS, "--db", str(db), "--no-progress"]) == 0
    con = store.connect(db)
    con.execute("CHECKPOINT")  # everything in the file, nothing left in the WAL
    con.close()
    return db


def _truncated(good: Path, out: Path) -> None:
    data = good.read_bytes()
    out.write_bytes(data[: len(data) // 3])


def _corrupt(good: Path, out: Path) -> None:
    data = bytearray(good.read_bytes())
    for at in range(300_000, len(data), 4096):
        data[at:at + 64] = b"\xaa" * 64
    out.write_bytes(bytes(data))


def _corrupt_wal(good: Path, out: Path) -> None:
    """A store whose last load is only in its WAL (as a killed process leaves it), the WAL then
    damaged in the middle of that transaction."""
    shutil.copy(good, out)
    con = duckdb.connect(str(out))
    con.execute("PRAGMA disable_checkpoint_on_shutdown")
    con.execute("SET checkpoint_threshold = '1TB'")
    con.execute("INSERT INTO spans SELECT * REPLACE (span_id || 'x' AS span_id) FROM spans")
    con.close()
    wal = Path(f"{out}.wal")
    data = bytearray(wal.read_bytes())
    for at in range(len(data) // 2, len(data) // 2 + 2000):
        data[at] ^= 0x55
    wal.write_bytes(bytes(data))


def _empty(good: Path, out: Path) -> None:
    out.write_bytes(b"")


def _not_duckdb(good: Path, out: Path) -> None:
    shutil.copy(DUMPS[0], out)


def _newer_schema(good: Path, out: Path) -> None:
    shutil.copy(good, out)
    con = duckdb.connect(str(out))
    con.execute(f"UPDATE {store.STORE_META_TABLE} SET schema_version = {store.STORE_SCHEMA_VERSION + 1}, "
                "written_by = 'choreoscope 99.0'")
    con.close()


KINDS = {
    "truncated": (_truncated, "is damaged and cannot be used: the file is truncated", "restore it from a backup"),
    "corrupt": (_corrupt, "is damaged and cannot be used: Corrupt database file", "restore it from a backup"),
    "corrupt-wal": (_corrupt_wal, "is damaged and cannot be used: Failure while replaying WAL file",
                    "move "),
    "empty": (_empty, "is an empty file, so not a choreoscope store", "point --db at a store"),
    "not-duckdb": (_not_duckdb, "is not a DuckDB database file", "point --db at a store"),
    "newer-schema": (_newer_schema, f"was written by a newer choreoscope (store schema {store.STORE_SCHEMA_VERSION + 1};",
                     "upgrade choreoscope"),
}

COMMANDS = {
    "stats": lambda db, tmp: ["stats", "--db", db],
    "load": lambda db, tmp: ["load", OTHER_DUMP, "--db", db, "--no-progress"],
    "analyze": lambda db, tmp: ["analyze", "--db", db],
    "analyze-input": lambda db, tmp: ["analyze", db],
    "check": lambda db, tmp: ["check", "--db", db],
    "compare": lambda db, tmp: ["compare", db, DUMPS[0]],
    "export": lambda db, tmp: ["export", "parquet", "--db", db, "--out", str(tmp / "pq")],
    "serve": lambda db, tmp: ["serve", "--no-dashboard", "--db", db, "--grpc-port", "0", "--http-port", "0"],
    "dashboard": lambda db, tmp: ["dashboard", db, "--port", "0"],
}

# A corrupt data block is found when something reads it; serve and the dashboard read no span at
# open (serve finds it at its first commit: test_serve_stops_on_a_damaged_store_at_its_first_commit).
NOT_AT_OPEN = {("corrupt", "serve")}
# The dashboard checks for DuckDB's header itself and says a trace dump may have been passed.
OWN_MESSAGE = {("empty", "dashboard"), ("not-duckdb", "dashboard")}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_bad_store_gets_one_line_and_exit_2(kind, command, good_store, tmp_path, capsys):
    if (kind, command) in NOT_AT_OPEN:
        pytest.skip("damage in a data block is found by the first read of it, not at open")
    make, says, what_to_do = KINDS[kind]
    db = tmp_path / "bad.duckdb"
    make(good_store, db)
    before = db.read_bytes()
    assert main(COMMANDS[command](str(db), tmp_path)) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    if (kind, command) in OWN_MESSAGE:
        assert "is not a DuckDB store" in lines[0]
    else:
        assert says in lines[0] and what_to_do in lines[0], lines[0]
    assert "bad.duckdb" in lines[0]
    if kind not in ("corrupt", "corrupt-wal"):  # nothing was written to the bad file
        assert db.read_bytes() == before


def test_the_store_records_its_schema_version(tmp_path):
    db = tmp_path / "s.duckdb"
    con = store.connect(db)
    assert con.execute(f"SELECT schema_version FROM {store.STORE_META_TABLE}").fetchall() == [
        (store.STORE_SCHEMA_VERSION,)]
    con.close()
    # a store written before the version was recorded opens, and gets it once written to
    con = duckdb.connect(str(db))
    con.execute(f"DROP TABLE {store.STORE_META_TABLE}")
    con.close()
    store.connect(db, read_only=True).close()
    con = store.connect(db)
    assert store.scalar(con, f"SELECT count(*) FROM {store.STORE_META_TABLE}") == 1
    con.close()


def test_a_newer_duckdb_format_is_named(tmp_path):
    from choreoscope.collector import store_errors

    message = store_errors.open_failure_message(str(tmp_path / "x.duckdb"), duckdb.IOException(
        "IO Error: Trying to read a database file with version number 99, but we can only read version 64"))
    assert "was written by a newer DuckDB" in message and "upgrade" in message and "\n" not in message


def test_serve_stops_on_a_damaged_store_at_its_first_commit(good_store, tmp_path):
    """The real server over a store with corrupt blocks: the first commit that reads one fails
    (exporters are answered 503 / UNAVAILABLE), and serve stops with the one-line message, exit 2."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    db = tmp_path / "bad.duckdb"
    _corrupt(good_store, db)
    serve = ServeProcess(db, "--decode-workers", "0")
    try:
        assert HttpExporter(endpoint=serve.http_url, timeout=3).export(make_spans()) == SpanExportResult.FAILURE
        _, err = serve.proc.communicate(timeout=60)
    finally:
        if serve.proc.poll() is None:
            serve.proc.send_signal(signal.SIGKILL)
            serve.proc.wait(10)
    assert serve.proc.returncode == 2, err
    last = err.strip().splitlines()[-1] if "Traceback" not in err else err
    assert "bad.duckdb is damaged and cannot be used: Corrupt database file" in last, err
    assert "Traceback" not in err


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
