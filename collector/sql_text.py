"""What a SQL statement does, read from the text a database instrumentation records.

Most real instrumentations (sqlite3, psycopg, node-postgres, SQLAlchemy, ...) record the table only
inside `db.statement` / `db.query.text`, so `parse_statement` recovers the operation, the tables
written and read and a fingerprint with sqlglot, a real SQL parser.

- Dialect: from `db.system.name` / `db.system` (`SQL_DIALECTS`); unknown systems parse with
  sqlglot's generic dialect, known non-SQL systems (Redis, MongoDB, ...) are not parsed at all.
- Tables: bare table names, as written (quotes removed, case kept). The schema / database prefix is
  dropped from `tables_written` / `tables_read` so that `public.orders` and `orders` are one table;
  the qualified names are kept in `qualified`. CTE names are not tables.
- Operation: the statement's verb, upper case (`INSERT` for `INSERT ... ON CONFLICT DO UPDATE` and
  `ON DUPLICATE KEY UPDATE`, with `upsert` set; `REPLACE` / `UPSERT` for those verbs).
- Fingerprint: the statement re-rendered by sqlglot with every literal and placeholder (`?`, `%s`,
  `%(name)s`, `$1`, `:name`, `@p`) as `?`, IN lists and multi-row VALUES collapsed to one item,
  comments dropped, whitespace collapsed; `fingerprint_hash` is its 16-hex-digit blake2b.
- Cost: statements repeat millions of times, so results are cached by (text, dialect) in an LRU;
  a miss first looks the statement up by its text with literals and comments removed (so inlined
  ids or sqlcommenter's per-request comments do not make every span a parse), and only then parses.
- Text longer than MAX_PARSE_CHARS is not parsed (a parse costs ~4 ms per kB in sqlglot's pure
  Python parser, and such text is almost always a generated multi-row INSERT or a huge IN list whose
  verb and table are in the first line): a regex reads the verb and target table from its start.
  Text sqlglot cannot parse gets the same best effort. Nothing here raises on any input.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from dataclasses import dataclass
from functools import lru_cache

import sqlglot
from sqlglot import expressions as exp

MAX_PARSE_CHARS = 10_000
_CACHE_SIZE = 4096

# db.system / db.system.name values (old and new semantic conventions) -> sqlglot dialect.
SQL_DIALECTS = {
    "sqlite": "sqlite",
    "postgresql": "postgres", "postgres": "postgres", "cockroachdb": "postgres", "greenplum": "postgres",
    "edb": "postgres", "netezza": "postgres", "materialize": "materialize", "risingwave": "risingwave",
    "redshift": "redshift", "aws.redshift": "redshift",
    "mysql": "mysql", "mariadb": "mysql", "tidb": "mysql", "singlestore": "singlestore",
    "mssql": "tsql", "microsoft.sql_server": "tsql", "mssqlcompact": "tsql", "azure.sql": "tsql",
    "oracle": "oracle", "oracle.db": "oracle",
    "clickhouse": "clickhouse", "duckdb": "duckdb", "snowflake": "snowflake", "bigquery": "bigquery",
    "gcp.bigquery": "bigquery", "trino": "trino", "presto": "presto", "hive": "hive", "spark": "spark",
    "databricks": "databricks", "teradata": "teradata", "athena": "athena", "aws.athena": "athena",
    "starrocks": "starrocks", "doris": "doris", "drill": "drill", "druid": "druid", "exasol": "exasol",
    "dremio": "dremio",
}
# Systems whose statements are not SQL (commands, JSON queries, Cypher): never parsed.
# (CQL, N1QL and Cosmos DB's SQL are SQL enough for the generic dialect.)
NON_SQL_SYSTEMS = frozenset({
    "redis", "valkey", "memcached", "mongodb", "elasticsearch", "opensearch", "dynamodb",
    "aws.dynamodb", "couchdb", "neo4j", "hbase", "geode", "etcd", "influxdb", "adabas",
    "softwareag.adabas",
})

# Names that moved between sqlglot releases (25.0 has Union / AlterTable).
_SET_OPERATION = getattr(exp, "SetOperation", None) or exp.Union
_ALTER = getattr(exp, "Alter", None) or exp.AlterTable
_WRITE_TYPES = (exp.Insert, exp.Update, exp.Delete, exp.Merge)
_OPERATIONS = {
    exp.Select: "SELECT", _SET_OPERATION: "SELECT", exp.Insert: "INSERT", exp.Update: "UPDATE",
    exp.Delete: "DELETE", exp.Merge: "MERGE", exp.TruncateTable: "TRUNCATE", exp.Create: "CREATE",
    exp.Drop: "DROP", _ALTER: "ALTER", exp.Transaction: "BEGIN", exp.Commit: "COMMIT",
    exp.Rollback: "ROLLBACK", exp.Pragma: "PRAGMA", exp.Set: "SET", exp.Use: "USE",
    exp.Describe: "DESCRIBE", exp.Show: "SHOW", exp.Copy: "COPY",
}
_PLACEHOLDER = exp.Var(this="?")  # renders as `?` in every dialect (a Placeholder is `%s` in postgres)


@dataclass(frozen=True, slots=True)
class SqlFacts:
    operation: str
    tables_written: tuple[str, ...] = ()
    tables_read: tuple[str, ...] = ()
    qualified: tuple[str, ...] = ()  # every table as written with its schema/database prefix
    fingerprint: str | None = None  # None when the text was not parsed (best effort only)
    fingerprint_hash: str | None = None
    upsert: bool = False
    parsed: bool = True  # False: regex best effort over text sqlglot could not or did not parse

    @property
    def table(self) -> str | None:
        """The table the statement is about: the first written, else the first read."""
        return (self.tables_written or self.tables_read or (None,))[0]


def dialect_for(db_system) -> str | None:
    """The sqlglot dialect for a db.system value; "" for a non-SQL system; None for generic."""
    if not isinstance(db_system, str) or not db_system:
        return None
    system = db_system.strip().lower()
    if system in NON_SQL_SYSTEMS:
        return ""
    return SQL_DIALECTS.get(system)


def parse_statement(text, db_system: str | None = None) -> SqlFacts | None:
    """The facts of one recorded statement, or None (non-SQL system, junk, no recognisable verb)."""
    if not isinstance(text, str) or not text:
        return None
    system = db_system if isinstance(db_system, str) else None
    try:
        if len(text) > MAX_PARSE_CHARS:  # not cached: the key alone could hold megabytes
            return None if dialect_for(system) == "" else _best_effort(text[:2000])
        return _by_text(text, system)
    except Exception:  # noqa: BLE001 - a span's text must never break loading
        return None


@lru_cache(maxsize=_CACHE_SIZE)
def _by_text(text: str, db_system: str | None) -> SqlFacts | None:
    """Level 1: the exact text (the system stands for its dialect: one lookup a span). On a miss,
    level 2: the text without literals and comments, per dialect; only a miss there parses."""
    dialect = dialect_for(db_system)
    if dialect == "":
        return None
    return _by_shape(_shape(text), dialect, text)


def _by_shape(shape: str, dialect: str | None, text: str) -> SqlFacts | None:
    # `text` rides along for the first parse only; equal shapes give equal facts.
    key = (shape, dialect)
    hit = _shape_cache.get(key, _MISSING)
    if hit is not _MISSING:
        return hit
    facts = _parse(text, dialect)
    with _shape_lock:  # the receiver may normalise on several threads
        while len(_shape_cache) >= _CACHE_SIZE:
            _shape_cache.pop(next(iter(_shape_cache)))  # FIFO is enough for the second level
        _shape_cache[key] = facts
    return facts


_MISSING = object()
_shape_lock = threading.Lock()
_shape_cache: dict[tuple[str, str | None], SqlFacts | None] = {}

# Quoted identifiers are kept; string literals, numbers and comments go; whitespace collapses.
_SHAPE_RE = re.compile(
    r"""("(?:[^"]|"")*"|`[^`]*`|\[[^\]\n]*\])"""  # 1 quoted identifier
    r"""|('(?:[^'\\]|''|\\.)*')"""  # 2 string literal
    r"""|(--[^\n]*|/\*.*?\*/)"""  # 3 comment
    r"""|((?<![\w$.:@])\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w$]))"""  # 4 number, not in a name or $1 / :1
    r"""|(\s+)""",  # 5 whitespace
    re.DOTALL,
)


