"""The live analysis's window: on a store larger than it, the traces of the latest spans stored.

`serve` re-analyses while spans arrive. Over the whole store each run takes longer as the store
grows (about 30 µs a span on 2 cores while ingest goes on: 44 s over 1.4M spans), so at 25k spans
a second every second of ingest would add most of a second of analysis, and no schedule keeps the
analysis to a share of the time (analysis/live.py MAX_SHARE). Bounded to a window, a run costs the
same on a store of any size, and so does its memory.

The window is the traces with a span among the latest `window_spans` spans stored (by row id:
spans are appended as they are committed), every span of each of them, and the traces their
spans link to (a consumer started in a new trace links to its producer's): the workflows running
lately, whole. For the run, TEMP views named `spans` and `span_links` on the run's cursor stand
for the store's tables (they shadow them for that cursor alone; the stages read them by name and
write their tables into the store as always); `close_window` drops them.
"""

from __future__ import annotations

import duckdb

from choreoscope.collector import store

# serve's default (`--live-window`): runs of about 10-15 s on this 2-core machine while ingest goes on.
DEFAULT_WINDOW_SPANS = 500_000

_TRACES = "_live_window_traces"


def open_window(cur: duckdb.DuckDBPyConnection, window_spans: int) -> int | None:
    """On a store of more than `window_spans` spans, make `spans` and `span_links` stand for the
    window on this cursor; the spans in it, or None (no window: the whole store, or 0)."""
    if window_spans <= 0:
        return None
    last = store.scalar(cur, "SELECT max(rowid) FROM spans")
    if last is None or last + 1 <= window_spans:
        return None
    db = store.scalar(cur, "SELECT current_database()").replace('"', '""')
    spans, links = f'"{db}".main.spans', f'"{db}".main.span_links'  # the store's, not the views
    cur.execute(f"""
        CREATE OR REPLACE TEMP TABLE {_TRACES} AS
        WITH recent AS (SELECT DISTINCT trace_id FROM {spans} WHERE rowid > {int(last) - int(window_spans)})
        SELECT trace_id FROM recent
        UNION
        SELECT l.linked_trace_id FROM {links} l JOIN recent r ON l.trace_id = r.trace_id""")
    cur.execute(f"CREATE OR REPLACE TEMP VIEW spans AS SELECT * FROM {spans} "
                f"WHERE trace_id IN (SELECT trace_id FROM {_TRACES})")
    cur.execute(f"CREATE OR REPLACE TEMP VIEW span_links AS SELECT * FROM {links} "
                f"WHERE trace_id IN (SELECT trace_id FROM {_TRACES})")
    return int(store.scalar(cur, "SELECT count(*) FROM spans"))


def close_window(cur: duckdb.DuckDBPyConnection) -> None:
    """The store's own tables again on this cursor."""
    cur.execute("DROP VIEW IF EXISTS temp.main.spans")
    cur.execute("DROP VIEW IF EXISTS temp.main.span_links")
    cur.execute(f"DROP TABLE IF EXISTS temp.main.{_TRACES}")
