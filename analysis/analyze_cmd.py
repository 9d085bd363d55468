"""`choreoscope analyze`: run the pipeline over the inputs and write the report."""

from __future__ import annotations

import json
import sys
from dataclasses import replace

from choreoscope.analysis.graph_export import report_dot, report_mermaid
from choreoscope.analysis.open_inputs import (
    InputError,
    open_inputs,
    open_lake,
    parquet_lake,
    warn_load_errors,
)
from choreoscope.analysis.pipeline import AnalysisError, run_pipeline
from choreoscope.analysis.report import build_report, validate_report
from choreoscope.analysis.report_md import report_markdown
from choreoscope.collector.store import StoreError

RENDERERS = {
    "json": lambda r: json.dumps(r, indent=2, default=str) + "\n",
    "md": report_markdown,
    "dot": report_dot,
    "mermaid": report_mermaid,
}


def analyze(inputs: list[str], db: str, intended: list[str] | None = None, engine=None) -> dict:
    """Load/open the inputs, run every stage, return the validated JSON report. `engine`
    (analysis.engine_spark.SparkEngine) runs the per-span stages elsewhere; None: all on DuckDB.
    With the Spark engine, inputs in choreoscope's own Parquet layout are not loaded: Spark reads
    them, the DuckDB stages read views over them (`open_inputs.parquet_lake`)."""
    lake = parquet_lake(inputs) if engine is not None and hasattr(engine, "lake") else None
    if lake is not None:  # choreoscope's own Parquet: Spark reads it, DuckDB gets views (or a copy)
        opened = open_lake(lake)
        engine = replace(engine, lake=lake)
        if lake.remote:
            engine.copy_inputs(opened.con)
    else:
        opened = open_inputs(inputs, db)
    try:
        warn_load_errors(opened)
        # a temporary store of dumps (it has a spill directory) is read by the report alone
        run_pipeline(opened.con, intended, engine=engine, release_intermediates=opened.spill is not None)
        report = build_report(opened.con)
        validate_report(report)
        return report
    finally:
        opened.con.close()


def write_output(text: str, out: str | None) -> None:
    if out:
        with open(out, "w", encoding="utf-8") as fh:
            fh.write(text)
        print(f"wrote {out}", file=sys.stderr)
    else:
        sys.stdout.write(text)


def _engine(args):
    if getattr(args, "engine", "duckdb") != "spark":
        return None
    from choreoscope.analysis.engine_spark import SparkEngine

    return SparkEngine(master=args.spark_master)


def run(args) -> int:
    try:
        report = analyze(args.inputs, args.db, args.intended, engine=_engine(args))
    except (InputError, StoreError, AnalysisError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        write_output(RENDERERS[args.format](report), args.out)
    except OSError as exc:
        print(f"error: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0
