"""missing_compensation: a saga whose failed instances sometimes leave completed steps undone.

Detects: a coordinating service (the one issuing calls or commands in a workflow) that, after a
failure, compensates a completed step in some failed instances (e.g. DELETE /credit-holds/{id}
after POST /credit-holds) but not in others where the same step had completed before the failure.
Inconsistent compensation leaves resources held or money moved with no owner to undo it.

Assumption: a compensating action is a call or event whose operation says so (cancel, release,
refund, undo, revert, rollback, void, or an HTTP DELETE — the words the pattern stage uses); it
compensates the non-read action of the coordinator on the same target whose resource path (route
without ids) or name tokens match best. An instance failed when one of the coordinator's
non-compensating actions failed; a step completed when it succeeded before that failure.

Evidence: per step, failed instances where it had completed, compensated, uncompensated, the
compensating operation, and example traces of the uncompensated instances.
"""

from __future__ import annotations

import re

from analysis.detectors._common import rows, workflow_entries
from analysis.findings import Finding
from analysis.patterns import COMPENSATION_WORDS

READ_METHODS = ("GET", "HEAD", "OPTIONS")
VERBS = {"get", "post", "put", "patch", "delete", "cancel", "release", "refund", "undo", "revert", "rollback",
         "void", "compensate", "compensation", "create", "update"}

ACTIONS_SQL = """
WITH actions AS (
    SELECT s.workflow_id, s.instance_id, s.service AS coordinator, s.role,
           coalesce(callee.operation, s.operation, '') AS operation,
           coalesce(callee.service, s.peer, s.messaging_destination, 'unknown peer') AS target,
           s.is_error OR coalesce(callee.is_error, false) AS failed, s.start_adj, s.end_adj
    FROM span_steps s
    LEFT JOIN causal_edges e ON e.src_trace_id = s.trace_id AND e.src_span_id = s.span_id AND e.via = 'call'
    LEFT JOIN span_steps callee ON callee.trace_id = e.dst_trace_id AND callee.span_id = e.dst_span_id
                               AND callee.service <> s.service
    WHERE (s.role = 'client' AND s.db_system IS NULL) OR s.role = 'producer'
)
SELECT a.workflow_id, a.coordinator, a.target, a.operation, a.instance_id,
       bool_or(NOT a.failed) AS succeeded, min(a.end_adj) FILTER (WHERE NOT a.failed) AS done_at,
       min(a.start_adj) FILTER (WHERE a.failed) AS failed_at, min(a.start_adj) AS started_at,
       any_value(i.entry_trace_id) AS trace_id
FROM actions a JOIN instances i USING (instance_id)
GROUP BY a.workflow_id, a.coordinator, a.target, a.operation, a.instance_id
"""


def is_compensation(operation: str) -> bool:
    return bool(COMPENSATION_WORDS.search(operation or ""))


def _resource(operation: str) -> tuple[str, str, set[str]]:
    """(method, path without id segments, name tokens) of an operation label."""
    method, _, rest = (operation or "").partition(" ")
    if not rest or not method.isupper():
        method, rest = "", operation or ""
    path = "/".join(p for p in rest.split("/") if p and "{" not in p)
    words = {w for w in re.split(r"[^a-z0-9]+", rest.lower()) if w and w != "id"}
    return method, path, words - VERBS


def forward_step(compensation: str, candidates: list[str]) -> str | None:
    """The action `compensation` undoes, among the coordinator's actions on the same target."""
    _, c_path, c_words = _resource(compensation)
    best, best_score = None, 0.0
    for op in candidates:
        method, path, words = _resource(op)
        if method in READ_METHODS or is_compensation(op):
            continue
        score = 2.0 if path and path == c_path else len(words & c_words) / max(1, len(c_words | words))
        if score > best_score:
            best, best_score = op, score
    return best


def detect(con) -> list[Finding]:
    entries = workflow_entries(con)
    per_instance = rows(con, ACTIONS_SQL)
    # When did each (workflow, coordinator, instance) first fail (a non-compensating action)?
    failure: dict[tuple[str, str, str], float] = {}
    for r in per_instance:
        if r["failed_at"] is not None and not is_compensation(r["operation"]):
            key = (r["workflow_id"], r["coordinator"], r["instance_id"])
            failure[key] = min(failure.get(key, r["failed_at"]), r["failed_at"])
    by_action: dict[tuple[str, str, str, str], dict[str, dict]] = {}
    for r in per_instance:
        by_action.setdefault((r["workflow_id"], r["coordinator"], r["target"], r["operation"]), {})[
            r["instance_id"]] = r
    ops_by_target: dict[tuple[str, str, str], list[str]] = {}
    for wf, coord, target, op in by_action:
        ops_by_target.setdefault((wf, coord, target), []).append(op)

    steps_by_coordinator: dict[tuple[str, str], list[dict]] = {}
    for (wf, coord, target, comp), comp_rows in sorted(by_action.items()):
        if not is_compensation(comp):
            continue
        forward = forward_step(comp, sorted(ops_by_target[(wf, coord, target)]))
        if forward is None:
            continue
        compensated, missing = [], []
        for inst, f in sorted(by_action[(wf, coord, target, forward)].items()):
            failed_at = failure.get((wf, coord, inst))
            if failed_at is None or f["done_at"] is None or f["done_at"] > failed_at:
                continue   # not a failed instance, or the step had not completed before the failure
            c = comp_rows.get(inst)
            (compensated if c is not None and c["succeeded"] else missing).append(f["trace_id"])
        if compensated and missing:
            steps_by_coordinator.setdefault((wf, coord), []).append({
                "target": target, "step": forward, "compensated_by": comp,
                "failed_after_step": len(compensated) + len(missing), "compensated": len(compensated),
                "uncompensated": len(missing), "uncompensated_trace_ids": sorted(missing)[:5]})

    findings = []
    for (wf, coord), steps in sorted(steps_by_coordinator.items()):
        steps.sort(key=lambda s: -s["uncompensated"])
        top = steps[0]
        consistency = top["compensated"] / top["failed_after_step"]
        name = entries.get(wf, {}).get("name", wf)
        gaps = "; ".join(f"{s['target']} {s['step']} was not undone ({s['compensated_by']}) in "
                         f"{s['uncompensated']} of {s['failed_after_step']} failed instances" for s in steps)
        findings.append(Finding(
            kind="missing_compensation", services=[coord], workflow=wf,
            confidence=0.55 + 0.4 * consistency, severity="critical",
            summary=(f"In the '{name}' saga, {coord} compensates inconsistently after failures: {gaps}, "
                     f"although it does so in the others."),
            recommendation=(
                f"Make compensation part of the saga definition, not of each error path: record every"
                f" completed step in {coord}'s saga state and undo all of them, newest first, on every"
                f" failure (an orchestrator owns this; in a choreography each service must react to the"
                f" failure event). Add a test that fails each step in turn."
            ),
            evidence={"steps": steps, "failed_instances": len({i for (w, c, i) in failure if w == wf and c == coord})},
            trace_ids=top["uncompensated_trace_ids"],
        ))
    return findings
