"""Tables and operations read from SQL statement text (collector/sql_text.py), as the real database
instrumentations record it, and their way into the typed span columns through the one normaliser."""

from __future__ import annotations

import json

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from choreoscope.collector import sql_text, store
from choreoscope.collector.loaders import load_paths
from choreoscope.collector.spanbatch import SpanBatch
from choreoscope.collector.sql_text import MAX_PARSE_CHARS, dialect_for, parse_statement
from tests.sdk_dumps import to_jaeger_json, to_otlp_proto


def facts(text, system=None):
    f = parse_statement(text, system)
    assert f is not None, text
    return f.operation, f.tables_written, f.tables_read


# --- statements as the instrumentations record them ---

@pytest.mark.parametrize("text, system, expected", [
    # sqlite3 (span name INSERT/SELECT, only db.system + db.statement)
    ("INSERT INTO reservations (order_id) VALUES (?)", "sqlite", ("INSERT", ("reservations",), ())),
    ("SELECT status FROM reservations WHERE order_id = ?", "sqlite", ("SELECT", (), ("reservations",))),
    # psycopg: %s placeholders
    ("INSERT INTO ledger_entries (payment_id, amount, redelivered) VALUES (%s, %s, %s)", "postgresql",
     ("INSERT", ("ledger_entries",), ())),
    ("SELECT payment_id, amount, status FROM payments WHERE payment_id = %(pid)s", "postgresql",
     ("SELECT", (), ("payments",))),
    # node-postgres, new conventions: $1
    ("INSERT INTO receipts (payment_id, order_id, amount) VALUES ($1, $2, $3)", "postgresql",
     ("INSERT", ("receipts",), ())),
    ("UPDATE payments SET status = 'refunded' WHERE payment_id = $1", "postgresql",
     ("UPDATE", ("payments",), ())),
    # SQLAlchemy on sqlite
    ("INSERT INTO order_stats (order_id, items, total_cents) VALUES (?, ?, ?)", "sqlite",
     ("INSERT", ("order_stats",), ())),
    # PyMySQL / mysqlclient: %s in MySQL, backticks
    ("INSERT INTO `orders` (`id`, `total`) VALUES (%s, %s)", "mysql", ("INSERT", ("orders",), ())),
    ("SELECT o.id FROM `shop`.`orders` o JOIN `items` i ON i.order_id = o.id WHERE o.id = %s", "mariadb",
     ("SELECT", (), ("orders", "items"))),
    # joins, subqueries
    ("SELECT a.x, b.y FROM a JOIN b ON a.id = b.id LEFT JOIN c ON c.id = b.cid WHERE a.z = ?", "sqlite",
     ("SELECT", (), ("a", "b", "c"))),
    ("SELECT * FROM orders WHERE customer_id IN (SELECT id FROM customers WHERE vip = ?)", "postgresql",
     ("SELECT", (), ("orders", "customers"))),
    # a statement writing one table and reading others; CTE names are not tables
    ("INSERT INTO archive SELECT * FROM orders o WHERE o.id IN (SELECT order_id FROM refunds)", None,
     ("INSERT", ("archive",), ("orders", "refunds"))),
    ("WITH recent AS (SELECT * FROM orders WHERE ts > $1) INSERT INTO daily SELECT count(*) FROM recent",
     "postgresql", ("INSERT", ("daily",), ("orders",))),
    ("WITH c AS (SELECT id FROM t) SELECT * FROM c JOIN u ON u.id = c.id", None, ("SELECT", (), ("t", "u"))),
    # UPDATE ... FROM, DELETE, MySQL multi-table DELETE
    ("UPDATE stock SET qty = stock.qty - r.qty FROM reservations r WHERE r.sku = stock.sku AND r.order_id = %s",
     "postgresql", ("UPDATE", ("stock",), ("reservations",))),
    ("DELETE FROM sessions WHERE expires_at < ?", "sqlite", ("DELETE", ("sessions",), ())),
    ("DELETE t1 FROM t1 JOIN t2 ON t1.id = t2.id WHERE t2.gone = 1", "mysql", ("DELETE", ("t1",), ("t2",))),
    # upserts and merges
    ("INSERT INTO stock (sku, qty) VALUES ($1, $2) ON CONFLICT (sku) DO UPDATE SET qty = excluded.qty",
     "postgresql", ("INSERT", ("stock",), ())),
    ("INSERT INTO stock (sku, qty) VALUES (%s, %s) ON DUPLICATE KEY UPDATE qty = VALUES(qty)", "mysql",
     ("INSERT", ("stock",), ())),
    ("INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)", "sqlite", ("INSERT", ("kv",), ())),
    ("MERGE INTO target t USING source s ON t.id = s.id WHEN MATCHED THEN UPDATE SET t.v = s.v",
     "mssql", ("MERGE", ("target",), ("source",))),
    # schema-qualified and quoted names keep the table name
    ("UPDATE public.payments SET status = $1 WHERE id = $2", "postgresql", ("UPDATE", ("payments",), ())),
    ('SELECT * FROM "Order Lines" WHERE "OrderId" = $1', "postgresql", ("SELECT", (), ("Order Lines",))),
    ("SELECT * FROM [dbo].[Orders] WHERE Id = @p0", "microsoft.sql_server", ("SELECT", (), ("Orders",))),
    ("SELECT * FROM sales.orders WHERE id = :id", "oracle", ("SELECT", (), ("orders",))),
    ("TRUNCATE TABLE staging", None, ("TRUNCATE", ("staging",), ())),
])
def test_statements_as_instrumentations_record_them(text, system, expected):
    assert facts(text, system) == expected


