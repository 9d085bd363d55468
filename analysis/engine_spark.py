"""`--engine spark`: the per-span stages on PySpark over Parquet, their tables then in the DuckDB store.

The stages are not written twice: `SparkStore` gives a stage what it uses of a DuckDB connection
(`execute(...).fetchall()`, `register`), runs each statement's SQL translated by `spark_sql`, and
holds every table as a temp view over a materialised DataFrame (`localCheckpoint`, so an iterative
stage such as the connected components does not grow its plan each round). DDL and DML map to
DataFrame operations: CREATE TABLE ... AS is a new view over a materialised DataFrame, CREATE VIEW
one over the query (not materialised), INSERT a union, ALTER ... RENAME a re-registered view.

`SparkEngine.run` reads the input on Spark — the input Parquet itself when it is choreoscope's own
layout (`lake`, from `open_inputs.parquet_lake`), else the store's `spans` and `span_links`
exported to Parquet (the layout of `choreoscope export parquet`) —, runs SPARK_STAGES in pipeline
order and writes each table those stages own back into the DuckDB store (through Arrow), where the
other stages, the detectors and the report read them as if DuckDB had made them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass

import duckdb
import pyarrow as pa
from sqlglot import exp

from choreoscope.analysis import spark_sql
from choreoscope.analysis.open_inputs import ParquetLake
from choreoscope.collector.store import LINK_COLUMN_NAMES, LINK_COLUMNS, SPAN_COLUMN_NAMES, SPAN_COLUMNS

# The stages that run on Spark: the ones over every span (or every edge). Their reads must be
# input tables or tables written by an earlier stage of this list (`check_stages`). Patterns
# (per workflow, over a few small tables) stays on DuckDB; orderings and handling do not read it.
SPARK_STAGES = ("steps", "parent edges", "clock skew", "causal edges", "instances", "span steps",
                "deliveries", "span edges", "workflows", "data access", "orderings", "handling")
DEFAULT_MASTER = "local[*]"
_SPARK_TYPES = {"VARCHAR": "STRING", "JSON": "STRING", "BIGINT": "BIGINT", "INTEGER": "INT"}
INPUT_SCHEMAS = {
    name: ", ".join(f"`{col}` {_SPARK_TYPES[sqltype.split()[0]]}" for col, sqltype in columns)
    for name, columns in (("spans", SPAN_COLUMNS), ("span_links", LINK_COLUMNS))
}

# A session that answers in seconds on a laptop and does not grab the machine: no UI, few shuffle
# partitions (the tables past `steps` are small), DuckDB-like NULL on a division by zero (ANSI off),
# and no whole-stage code generation: the stages are some 60 statements, each compiled to Java
# with it, which took 3.5 times as long as running them interpreted on a 1,000-span sample.
SESSION_CONF = {
    "spark.sql.codegen.wholeStage": "false",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "2",
    "spark.sql.ansi.enabled": "false",
    "spark.sql.session.timeZone": "UTC",
    "spark.driver.memory": "2g",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    # the recursive walks (deliveries' work, handling) bound their own depth (MAX_DEPTH); their rows
    # grow with the spans, past Spark's default cap of a million
    "spark.sql.cteRecursionRowLimit": "-1",
}


def spark_session(master: str = DEFAULT_MASTER, conf: dict[str, str] | None = None):
    """A SparkSession on `master` (imported here: pyspark is an optional dependency).

    Under `spark-submit` (which starts the driver's JVM and says so in PYSPARK_GATEWAY_PORT) its
    `--master` and `--conf` settings win over the defaults here: the default master `local[*]`
    and a SESSION_CONF key that spark-submit set are not applied."""
    try:
        from pyspark import SparkConf
        from pyspark.sql import SparkSession
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise RuntimeError("--engine spark needs pyspark: pip install 'choreoscope[spark]' (and Java 17)") from exc
    submitted = dict(SparkConf().getAll()) if os.environ.get("PYSPARK_GATEWAY_PORT") else {}
    builder = SparkSession.builder.appName("choreoscope")
    if not (submitted.get("spark.master") and master == DEFAULT_MASTER):
        builder = builder.master(master)
    for key, value in {**{k: v for k, v in SESSION_CONF.items() if k not in submitted}, **(conf or {})}.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


class _Result:
    def __init__(self, rows: list[tuple]):
        self._rows = rows

    def fetchall(self) -> list[tuple]:
        return self._rows

    def fetchone(self) -> tuple | None:
        return self._rows[0] if self._rows else None


class SparkStore:
    """The part of a DuckDB connection the stages use, over a SparkSession's temp views."""

    def __init__(self, spark):
        self.spark = spark
        self.tables: dict[str, object] = {}
        self.statements = 0

    def columns_of(self, name: str) -> list[str]:
        return list(self._table(name).columns)

    def _table(self, name: str):
        if name not in self.tables:
            raise spark_sql.NotPortable(f"no table {name} on the Spark engine")
        return self.tables[name]

    def put(self, name: str, df, materialise: bool = True) -> None:
        if materialise:
            df = df.localCheckpoint(eager=True)
        self.tables[name] = df
        df.createOrReplaceTempView(name)

    def drop(self, name: str) -> None:
        self.tables.pop(name, None)
        self.spark.catalog.dropTempView(name)

    def register(self, name: str, table: pa.Table) -> None:
        self.put(name, self.spark.createDataFrame(table), materialise=False)

    def unregister(self, name: str) -> None:
        self.drop(name)

    def query(self, node: exp.Expression, params: dict | None = None):
        return self.spark.sql(spark_sql.to_spark(node, params, self.columns_of))

    def execute(self, sql: str, params: dict | None = None) -> _Result:
        self.statements += 1
        node = spark_sql.parse(sql)
        if isinstance(node, exp.Create) and (node.args.get("kind") or "").upper() == "TABLE":
            name = node.this.this.name if isinstance(node.this, exp.Schema) else node.this.name
            if node.args.get("exists") and name in self.tables:  # CREATE TABLE IF NOT EXISTS
                return _Result([])
            if isinstance(node.this, exp.Schema):  # CREATE TABLE t (col TYPE, ...): an empty table
                ddl = ", ".join(spark_sql.to_spark(col) for col in node.this.expressions)
                self.put(name, self.spark.createDataFrame([], schema=ddl), materialise=False)
            else:
                self.put(name, self.query(node.expression, params))
            return _Result([])
        if isinstance(node, exp.Create) and (node.args.get("kind") or "").upper() == "VIEW":
            self.put(node.this.name, self.query(node.expression, params), materialise=False)
            return _Result([])
        if isinstance(node, exp.Insert):
            return self._insert(node, params)
        if isinstance(node, exp.Drop):
            self.drop(node.find(exp.Table).name)
            return _Result([])
        if isinstance(node, exp.Alter) and any(isinstance(a, exp.AlterRename) for a in node.actions):
            new = next(a for a in node.actions if isinstance(a, exp.AlterRename)).this.name
            df = self._table(node.this.name)
            self.drop(node.find(exp.Table).name)
            self.put(new, df, materialise=False)
            return _Result([])
        if isinstance(node, exp.Query):
            return _Result([tuple(row) for row in self.query(node, params).collect()])
        raise spark_sql.NotPortable(f"{type(node).__name__} statements do not run on Spark: {sql.strip()[:80]}")

    def _insert(self, node: exp.Insert, params: dict | None) -> _Result:
        target = node.this
        name = target.this.name if isinstance(target, exp.Schema) else target.name
        existing = self._table(name)
        names = [c.name for c in target.expressions] if isinstance(target, exp.Schema) else list(existing.columns)
        query = node.expression
        if node.args.get("with_") or node.args.get("with"):  # WITH ... INSERT: the CTEs belong to the query
            query = query.copy()
            query.set("with_", (node.args.get("with_") or node.args.get("with")).copy())
        new = self.query(query, params).toDF(*names)
        types = dict(existing.dtypes)
        new = new.selectExpr(*[f"CAST(`{c}` AS {types[c]}) AS `{c}`" if c in names else
                               f"CAST(NULL AS {types[c]}) AS `{c}`" for c in existing.columns])
        self.put(name, existing.unionAll(new))
        return _Result([])


def check_stages(stages, names: tuple[str, ...], inputs: tuple[str, ...]) -> list:
    """The stages named `names`, in pipeline order, after checking each reads only inputs or
    tables of an earlier one of them (else the DuckDB stages would have to run in between)."""
    chosen = [s for s in stages if s.name in names]
    missing = set(names) - {s.name for s in chosen}
    if missing:
        raise ValueError(f"no such stages: {', '.join(sorted(missing))}")
    available = set(inputs)
    for stage in chosen:
        needs = set(stage.reads) - available
        if needs:
            raise ValueError(f"stage {stage.name} reads {', '.join(sorted(needs))}, not made on Spark")
        available |= set(stage.writes)
    return chosen


@dataclass
class SparkEngine:
    """Runs SPARK_STAGES on a SparkSession; `run` is what the pipeline runner calls."""

    master: str = DEFAULT_MASTER
    spark: object = None
    stage_names: tuple[str, ...] = SPARK_STAGES
    lake: ParquetLake | None = None  # the input Parquet itself (else the store is exported)

    def session(self):
        if self.spark is None:
            self.spark = spark_session(self.master)
        return self.spark

    def read_lake(self, table: str):
        """The DataFrame of input table `table` (`spans`, `span_links`) read from `self.lake`: its
        store columns (a Hive `day` partition column is left out). A remote `span_links/` that
        does not exist is no links."""
        spark = self.session()
        paths = list(getattr(self.lake, table))
        schema = INPUT_SCHEMAS[table]
        if not paths:
            return spark.createDataFrame([], schema=schema)
        reader = spark.read.schema(schema)
        if self.lake.remote:
            from pyspark.errors import AnalysisException

            try:
                df = reader.parquet(*paths)
            except AnalysisException as exc:
                if table != "span_links" or "PATH_NOT_FOUND" not in str(exc):
                    raise
                return spark.createDataFrame([], schema=schema)
        else:
            df = reader.parquet(*paths)
        return df.select(*[f"`{c}`" for c in (SPAN_COLUMN_NAMES if table == "spans" else LINK_COLUMN_NAMES)])

    def copy_inputs(self, con: duckdb.DuckDBPyConnection) -> None:
        """Fill the DuckDB store's `spans` and `span_links` from a remote lake (which DuckDB cannot
        read), for the stages and the report that stay on DuckDB; through the driver, as Arrow."""
        for table in ("spans", "span_links"):
            con.register("_lake_rows", self.read_lake(table).toArrow())
            try:
                con.execute(f"INSERT INTO {table} SELECT * FROM _lake_rows")
            finally:
                con.unregister("_lake_rows")

    def run(self, con: duckdb.DuckDBPyConnection, ctx, stages, inputs: tuple[str, ...]) -> list[str]:
        """Run the Spark stages over the store behind `con`; their tables replace the store's.
        Returns the names of the stages run (the runner skips them)."""
        from choreoscope.analysis.parquet_export import export_parquet

        chosen = check_stages(stages, self.stage_names, inputs)
        spark = self.session()
        store = SparkStore(spark)
        workdir = tempfile.mkdtemp(prefix="choreoscope-spark-")
        try:
            started = time.perf_counter()
            if self.lake is None:
                export_parquet(con, workdir)
            for table in inputs:  # with the schema given: a table without rows has no files
                if self.lake is not None:
                    df = self.read_lake(table)
                else:
                    df = spark.read.schema(INPUT_SCHEMAS[table]).parquet(f"{workdir}/{table}")
                store.put(table, df)
            ctx.timings["spark: input"] = time.perf_counter() - started
            for stage in chosen:
                started = time.perf_counter()
                try:
                    stage.run(store, ctx)
                except Exception as exc:
                    raise RuntimeError(f"{stage.name} (on Spark): {type(exc).__name__}: {exc}") from exc
                ctx.timings[stage.name] = time.perf_counter() - started
            started = time.perf_counter()
            # a local master's files are on this machine: the tables come back as Parquet, without
            # collecting them in the driver (at 1M spans that lost task results on a 2 GB driver)
            via = f"{workdir}/out" if spark.sparkContext.master.startswith("local") else None
            for stage in chosen:
                for table in stage.writes:
                    copy_to_duckdb(con, table, store.tables[table], via)
            ctx.timings["spark: output"] = time.perf_counter() - started
        finally:
            for name in list(store.tables):
                store.drop(name)
            shutil.rmtree(workdir, ignore_errors=True)
        return [s.name for s in chosen]


def copy_to_duckdb(con: duckdb.DuckDBPyConnection, name: str, df, via: str | None = None) -> None:
    """Replace table `name` of the DuckDB store with the rows of the Spark DataFrame `df`: written
    as Parquet under the directory `via` (which DuckDB must be able to read: a local master's), or
    without one collected in the driver as Arrow."""
    if via is not None:
        path = f"{via}/{name}"
        df.write.parquet(path)
        if any(f.endswith(".parquet") for f in os.listdir(path)):
            con.execute(f"CREATE OR REPLACE TABLE \"{name}\" AS SELECT * FROM read_parquet('{path}/*.parquet')")
            return
    table = df.toArrow()
    con.register("_spark_rows", table)
    try:
        con.execute(f'CREATE OR REPLACE TABLE "{name}" AS SELECT * FROM _spark_rows')
    finally:
        con.unregister("_spark_rows")
