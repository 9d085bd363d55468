"""The JSON report of the contract (docs/report.md, analysis/report_schema.json), built from the
analysis tables — never from spans — so the CLI, `check` and the dashboard all say the same thing."""

from __future__ import annotations

import functools
import json
import math
from importlib import resources

import duckdb
import fastjsonschema

from choreoscope.analysis.findings import load_findings
from choreoscope.analysis.verdicts import build_verdicts

SCHEMA_VERSION = 1


def report_schema() -> dict:
    return json.loads(resources.files("choreoscope.analysis").joinpath("report_schema.json").read_text())


def _finite(value):
    """NaN and infinities (a correlation over constant times) as null: JSON has no such numbers,
    and `json.dumps` would write `NaN`, which jq, browsers and most parsers reject."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _round(x, nd=3):
    return None if x is None else round(float(x), nd)


def build_report(con: duckdb.DuckDBPyConnection) -> dict:
    q = lambda sql, params=None: con.execute(sql, params or []).fetchall()
    spans, traces, services = q(
        "SELECT count(*), count(DISTINCT trace_id), count(DISTINCT service_name) FROM spans"
    )[0]
    n_instances = q("SELECT count(*) FROM instances")[0][0]
    offsets = {s: round(o / 1e6, 3) for s, o in q("SELECT service, offset_ns FROM clock_offsets ORDER BY service")}

    steps_by_wf: dict[str, list] = {}
    for wf, sid, svc, role, op, count in q(
        "SELECT workflow_id, step_id, service, role, operation, count FROM workflow_steps "
        "ORDER BY workflow_id, count DESC, step_id"
    ):
        steps_by_wf.setdefault(wf, []).append(
            {"id": sid, "service": svc, "operation": op, "role": role, "count": int(count)}
        )
    edges_by_wf: dict[str, list] = {}
    for wf, src, dst, via, event, count, inferred, conf, evidence, p50, p95 in q(
        "SELECT workflow_id, src_step, dst_step, via, event, count, inferred, confidence, evidence, "
        "latency_p50_ms, latency_p95_ms FROM workflow_edges ORDER BY workflow_id, count DESC, src_step, dst_step"
    ):
        edges_by_wf.setdefault(wf, []).append(
            {"source": src, "target": dst, "via": via, "event": event, "count": int(count),
             "inferred": bool(inferred), "confidence": _round(conf), "evidence": list(evidence),
             "latency_ms": {"p50": _round(p50), "p95": _round(p95)}}
        )
    variants_by_wf: dict[str, list] = {}
    for wf, vid, count, examples in q(
        "SELECT workflow_id, variant_id, count, example_trace_ids FROM workflow_variants "
        "ORDER BY workflow_id, count DESC, variant_id"
    ):
        variants_by_wf.setdefault(wf, []).append(
            {"id": vid, "count": int(count), "example_trace_ids": list(examples)}
        )
    services_by_wf = dict(q(
        "SELECT workflow_id, list(DISTINCT service ORDER BY service) FROM workflow_steps "
        "WHERE NOT virtual GROUP BY ALL"
    ))
    path_by_wf: dict[str, list] = {}
    for wf, step, svc, kind, p50, share, waits_on in q(
        "SELECT workflow_id, step_id, service, kind, p50_ms, share, waits_on FROM critical_path_steps "
        "ORDER BY workflow_id, at_p50_ms, step_id, kind"
    ):
        item = {"step": step, "service": svc, "kind": kind, "p50_ms": _round(p50), "share": _round(share)}
        if waits_on is not None:
            item["waits_on"] = waits_on
        path_by_wf.setdefault(wf, []).append(item)
    verdicts_by_wf = build_verdicts(con)
    workflows = []
    for row in q(
        "SELECT workflow_id, name, entry_service, entry_operation, pattern, who_knows_the_workflow, "
        "where_state_lives, where_errors_are_handled, instances, services, events, max_depth, cycles, "
        "fan_out_max FROM workflows JOIN workflow_patterns USING (workflow_id) ORDER BY instances DESC, workflow_id"
    ):
        wf = row[0]
        workflows.append({
            "id": wf, "name": row[1], "entry": {"service": row[2], "operation": row[3]},
            "pattern": row[4],
            "pattern_evidence": {"who_knows_the_workflow": row[5], "where_state_lives": row[6],
                                 "where_errors_are_handled": row[7]},
            "instances": int(row[8]), "services": list(services_by_wf.get(wf, [])),
            "steps": steps_by_wf.get(wf, []), "edges": edges_by_wf.get(wf, []),
            "variants": variants_by_wf.get(wf, []),
            "metrics": {"services": int(row[9]), "events": int(row[10]), "max_depth": int(row[11]),
                        "cycles": int(row[12]), "fan_out_max": int(row[13])},
            "critical_path": path_by_wf.get(wf, []),
            "verdicts": _finite(verdicts_by_wf.get(wf, [])),
        })
    findings = sorted(
        load_findings(con),
        key=lambda f: (-["info", "warning", "critical"].index(f.severity), -f.confidence, f.kind, f.services),
    )
    report = {
        "schema_version": SCHEMA_VERSION,
        "summary": {"spans": int(spans), "traces": int(traces), "services": int(services),
                    "workflow_instances": int(n_instances)},
        "clock_offsets_ms": offsets,
        "workflows": workflows,
        "findings": [_finite(dict(f.to_dict(), id=f.key)) for f in findings],
    }
    conformance = _conformance_section(con)
    if conformance is not None:
        report["conformance"] = conformance
    return report


def _conformance_section(con: duckdb.DuckDBPyConnection):
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'conformance_workflows'"
    ).fetchall()[0][0]
    if not exists:
        return None
    cols = [d[0] for d in con.execute("SELECT * FROM conformance_workflows LIMIT 0").description]
    return [dict(zip(cols, r)) for r in con.execute("SELECT * FROM conformance_workflows").fetchall()]


def validate_report(report: dict) -> None:
    """Raise jsonschema.ValidationError if `report` does not follow the committed schema.

    Every `analyze` checks its report, so the check is a compiled one (fastjsonschema): 8 ms on
    the 100k-span bench dump's 0.7 MB report, where jsonschema took 180-260 ms. The schema is
    JSON Schema 2020-12; it uses only keywords that mean the same in draft 7, which
    fastjsonschema compiles (tests/test_report_schema_check.py holds the two to the same verdicts).
    A report the fast check refuses goes to jsonschema, whose error is the one raised."""
    try:
        _compiled_report_check()(report)
    except fastjsonschema.JsonSchemaValueException:
        import jsonschema

        jsonschema.validate(report, report_schema())


@functools.cache
def _compiled_report_check():
    return fastjsonschema.compile(report_schema() | {"$schema": "http://json-schema.org/draft-07/schema#"})
