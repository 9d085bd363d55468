"""Stage: every span as a step of its workflow instance, on corrected clocks.

The table most later stages and detectors read: `span_labels`' columns, the clock-corrected
`start_adj`/`end_adj`, and the span's `instance_id` and `workflow_id`. Built once, after the
instances are known, so its columns never depend on which stages ran.
Reads `span_labels`, `clock_offsets`, `trace_instances`, `instances`; writes `span_steps`.
"""

from __future__ import annotations

import duckdb

from choreoscope.analysis.clock_skew import corrected_steps_sql


def build_span_steps(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        f"""
        CREATE OR REPLACE TABLE span_steps AS
        SELECT s.*, ti.instance_id, i.workflow_id
        FROM ({corrected_steps_sql()}) s
        JOIN trace_instances ti USING (trace_id)
        JOIN instances i USING (instance_id)
        """
    )
