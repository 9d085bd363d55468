"""`choreoscope stats [--db PATH]`: what a store holds — spans, traces, services, time range,
spans per service, links — as a readable table. Opens the store read-only.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime

import duckdb

from choreoscope.collector import store


def collect(con: duckdb.DuckDBPyConnection) -> dict:
    """The store's counts as plain data (the dashboard can show the same numbers)."""
    totals = con.execute(
        "SELECT count(*), count(DISTINCT trace_id), count(DISTINCT service_name), min(start_ns), "
        "max(coalesce(end_ns, start_ns)), count(*) FILTER (WHERE status_code = 'ERROR') FROM spans"
    ).fetchall()[0]
    per_service = con.execute(
        "SELECT service_name, count(*), count(DISTINCT trace_id), "
        "count(*) FILTER (WHERE status_code = 'ERROR'), "
        "count(*) FILTER (WHERE kind IN ('PRODUCER', 'CONSUMER') OR messaging_system IS NOT NULL) "
        "FROM spans GROUP BY service_name ORDER BY count(*) DESC, service_name"
    ).fetchall()
    links = con.execute("SELECT count(*), count(DISTINCT (trace_id, span_id)) FROM span_links").fetchall()[0]
    return {
        "spans": totals[0], "traces": totals[1], "services": totals[2],
        "start_ns": totals[3], "end_ns": totals[4], "error_spans": totals[5],
        "links": links[0], "spans_with_links": links[1],
        "per_service": [
            {"service": s, "spans": n, "traces": t, "errors": e, "messaging": m}
            for s, n, t, e, m in per_service
        ],
    }


def _utc(ns: int | None) -> str:
    if ns is None:
        return "-"
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


MAX_NAME = 60


def _cell(name) -> str:
    """A service name on one line of bounded width: line breaks as spaces, long names cut with …."""
    text = " ".join(str(name).split("\n")).replace("\r", " ").replace("\t", " ")
    return text if len(text) <= MAX_NAME else text[: MAX_NAME - 1] + "…"


def format_table(stats: dict) -> str:
    lines = [
        f"spans      {stats['spans']:>12,}",
        f"traces     {stats['traces']:>12,}",
        f"services   {stats['services']:>12,}",
        f"errors     {stats['error_spans']:>12,}  (spans with status ERROR)",
        f"links      {stats['links']:>12,}  (on {stats['spans_with_links']:,} spans)",
        f"from       {_utc(stats['start_ns'])}",
        f"to         {_utc(stats['end_ns'])}",
    ]
    rows = stats["per_service"]
    if rows:
        names = [_cell(r["service"]) for r in rows]
        width = max(len("service"), *(len(n) for n in names))
        lines += ["", f"{'service':<{width}}  {'spans':>9}  {'traces':>7}  {'errors':>6}  {'messaging':>9}"]
        lines.append("-" * (width + 41))
        for name, r in zip(names, rows):
            lines.append(f"{name:<{width}}  {r['spans']:>9,}  {r['traces']:>7,}  "
                         f"{r['errors']:>6,}  {r['messaging']:>9,}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if not os.path.exists(args.db):
        print(f"choreoscope stats: {args.db} does not exist; load traces first "
              f"(choreoscope load FILE --db {args.db}) or pass --db.", file=sys.stderr)
        return 2
    try:
        con = store.connect(args.db, read_only=True)
    except store.StoreError as exc:
        print(f"choreoscope stats: {exc}", file=sys.stderr)
        return 2
    try:
        print(format_table(collect(con)))
    except duckdb.CatalogException:
        print(f"choreoscope stats: {args.db} is not a choreoscope store (no spans table).", file=sys.stderr)
        return 2
    finally:
        con.close()
    return 0
