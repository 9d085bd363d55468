"""Every query the dashboard runs, in one place, over the materialised analysis tables.

Values always travel as bound parameters (`?`), never pasted into SQL. Each function takes a
cursor and returns a pandas DataFrame or plain data; pages cache the results keyed on the
analysis run (see `cache.py`), so nothing here runs per click once a page has been drawn.
"""

from __future__ import annotations

import json

import duckdb
import pandas as pd

from choreoscope.analysis.findings import SEVERITIES as SEVERITIES_LOW_FIRST

ANALYSIS_TABLES = ("workflows", "workflow_steps", "workflow_edges", "workflow_variants", "instances",
                   "span_steps", "causal_edges", "clock_offsets", "findings")
SEVERITIES = tuple(reversed(SEVERITIES_LOW_FIRST))  # most severe first, for display


def frame(cur: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> pd.DataFrame:
    result = cur.execute(sql, params or [])
    cols = [d[0] for d in result.description]
    return pd.DataFrame(result.fetchall(), columns=cols)


def tables(cur: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in cur.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()}


def has_analysis(cur: duckdb.DuckDBPyConnection) -> bool:
    return set(ANALYSIS_TABLES) <= tables(cur)


def has_conformance(cur: duckdb.DuckDBPyConnection) -> bool:
    return {"conformance_edges", "conformance_workflows"} <= tables(cur)


def summary(cur: duckdb.DuckDBPyConnection) -> dict:
    if "spans" not in tables(cur):
        return {"spans": 0, "traces": 0, "services": 0, "first_ns": None, "last_ns": None}
    spans, traces, services, first, last = cur.execute(
        "SELECT count(*), count(DISTINCT trace_id), count(DISTINCT service_name), min(start_ns), max(end_ns) "
        "FROM spans").fetchall()[0]
    return {"spans": spans, "traces": traces, "services": services, "first_ns": first, "last_ns": last}


def workflows(cur: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Workflows with their finding counts by severity. A finding belongs to a workflow if it names
    it, or (naming none) if one of its services takes part in it."""
    return frame(cur, """
        WITH ws AS (SELECT workflow_id, list(DISTINCT service) AS svcs FROM workflow_steps
                    WHERE NOT virtual GROUP BY ALL),
        fw AS (SELECT w.workflow_id, f.severity FROM findings f JOIN ws w
               ON f.workflow_id = w.workflow_id OR (f.workflow_id IS NULL AND list_has_any(f.services, w.svcs)))
        SELECT w.workflow_id, w.name, p.pattern, w.instances, w.services, w.events, w.max_depth,
               w.fan_out_max, w.entry_service, w.entry_operation,
               coalesce(sum(CASE WHEN fw.severity = 'critical' THEN 1 END), 0)::INT AS critical,
               coalesce(sum(CASE WHEN fw.severity = 'warning' THEN 1 END), 0)::INT AS warning,
               coalesce(sum(CASE WHEN fw.severity = 'info' THEN 1 END), 0)::INT AS info,
               p.who_knows_the_workflow, p.where_state_lives, p.where_errors_are_handled
        FROM workflows w JOIN workflow_patterns p USING (workflow_id) LEFT JOIN fw USING (workflow_id)
        GROUP BY ALL ORDER BY w.instances DESC, w.workflow_id""")


def workflow_steps(cur: duckdb.DuckDBPyConnection, workflow_id: str) -> pd.DataFrame:
    return frame(cur, "SELECT step_id, service, role, operation, count, instances, errors, virtual "
                      "FROM workflow_steps WHERE workflow_id = ? ORDER BY count DESC, step_id", [workflow_id])


def workflow_edges(cur: duckdb.DuckDBPyConnection, workflow_id: str) -> pd.DataFrame:
    return frame(cur, "SELECT src_step, dst_step, src_service, dst_service, via, event, count, instances, "
                      "inferred, confidence, evidence, latency_p50_ms, latency_p95_ms FROM workflow_edges "
                      "WHERE workflow_id = ? ORDER BY count DESC, src_step, dst_step", [workflow_id])


def workflow_variants(cur: duckdb.DuckDBPyConnection, workflow_id: str) -> pd.DataFrame:
    return frame(cur, """
        SELECT v.variant_id, v.count, v.errors, v.example_trace_ids,
               (SELECT i.instance_id FROM instances i JOIN instance_variants iv USING (instance_id)
                WHERE i.workflow_id = v.workflow_id AND iv.variant_id = v.variant_id
                ORDER BY i.start_adj LIMIT 1) AS example_instance
        FROM workflow_variants v WHERE v.workflow_id = ? ORDER BY v.count DESC, v.variant_id""", [workflow_id])


def workflow_instances(cur: duckdb.DuckDBPyConnection, workflow_id: str, limit: int = 200) -> pd.DataFrame:
    return frame(cur, "SELECT instance_id, entry_trace_id, variant_id, spans, traces, services, errors, "
                      "(end_adj - start_adj) / 1e6 AS duration_ms, start_adj "
                      "FROM instances JOIN instance_variants USING (instance_id, workflow_id) "
                      "WHERE workflow_id = ? ORDER BY errors DESC, start_adj LIMIT ?", [workflow_id, limit])


def findings(cur: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    df = frame(cur, """
        SELECT finding_id, kind, severity, confidence, services, event, resource, workflow_id, summary,
               recommendation, evidence, trace_ids FROM findings
        ORDER BY CASE severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END,
                 confidence DESC, kind, finding_id""")
    df["evidence"] = [json.loads(e) if isinstance(e, str) else (e or {}) for e in df["evidence"]]
    df["services"] = [list(s or []) for s in df["services"]]
    df["trace_ids"] = [list(t or []) for t in df["trace_ids"]]
    return df


def instances_of_traces(cur: duckdb.DuckDBPyConnection, trace_ids: list[str]) -> pd.DataFrame:
    """The instances holding any of `trace_ids` (a finding's examples), looked up in the one row per
    trace of `trace_instances` (not a scan of every span: a page lists tens of findings)."""
    return frame(cur, """
        SELECT DISTINCT i.instance_id, i.workflow_id, i.entry_trace_id, i.spans, i.errors,
               (i.end_adj - i.start_adj) / 1e6 AS duration_ms
        FROM trace_instances t JOIN instances i USING (instance_id)
        WHERE t.trace_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY i.errors DESC, i.instance_id""",
                 [list(trace_ids)])


def instance_of_trace(cur: duckdb.DuckDBPyConnection, trace_id: str) -> str | None:
    rows = cur.execute("SELECT instance_id FROM trace_instances WHERE trace_id = ?", [trace_id]).fetchall()
    return rows[0][0] if rows else None


def instance(cur: duckdb.DuckDBPyConnection, instance_id: str) -> dict | None:
    rows = frame(cur, "SELECT * FROM instances WHERE instance_id = ?", [instance_id])
    return None if rows.empty else rows.iloc[0].to_dict()


def instance_spans(cur: duckdb.DuckDBPyConnection, instance_id: str) -> pd.DataFrame:
    """The instance's spans with raw and skew-corrected times (ms from the instance start)."""
    return frame(cur, """
        WITH s AS (SELECT * FROM span_steps WHERE instance_id = ?),
        t0 AS (SELECT min(start_adj) AS t0 FROM s)
        SELECT s.trace_id, s.span_id, s.parent_span_id, s.service, s.role, s.operation, s.step_id,
               sp.name, sp.status_message, s.is_error, s.retry_attempt, s.messaging_destination,
               (s.start_adj - t0) / 1e6 AS start_ms, (s.end_adj - t0) / 1e6 AS end_ms,
               (s.start_ns - t0) / 1e6 AS raw_start_ms, (s.end_ns - t0) / 1e6 AS raw_end_ms,
               (s.end_ns - s.start_ns) / 1e6 AS duration_ms,
               coalesce(o.offset_ns, 0) / 1e6 AS clock_offset_ms
        FROM s CROSS JOIN t0
        LEFT JOIN spans sp ON sp.trace_id = s.trace_id AND sp.span_id = s.span_id
        LEFT JOIN clock_offsets o ON o.service = s.service
        ORDER BY s.start_adj, s.span_id""", [instance_id])


def instance_cross_edges(cur: duckdb.DuckDBPyConnection, instance_id: str) -> pd.DataFrame:
    """Causal edges of the instance that are not plain parent->child: links, message-id and
    time-window inferences — the hops that stitch traces together."""
    return frame(cur, """
        SELECT src_trace_id, src_span_id, dst_trace_id, dst_span_id, via, evidence,
               inferred, confidence, src_service, dst_service
        FROM span_edges WHERE instance_id = ? AND evidence <> 'parent'""", [instance_id])


def event_catalog(cur: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Per event (messaging destination): producers, consumers, volume and consumer lag: consumer
    start - producer start over the causal event edges, on the skew-corrected clocks
    (`span_edges.src_start_adj` / `dst_start_adj`, as `workflow_edges` latency), never the raw ones."""
    return frame(cur, """
        WITH ev AS (SELECT messaging_destination AS event, service, role FROM span_steps
                    WHERE messaging_destination IS NOT NULL AND role IN ('producer', 'consumer')),
        lag AS (SELECT coalesce(src_messaging_destination, event) AS event,
                       (dst_start_adj - src_start_adj) / 1e6 AS lag_ms
                FROM span_edges
                WHERE via = 'event' AND src_role = 'producer' AND dst_role = 'consumer'
                  AND coalesce(src_messaging_destination, event) IS NOT NULL)
        SELECT ev.event,
               list(DISTINCT service ORDER BY service) FILTER (WHERE role = 'producer') AS producers,
               list(DISTINCT service ORDER BY service) FILTER (WHERE role = 'consumer') AS consumers,
               count(*) FILTER (WHERE role = 'producer') AS produced,
               count(*) FILTER (WHERE role = 'consumer') AS consumed,
               (SELECT quantile_cont(lag_ms, 0.5) FROM lag WHERE lag.event = ev.event) AS lag_p50_ms,
               (SELECT quantile_cont(lag_ms, 0.95) FROM lag WHERE lag.event = ev.event) AS lag_p95_ms
        FROM ev GROUP BY ev.event ORDER BY produced DESC, ev.event""")


def event_attribute_sets(cur: duckdb.DuckDBPyConnection, event: str) -> pd.DataFrame:
    """The attribute-key sets producers sent for `event`, by producer and version."""
    return frame(cur, """
        SELECT service_name AS producer, coalesce(service_version, '?') AS version,
               list_sort(json_keys(attributes)) AS attribute_keys, count(*) AS spans
        FROM spans WHERE messaging_destination = ? AND kind = 'PRODUCER'
        GROUP BY ALL ORDER BY producer, version, spans DESC""", [event])


def service_table(cur: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Per service: span volume, fan-in / fan-out (distinct other services), workflows it is in,
    whether it is an entry and whether it is a sink (receives but never calls or emits onwards)."""
    return frame(cur, """
        WITH e AS (SELECT DISTINCT src_service, dst_service, via FROM workflow_edges
                   WHERE src_service <> dst_service),
        st AS (SELECT service, bool_or(virtual) AS virtual, list(DISTINCT workflow_id ORDER BY workflow_id) AS wfs
               FROM workflow_steps GROUP BY ALL),
        vol AS (SELECT service, count(*) AS spans, count(*) FILTER (WHERE is_error) AS errors
                FROM span_steps GROUP BY ALL)
        SELECT st.service, st.virtual, coalesce(vol.spans, 0) AS spans, coalesce(vol.errors, 0) AS errors,
               (SELECT count(DISTINCT src_service) FROM e WHERE e.dst_service = st.service) AS fan_in,
               (SELECT count(DISTINCT dst_service) FROM e WHERE e.src_service = st.service) AS fan_out,
               (SELECT count(DISTINCT dst_service) FROM e WHERE e.src_service = st.service AND via = 'call')
                   AS calls_out,
               (SELECT count(DISTINCT dst_service) FROM e WHERE e.src_service = st.service AND via = 'event')
                   AS emits_to,
               EXISTS (SELECT 1 FROM workflows w WHERE w.entry_service = st.service) AS entry,
               len(st.wfs) AS workflow_count, st.wfs AS workflows
        FROM st LEFT JOIN vol USING (service) ORDER BY spans DESC, st.service""")


def service_edges(cur: duckdb.DuckDBPyConnection, service: str) -> pd.DataFrame:
    return frame(cur, """
        SELECT src_service, dst_service, via, event, sum(count) AS count
        FROM workflow_edges WHERE (src_service = ? OR dst_service = ?) AND src_service <> dst_service
        GROUP BY ALL ORDER BY count DESC""", [service, service])


def conformance_edges(cur: duckdb.DuckDBPyConnection, workflow_id: str) -> pd.DataFrame:
    """The conformance verdict per edge for one recovered workflow (empty without intended docs)."""
    if not has_conformance(cur):
        return pd.DataFrame()
    return frame(cur, "SELECT * FROM conformance_edges WHERE workflow_id = ?", [workflow_id])


def conformance_workflows(cur: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    if not has_conformance(cur):
        return pd.DataFrame()
    return frame(cur, "SELECT * FROM conformance_workflows")


def system_map_edges(cur: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Every hand-off between services over all workflows, aggregated: one row per (src service,
    dst service, via, event) with its count, the workflows it occurs in and whether it was
    inferred. Calls inside one service are left out. An event with no instrumented consumer (its
    edge goes to the virtual step named after the destination) has `dst_virtual`; an event
    consumed with no producer seen (a consumer step with no incoming event edge) has a NULL
    src_service."""
    return frame(cur, """
        WITH v AS (SELECT DISTINCT workflow_id, step_id FROM workflow_steps WHERE virtual),
        e AS (
            SELECT e.src_service, e.dst_service, e.via, e.event, e.count, e.workflow_id, e.inferred,
                   v.step_id IS NOT NULL AS dst_virtual
            FROM workflow_edges e LEFT JOIN v ON v.workflow_id = e.workflow_id AND v.step_id = e.dst_step
            WHERE e.src_service <> e.dst_service OR e.via = 'event'
            UNION ALL
            SELECT NULL, s.service, 'event', s.operation, s.count, s.workflow_id, false, false
            FROM workflow_steps s
            WHERE s.role = 'consumer' AND NOT s.virtual AND NOT EXISTS (
                SELECT 1 FROM workflow_edges x
                WHERE x.workflow_id = s.workflow_id AND x.dst_step = s.step_id AND x.via = 'event'))
        SELECT src_service, dst_service, via, event, sum(count)::BIGINT AS count,
               list(DISTINCT workflow_id ORDER BY workflow_id) AS workflows, bool_or(inferred) AS inferred,
               bool_and(dst_virtual) AS dst_virtual
        FROM e GROUP BY ALL
        ORDER BY count DESC, src_service NULLS FIRST, dst_service, via, event NULLS FIRST""")


def system_map_services(cur: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Per service (and uninstrumented peer): its `service.namespace` (the most common one on its
    spans), span and error counts, whether it is virtual, the workflows it takes part in."""
    ns = ("SELECT service_name AS service, mode(service_namespace) AS namespace FROM spans "
          "WHERE service_namespace IS NOT NULL GROUP BY ALL") if "spans" in tables(cur) else \
        "SELECT NULL::VARCHAR AS service, NULL::VARCHAR AS namespace WHERE false"
    return frame(cur, f"""
        WITH ns AS ({ns})
        SELECT s.service, bool_and(s.virtual) AS virtual,
               coalesce(sum(s.count) FILTER (WHERE NOT s.virtual), 0)::BIGINT AS spans,
               coalesce(sum(s.errors) FILTER (WHERE NOT s.virtual), 0)::BIGINT AS errors,
               list(DISTINCT s.workflow_id ORDER BY s.workflow_id) AS workflows,
               any_value(ns.namespace) AS namespace
        FROM workflow_steps s LEFT JOIN ns USING (service)
        GROUP BY s.service ORDER BY spans DESC, s.service""")


def step_pair_gaps(cur: duckdb.DuckDBPyConnection, workflow_id: str, step_a: str, step_b: str) -> pd.DataFrame:
    """Per instance of `workflow_id` where both steps occur: when A last ended and when B first and
    last started (corrected clocks), the gap of B's first attempt (first start - A's end; negative:
    B started before A had finished) and of its final one, and B's attempts and errors."""
    return frame(cur, """
        WITH s AS (SELECT instance_id, step_id, start_adj, end_adj, is_error FROM span_steps
                   WHERE workflow_id = ? AND step_id IN (?, ?)),
        a AS (SELECT instance_id, max(end_adj) AS a_end FROM s WHERE step_id = ? GROUP BY ALL),
        b AS (SELECT instance_id, min(start_adj) AS b_first, max(start_adj) AS b_final, count(*) AS b_attempts,
                     count(*) FILTER (WHERE is_error) AS b_errors FROM s WHERE step_id = ? GROUP BY ALL)
        SELECT a.instance_id, i.entry_trace_id, (b.b_first - a.a_end) / 1e6 AS first_gap_ms,
               (b.b_final - a.a_end) / 1e6 AS final_gap_ms, b.b_attempts, b.b_errors,
               b.b_first < a.a_end AS started_early
        FROM a JOIN b USING (instance_id) JOIN instances i USING (instance_id)
        ORDER BY first_gap_ms, a.instance_id""", [workflow_id, step_a, step_b, step_a, step_b])


def step_attempts(cur: duckdb.DuckDBPyConnection, workflow_id: str | None, step_id: str) -> pd.DataFrame:
    """Per instance, how many spans (attempts) of `step_id` it ran and how many failed."""
    return frame(cur, """
        SELECT instance_id, count(*) AS attempts, count(*) FILTER (WHERE is_error) AS errors
        FROM span_steps WHERE step_id = ? AND (? IS NULL OR workflow_id = ?)
        GROUP BY ALL ORDER BY attempts DESC, instance_id""", [step_id, workflow_id, workflow_id])


def clock_corrections(cur: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """The services whose clock the analysis corrected (a non-zero offset), in ms."""
    return frame(cur, "SELECT service, offset_ns / 1e6 AS offset_ms FROM clock_offsets WHERE offset_ns <> 0 "
                      "ORDER BY abs(offset_ns) DESC, service")


def critical_path_steps(cur: duckdb.DuckDBPyConnection, workflow_id: str) -> pd.DataFrame:
    """The workflow's typical critical path in path order (empty for a store analysed before the
    critical path stage existed)."""
    if "critical_path_steps" not in tables(cur):
        return pd.DataFrame(columns=["step_id", "service", "kind", "share", "p50_ms", "instances", "waits_on",
                                     "total_share"])
    return frame(cur, """
        SELECT step_id, service, kind, share, p50_ms, instances, waits_on, total_share
        FROM critical_path_steps WHERE workflow_id = ? ORDER BY at_p50_ms, step_id, kind""", [workflow_id])


def instance_critical_path(cur: duckdb.DuckDBPyConnection, instance_id: str) -> pd.DataFrame:
    """The instance's critical path segments in time order, in ms from the instance start (the same
    origin as `instance_spans`)."""
    if "critical_path_segments" not in tables(cur):
        return pd.DataFrame(columns=["span_id", "trace_id", "step_id", "service", "kind", "waits_on",
                                     "start_ms", "end_ms", "duration_ms"])
    return frame(cur, """
        WITH t0 AS (SELECT min(start_adj) AS t0 FROM span_steps WHERE instance_id = ?)
        SELECT g.span_id, g.trace_id, g.step_id, g.service, g.kind, g.waits_on,
               (g.start_adj - t0) / 1e6 AS start_ms, (g.end_adj - t0) / 1e6 AS end_ms, g.duration_ms
        FROM critical_path_segments g CROSS JOIN t0 WHERE g.instance_id = ?
        ORDER BY g.seq DESC""", [instance_id, instance_id])


def verdicts(cur: duckdb.DuckDBPyConnection) -> dict[str, list[dict]]:
    """Workflow id -> its verdicts (analysis/verdicts.py), as in the JSON report."""
    if not {"critical_path_steps", "findings", "event_relays", "deliveries"} <= tables(cur):
        return {}
    from choreoscope.analysis.verdicts import build_verdicts

    return build_verdicts(cur)