def test_upsert_flag_and_qualified_names():
    f = parse_statement("INSERT INTO s.stock (sku) VALUES ($1) ON CONFLICT (sku) DO NOTHING", "postgresql")
    assert f.upsert and f.table == "stock" and f.qualified == ("s.stock",)
    assert not parse_statement("INSERT INTO stock (sku) VALUES (?)", "sqlite").upsert
    f = parse_statement("SELECT * FROM cat.db.t JOIN u ON u.id = t.id", None)
    assert f.tables_read == ("t", "u") and f.qualified == ("cat.db.t", "u")


@pytest.mark.parametrize("system", [None, "sqlite", "postgresql", "mysql", "mssql", "oracle", "db2",
                                    "clickhouse", "cockroachdb"])
@pytest.mark.parametrize("placeholder", ["?", "%s", "$1", ":x", "%(x)s"])
def test_every_placeholder_parses_in_every_dialect(system, placeholder):
    f = parse_statement(f"UPDATE orders SET status = {placeholder} WHERE id = 7", system)
    assert f is not None and f.parsed, (system, placeholder)
    assert (f.operation, f.tables_written) == ("UPDATE", ("orders",))
    assert f.fingerprint == "UPDATE orders SET status = ? WHERE id = ?"


def test_fingerprint_ignores_literals_placeholders_whitespace_and_comments():
    variants = [
        "SELECT a FROM t WHERE id = 1 AND name = 'x'",
        "select  a\n  from t\twhere id = ? and name = ?",
        "SELECT a FROM t WHERE id = $1 AND name = $2 /* traceparent='00-abc-01' */",
    ]
    prints = {parse_statement(v, "postgresql").fingerprint for v in variants}
    assert prints == {"SELECT a FROM t WHERE id = ? AND name = ?"}
    hashes = {parse_statement(v, "postgresql").fingerprint_hash for v in variants}
    assert len(hashes) == 1 and len(next(iter(hashes))) == 16
    # IN lists and multi-row VALUES of any length are one shape
    assert (parse_statement("SELECT a FROM t WHERE id IN (1, 2, 3)").fingerprint
            == parse_statement("SELECT a FROM t WHERE id IN (?, ?)").fingerprint
            == "SELECT a FROM t WHERE id IN (?)")
    assert (parse_statement("INSERT INTO t (a) VALUES (1), (2), (3)", "sqlite").fingerprint
            == "INSERT INTO t (a) VALUES (?)")
    assert (parse_statement("SELECT a FROM t WHERE id = 1").fingerprint_hash
            != parse_statement("SELECT b FROM t WHERE id = 1").fingerprint_hash)