def _shape_part(m: re.Match) -> str:
    if m.group(1):
        return m.group(1)
    if m.group(2) or m.group(4):
        return "?"
    return " "


def _shape(text: str) -> str:
    return _SHAPE_RE.sub(_shape_part, text).strip()


# psycopg / PyMySQL / mysqlclient placeholders; only sqlglot's postgres dialect reads them.
_PERCENT_RE = re.compile(r"""('(?:[^'\\]|''|\\.)*')|%\(\w+\)s|%s""")


def _percent_to_qmark(text: str) -> str:
    return _PERCENT_RE.sub(lambda m: m.group(1) or "?", text)


class _DropCommandFallback(logging.Filter):
    """sqlglot warns for every statement it keeps as an opaque Command; those are answered here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Falling back to parsing as a 'Command'" not in record.getMessage()


logging.getLogger("sqlglot").addFilter(_DropCommandFallback())


def _parse(text: str, dialect: str | None) -> SqlFacts | None:
    # psycopg's %s only parses in (recent) sqlglot postgres, MySQL's backticks only in mysql/sqlite.
    texts = [text]
    if "%" in text:
        texts.insert(0 if dialect != "postgres" else 1, _percent_to_qmark(text))
    dialects = [dialect] + ([None] if dialect is not None else []) + (
        ["mysql"] if "`" in text and dialect != "mysql" else [])
    for read in dialects:
        for sql in texts:
            statements = _statements(sql, read)
            facts = _facts(statements, read) if statements else None
            if facts is not None:
                return facts
    return _best_effort(text)


def _statements(sql: str, dialect: str | None) -> list[exp.Expression]:
    try:
        return [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except Exception:  # noqa: BLE001 - ParseError, TokenError, RecursionError, ...: not this dialect
        return []


def _facts(statements: list[exp.Expression], dialect: str | None) -> SqlFacts | None:
    main = None
    for statement in statements:
        while isinstance(statement, exp.Subquery):
            statement = statement.this
        if _operation(statement) is None:
            if isinstance(statement, exp.Command):
                return None  # sqlglot kept it opaque: let the best effort read it
            continue
        if main is None or (_operation(main) in _CONTROL and _operation(statement) not in _CONTROL):
            main = statement
    if main is None:
        return None
    written: list[str] = []
    read: list[str] = []
    qualified: list[str] = []
    for statement in statements:
        w, r, q = _tables(statement)
        written += [t for t in w if t not in written]
        read += [t for t in r if t not in read]
        qualified += [t for t in q if t not in qualified]
    fingerprint = "; ".join(_fingerprint(s, dialect) for s in statements)
    return SqlFacts(
        operation=_operation(main),
        tables_written=tuple(written),
        tables_read=tuple(read),
        qualified=tuple(qualified),
        fingerprint=fingerprint,
        fingerprint_hash=hashlib.blake2b(fingerprint.encode(), digest_size=8).hexdigest(),
        upsert=isinstance(main, exp.Insert) and main.args.get("conflict") is not None,
    )


_CONTROL = frozenset({"BEGIN", "COMMIT", "ROLLBACK", "SET", "USE", "PRAGMA", "SHOW", "DESCRIBE"})


def _operation(statement: exp.Expression) -> str | None:
    for kind, name in _OPERATIONS.items():
        if isinstance(statement, kind):  # sqlite's INSERT OR REPLACE is an Insert: INSERT
            return name
    return None


def _target(statement: exp.Expression) -> list[exp.Table]:
    """The tables a statement writes (DDL targets count: they change the table)."""
    if isinstance(statement, (*_WRITE_TYPES, exp.Create, exp.Drop, _ALTER)):
        this = statement.this
        if isinstance(this, exp.Schema):
            this = this.this
        targets = [this] if isinstance(this, exp.Table) else []
        if isinstance(statement, exp.Delete):  # MySQL's DELETE t1, t2 FROM ...
            targets += [t for t in statement.args.get("tables") or () if isinstance(t, exp.Table)]
        return targets
    if isinstance(statement, exp.TruncateTable):
        return [t for t in statement.expressions if isinstance(t, exp.Table)]
    return []


def _tables(statement: exp.Expression) -> tuple[list[str], list[str], list[str]]:
    ctes = {cte.alias_or_name for cte in statement.find_all(exp.CTE)}
    targets = _target(statement)
    target_ids = {id(t) for t in targets}
    written, read, qualified = [], [], []

    def keep(table: exp.Table, into: list[str]) -> None:
        name = table.name
        if not name or (name in ctes and not table.db):
            return
        if name not in into:
            into.append(name)
        full = ".".join(p for p in (table.catalog, table.db, name) if p)
        if full not in qualified:
            qualified.append(full)

    for table in targets:
        keep(table, written)
    for table in _in_text_order(list(statement.find_all(exp.Table, bfs=False))):
        if id(table) in target_ids:
            continue
        if isinstance(statement, exp.Delete) and isinstance(table.parent, exp.From) and table.name in written:
            continue  # MySQL's DELETE t1 FROM t1 JOIN t2: the FROM names the target again
        keep(table, read)
    return written, read, qualified


_DOLLAR_RE = re.compile(r"\$\d+")


def _in_text_order(tables: list[exp.Table]) -> list[exp.Table]:
    """Tables in the order they are written (the semantic conventions' "first collection name found
    in the query"): by the parser's offsets where it records them (recent sqlglot), else depth
    first with WITH definitions (always written first) ahead of the rest."""
    starts = [t.this.meta.get("start") if isinstance(t.this, exp.Identifier) else None for t in tables]
    if all(isinstance(start, int) for start in starts):
        return [t for _, _, t in sorted(zip(starts, range(len(tables)), tables))]
    return sorted(tables, key=lambda t: t.find_ancestor(exp.CTE) is None)  # stable: DFS within each


def _fingerprint(statement: exp.Expression, dialect: str | None) -> str:
    def normalise(node: exp.Expression) -> exp.Expression:
        if isinstance(node, (exp.Literal, exp.Placeholder, exp.Parameter)) and not isinstance(
            node.parent, (exp.DataType, exp.DataTypeParam)
        ):
            return _PLACEHOLDER.copy()
        if isinstance(node, exp.Column) and _DOLLAR_RE.fullmatch(node.name) and not node.table:
            return _PLACEHOLDER.copy()  # only the postgres dialect reads $1 as a parameter, not a name
        if isinstance(node, exp.In) and len(node.expressions) > 1 and all(
            isinstance(e, (exp.Literal, exp.Placeholder, exp.Parameter, exp.Neg)) for e in node.expressions
        ):
            node.set("expressions", [_PLACEHOLDER.copy()])
        if isinstance(node, exp.Values) and len(node.expressions) > 1:
            node.set("expressions", node.expressions[:1])
        return node

    try:
        return statement.copy().transform(normalise, copy=False).sql(dialect=dialect, comments=False)
    except Exception:  # noqa: BLE001 - a rendering gap must not lose the tables
        return " ".join(statement.sql(comments=False).split())


# Best effort: the verb and the target table at the start of the text (or a SELECT's first FROM).
_IDENT = r"""(?:"(?:[^"]|"")+"|`[^`]+`|\[[^\]]+\]|[\w$#@]+)"""
_NAME = rf"(?P<name>{_IDENT}(?:\s*\.\s*{_IDENT}){{0,2}})"
_LEAD = r"^\s*(?:/\*.*?\*/\s*|--[^\n]*\n\s*)*"
_WRITE_RE = re.compile(
    _LEAD + r"(?P<verb>INSERT|REPLACE|UPSERT|UPDATE|DELETE|MERGE)\b"
    r"(?:\s+(?:OR\s+\w+|IGNORE|LOW_PRIORITY|DELAYED|HIGH_PRIORITY|ONLY|TOP\s*\(\s*\d+\s*\)))*"
    r"(?:\s+(?:INTO|FROM))?\s+" + _NAME,
    re.IGNORECASE | re.DOTALL,
)
_SELECT_RE = re.compile(_LEAD + r"(?P<verb>SELECT)\b[^;]*?\bFROM\s+" + _NAME, re.IGNORECASE | re.DOTALL)
_KEYWORDS = frozenset({"SELECT", "SET", "VALUES", "WHERE", "FROM", "INTO", "ONLY"})


def _unquote(part: str) -> str:
    part = part.strip()
    if part[:1] in "\"`[" and len(part) > 1:
        return part[1:-1].replace('""', '"')
    return part


def _best_effort(text: str) -> SqlFacts | None:
    m = _WRITE_RE.match(text) or _SELECT_RE.match(text)
    if m is None:
        return None
    verb = m.group("verb").upper()
    parts = [_unquote(p) for p in re.findall(_IDENT, m.group("name"))]
    if not parts or parts[-1].upper() in _KEYWORDS:
        return None
    table = parts[-1]
    if verb == "SELECT":
        return SqlFacts("SELECT", tables_read=(table,), qualified=(".".join(parts),), parsed=False)
    return SqlFacts(verb, tables_written=(table,), qualified=(".".join(parts),), parsed=False)


def cache_clear() -> None:
    """Forget every cached statement (tests, benchmarks)."""
    _by_text.cache_clear()
    _shape_cache.clear()
