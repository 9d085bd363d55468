"""Stage 2, causal edges between spans: who caused whom, within and across traces.

Evidence, strongest first (each edge records which, and whether it was inferred):
- `parent`: the child's parent span id (same trace). Producer -> consumer is an event, else a call.
- `link`: a span link, in either direction; the earlier-starting span is the cause.
- `message_id`: a consumer with no producer in its context, tied to the producer span that sent
  the same `messaging.message.id` (context propagation was broken).
- `time_window`: a root consumer with neither, tied to the latest producer of the same
  destination that started before it, within `window_ns`; failing that, to the latest producer of
  unknown destination in its own trace (weakest; ASOF joins).
Two stages: `parent edges` (reads `span_labels`, writes `parent_edges`; the clock-skew stage needs
them first) and `causal edges` (writes `causal_edges`: the parent edges, then links and inferences,
which compare clock-corrected start times).
"""

from __future__ import annotations

import duckdb

from choreoscope.analysis.clock_skew import corrected_steps_sql

DEFAULT_WINDOW_NS = 10_000_000_000  # 10 s

_COLUMNS = "src_trace_id, src_span_id, dst_trace_id, dst_span_id, via, evidence, inferred, confidence"


def build_parent_edges(con: duckdb.DuckDBPyConnection) -> None:
    """Create `parent_edges`: the parent -> child edges (needed first, by the clock-skew stage)."""
    con.execute(
        """
        CREATE OR REPLACE TABLE parent_edges AS
        SELECT p.trace_id AS src_trace_id, p.span_id AS src_span_id,
               c.trace_id AS dst_trace_id, c.span_id AS dst_span_id,
               CASE WHEN p.role = 'producer' AND c.role = 'consumer' THEN 'event' ELSE 'call' END AS via,
               'parent' AS evidence, false AS inferred, 1.0::DOUBLE AS confidence
        FROM span_labels c
        JOIN span_labels p ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id
        """
    )


def build_causal_edges(con: duckdb.DuckDBPyConnection, window_ns: int = DEFAULT_WINDOW_NS) -> None:
    """Create `causal_edges`: the parent edges, link edges, then message-id and time-window
    inferences for consumers still unexplained (on clock-corrected start times)."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE _steps_adj AS {corrected_steps_sql()}")
    con.execute("CREATE OR REPLACE TABLE causal_edges AS SELECT * FROM parent_edges")
    con.execute(
        f"""
        INSERT INTO causal_edges ({_COLUMNS})
        SELECT DISTINCT
            CASE WHEN t.start_adj <= h.start_adj THEN t.trace_id ELSE h.trace_id END,
            CASE WHEN t.start_adj <= h.start_adj THEN t.span_id ELSE h.span_id END,
            CASE WHEN t.start_adj <= h.start_adj THEN h.trace_id ELSE t.trace_id END,
            CASE WHEN t.start_adj <= h.start_adj THEN h.span_id ELSE t.span_id END,
            CASE WHEN h.role IN ('producer', 'consumer') OR t.role IN ('producer', 'consumer')
                 THEN 'event' ELSE 'call' END,
            'link', false, 1.0::DOUBLE
        FROM span_links l
        JOIN _steps_adj h ON h.trace_id = l.trace_id AND h.span_id = l.span_id
        JOIN _steps_adj t ON t.trace_id = l.linked_trace_id AND t.span_id = l.linked_span_id
        WHERE NOT (h.trace_id = t.trace_id AND h.span_id = t.span_id)
        """
    )
    # Consumers that nothing explains yet: no incoming event edge, and not the child of a
    # consumer span (a `process` span under its `receive` span is explained by its parent).
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE _unexplained_consumers AS
        SELECT c.*
        FROM _steps_adj c
        LEFT JOIN _steps_adj parent ON parent.trace_id = c.trace_id AND parent.span_id = c.parent_span_id
        WHERE c.role = 'consumer'
          AND coalesce(parent.role, '') <> 'consumer'
          AND NOT EXISTS (
              SELECT 1 FROM causal_edges e
              WHERE e.dst_trace_id = c.trace_id AND e.dst_span_id = c.span_id AND e.via = 'event')
        """
    )
    con.execute(
        f"""
        INSERT INTO causal_edges ({_COLUMNS})
        SELECT p.trace_id, p.span_id, c.trace_id, c.span_id, 'event', 'message_id', true, 0.9::DOUBLE
        FROM _unexplained_consumers c
        JOIN _steps_adj p
          ON p.messaging_message_id = c.messaging_message_id
         AND p.role = 'producer'
         AND coalesce(p.messaging_destination, '') = coalesce(c.messaging_destination, '')
        WHERE c.messaging_message_id IS NOT NULL
        """
    )
    # Same destination, any trace; failing that, a producer of unknown destination in the
    # consumer's own trace (a partial trace where both hang under a span that was not exported).
    _infer_by_time_window(
        con, "messaging_destination IS NOT NULL", "messaging_destination", window_ns,
        extra_root_filter="AND c.messaging_destination IS NOT NULL",
    )
    _infer_by_time_window(con, "messaging_destination IS NULL", "trace_id", window_ns)
    con.execute("DROP TABLE IF EXISTS _unexplained_consumers")
    con.execute("DROP TABLE IF EXISTS _steps_adj")


def _infer_by_time_window(
    con: duckdb.DuckDBPyConnection, producer_filter: str, key: str, window_ns: int, extra_root_filter: str = ""
) -> None:
    """Tie each still unexplained root consumer to the latest producer (matching on `key`) that
    started before it, within `window_ns`."""
    con.execute(
        f"""
        INSERT INTO causal_edges ({_COLUMNS})
        WITH roots AS (
            SELECT c.* FROM _unexplained_consumers c
            WHERE NOT EXISTS (SELECT 1 FROM causal_edges e
                              WHERE e.dst_trace_id = c.trace_id AND e.dst_span_id = c.span_id)
              AND NOT EXISTS (SELECT 1 FROM _steps_adj p
                              WHERE p.trace_id = c.trace_id AND p.span_id = c.parent_span_id)
              {extra_root_filter}
        ),
        producers AS (
            SELECT trace_id, span_id, messaging_destination, start_adj FROM _steps_adj
            WHERE role = 'producer' AND {producer_filter}
        )
        SELECT p.trace_id, p.span_id, r.trace_id, r.span_id, 'event', 'time_window', true, 0.5::DOUBLE
        FROM roots r
        ASOF JOIN producers p ON p.{key} = r.{key} AND r.start_adj >= p.start_adj
        WHERE r.start_adj - p.start_adj <= {int(window_ns)}
          AND NOT (p.trace_id = r.trace_id AND p.span_id = r.span_id)
        """
    )