def test_dialect_mapping():
    assert dialect_for("postgresql") == dialect_for("postgres") == "postgres"
    assert dialect_for("mariadb") == dialect_for("MySQL") == "mysql"
    assert dialect_for("mssql") == dialect_for("microsoft.sql_server") == "tsql"
    assert dialect_for("oracle") == "oracle" and dialect_for("sqlite") == "sqlite"
    assert dialect_for("db2") is None and dialect_for(None) is None  # sqlglot's generic dialect
    assert dialect_for("redis") == dialect_for("mongodb") == ""  # not SQL: never parsed


# --- junk never raises ---

@pytest.mark.parametrize("text, system", [
    ("SET session:42 ?", "redis"),
    ("HMSET user:1 name ? age ?", "redis"),
    ("SET key value", None),
    ("GET key", None),
    ('{"find": "orders", "filter": {"_id": "?"}}', "mongodb"),
    ('{"find": "orders", "filter": {"_id": "?"}}', None),
    ("\x00\x01\xff\xfe binary \x80junk", "postgresql"),
    ("", "sqlite"),
    ("SELECT * FROM ((((((((((((( t", None),
    ("(" * 20_000, None),
    ("x" * 100_000, None),
    ("SELECT 'unterminated", "postgresql"),
    ("/* only a comment */", None),
    ("BEGIN", "sqlite"),
    ("PRAGMA foreign_keys = ON", "sqlite"),
    (42, "sqlite"),
    (None, None),
    (b"INSERT INTO t VALUES (1)", "sqlite"),
])
def test_junk_returns_none_or_a_best_effort_without_raising(text, system):
    f = parse_statement(text, system)
    assert f is None or f.table is None or isinstance(f.table, str)


def test_junk_that_is_not_sql_gives_nothing():
    for text, system in (("SET session:42 ?", "redis"), ("SET key value", None), ("GET key", None),
                         ("\x00\x01\xff junk", None), ("x" * 100_000, None)):
        assert parse_statement(text, system) is None, text


def test_long_text_is_not_parsed_but_keeps_its_verb_and_table():
    bulk = "INSERT INTO events (id, payload) VALUES " + ", ".join(["(?, ?)"] * 20_000)
    assert len(bulk) > MAX_PARSE_CHARS
    f = parse_statement(bulk, "sqlite")
    assert (f.operation, f.tables_written, f.parsed, f.fingerprint) == ("INSERT", ("events",), False, None)
    assert sql_text._by_text.cache_info().currsize < sql_text._CACHE_SIZE  # never a cache key


def test_unparseable_verbs_get_a_best_effort():
    assert facts("UPSERT INTO kv (k, v) VALUES (?, ?)") == ("UPSERT", ("kv",), ())
    assert facts("REPLACE INTO kv (k, v) VALUES (%s, %s)", "mysql") == ("REPLACE", ("kv",), ())


def test_each_distinct_statement_is_parsed_once(monkeypatch):
    sql_text.cache_clear()
    calls = []
    real = sql_text._parse
    monkeypatch.setattr(sql_text, "_parse", lambda text, dialect: calls.append(text) or real(text, dialect))
    for i in range(500):
        parse_statement("SELECT qty FROM stock WHERE sku = ?", "sqlite")
        parse_statement("INSERT INTO stock (sku) VALUES (?)", "sqlite")
        # literals inlined (500 distinct texts) share the parse of their literal-free shape
        assert parse_statement(f"SELECT qty FROM stock WHERE sku = {i} /* id={i} */", "sqlite").table == "stock"
    assert len(calls) == 2
    sql_text.cache_clear()


# --- through the normaliser ---

def _batch_row(attributes: dict) -> dict:
    from choreoscope.collector.store import SPAN_ARROW_SCHEMA

    batch = SpanBatch()
    assert batch.add(trace_id="1" * 32, span_id="2" * 16, name="x", kind="CLIENT", attributes=attributes)
    return dict(zip(SPAN_ARROW_SCHEMA.names, batch.rows[0]))


def test_normaliser_keeps_recorded_tables_and_operations():
    row = _batch_row({"db.system": "postgresql", "db.sql.table": "orders", "db.operation": "SELECT",
                      "db.statement": "INSERT INTO payments (id) VALUES (%s)"})
    assert (row["db_collection"], row["db_operation"]) == ("orders", "SELECT")
    row = _batch_row({"db.system.name": "postgresql", "db.operation.name": "SELECT",
                      "db.query.text": "SELECT * FROM payments WHERE id = $1"})
    assert (row["db_system"], row["db_collection"], row["db_operation"]) == ("postgresql", "payments", "SELECT")
    # SQLAlchemy records `<verb> <db.name>` as the operation: the verb replaces it
    row = _batch_row({"db.system": "sqlite", "db.name": "shop.sqlite", "db.operation": "INSERT shop.sqlite",
                      "db.statement": "INSERT INTO orders (order_id, total_cents) VALUES (?, ?)"})
    assert (row["db_collection"], row["db_operation"]) == ("orders", "INSERT")
    assert json.loads(row["attributes"])["db.operation"] == "INSERT shop.sqlite"  # the JSON is untouched
    # a session SET is not an operation the analysis should count (it counts SET as a key-value write)
    row = _batch_row({"db.system": "mysql", "db.statement": "SET NAMES utf8mb4"})
    assert (row["db_collection"], row["db_operation"]) == (None, None)
    # Redis commands are not SQL
    row = _batch_row({"db.system": "redis", "db.statement": "SET order:1 ?"})
    assert (row["db_collection"], row["db_operation"]) == (None, None)


def _sdk_spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "inventory"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("opentelemetry.instrumentation.sqlite3", "0.48b0")
    recorded = [  # (span name, attributes) as sqlite3, psycopg and node-postgres record them
        ("INSERT", {"db.system": "sqlite", "db.statement": "INSERT INTO reservations (order_id) VALUES (?)"}),
        ("SELECT", {"db.system": "sqlite",
                    "db.statement": "SELECT r.status FROM reservations r JOIN orders o ON o.id = r.order_id "
                                    "WHERE o.id = ?"}),
        ("UPDATE", {"db.system": "postgresql", "db.name": "shop",
                    "db.statement": "UPDATE stock SET qty = qty - %s WHERE sku = %s"}),
        ("INSERT shop", {"db.system.name": "postgresql", "db.namespace": "shop",
                         "db.query.text": "INSERT INTO receipts (payment_id) VALUES ($1) "
                                          "ON CONFLICT (payment_id) DO NOTHING"}),
        ("SET", {"db.system": "redis", "db.statement": "SET order:1 ?"}),
        ("connect", {"db.system": "sqlite"}),
    ]
    with tracer.start_as_current_span("POST /reserve", kind=SpanKind.SERVER):
        for name, attributes in recorded:
            with tracer.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes):
                pass
    return exporter.get_finished_spans()


EXPECTED = {
    "INSERT": ("sqlite", "reservations", "INSERT"),
    "SELECT": ("sqlite", "reservations", "SELECT"),
    "UPDATE": ("postgresql", "stock", "UPDATE"),
    "INSERT shop": ("postgresql", "receipts", "INSERT"),
    "SET": ("redis", None, None),
    "connect": ("sqlite", None, None),
    "POST /reserve": (None, None, None),
}


@pytest.mark.parametrize("fmt", ["otlp-proto", "jaeger-json"])
def test_sdk_spans_with_only_the_statement_get_table_and_operation(tmp_path, fmt):
    spans = _sdk_spans()
    if fmt == "otlp-proto":
        dump = tmp_path / "db.binpb"
        dump.write_bytes(to_otlp_proto(spans))
    else:
        dump = tmp_path / "db.json"
        dump.write_text(json.dumps(to_jaeger_json(spans)))
    con = store.connect(tmp_path / "db.duckdb")
    res = load_paths(con, [dump])
    assert res.ok, res.errors
    rows = con.execute("SELECT name, db_system, db_collection, db_operation, attributes FROM spans").fetchall()
    assert {name: (system, table, op) for name, system, table, op, _ in rows} == EXPECTED
    for span in spans:  # every attribute kept as recorded
        stored = next(json.loads(a) for name, *_, a in rows if name == span.name)
        assert stored == dict(span.attributes)
    con.close()
