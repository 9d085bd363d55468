"""missing_compensation: a saga whose failed instances sometimes leave completed steps undone.

Detects: a coordinating service (the one issuing calls or commands in a workflow) that, after a
failure, compensates a completed step in some failed instances (e.g. DELETE /credit-holds/{id}
after POST /credit-holds) but not in others where the same step had completed before the failure.
Inconsistent compensation leaves resources held or money moved with no owner to undo it.
Also a step it never undoes: the coordinator compensates some step in the failed instances (so it
is a saga that does undo), yet another step it completed before the failure, on another target,
left state behind (the callee wrote to a database while handling it: a check or screening that
writes nothing has nothing to undo) and has no compensation anywhere — in at least
MIN_NEVER_UNDONE = 3 failed instances (one or two could be failures whose clean-up ran
elsewhere, e.g. a timeout sweep).
And in a choreographed saga, where no coordinator exists: a failure event one consumer compensates
for (its handling of it runs a compensating operation, e.g. publishes `reservation.released`),
while a sibling — another consumer of an event that consumer had handled before, in the same
instance, which wrote to a database handling it — does not consume the failure event at all: its
work stays done (in at least MIN_NEVER_UNDONE instances). The finding names that sibling; the
service that failed (the failure event's producer) is left out of the siblings.

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

from choreoscope.analysis.data_access import WRITE_VERBS
from choreoscope.analysis.detectors.query_helpers import rows, workflow_entries
from choreoscope.analysis.findings import Finding
from choreoscope.analysis.patterns import COMPENSATION_WORDS

READ_METHODS = ("GET", "HEAD", "OPTIONS")
VERBS = {"get", "post", "put", "patch", "delete", "cancel", "release", "refund", "undo", "revert", "rollback",
         "void", "compensate", "compensation", "create", "update"}

_COMPENSATING = f"regexp_matches(operation, '(?i){COMPENSATION_WORDS.pattern}')"

ACTIONS_SQL = f"""
CREATE OR REPLACE TEMP TABLE _saga_actions AS
WITH db_writes AS (  -- spans with a database write as a child or grandchild: the handler wrote
    SELECT w.trace_id, w.parent_span_id AS span_id, p.parent_span_id AS grand_id
    FROM span_steps w LEFT JOIN span_steps p ON p.trace_id = w.trace_id AND p.span_id = w.parent_span_id
    WHERE w.db_system IS NOT NULL AND upper(coalesce(w.db_operation, '')) IN {WRITE_VERBS}
),
writers AS (
    SELECT trace_id, span_id FROM db_writes WHERE span_id IS NOT NULL
    UNION SELECT trace_id, grand_id FROM db_writes WHERE grand_id IS NOT NULL
),
actions AS (
    SELECT s.workflow_id, s.instance_id, s.service AS coordinator,
           coalesce(CASE WHEN callee THEN e.dst_operation END, s.operation, '') AS operation,
           coalesce(CASE WHEN callee THEN e.dst_service END, s.peer, s.messaging_destination, 'unknown peer')
               AS target,
           s.is_error OR coalesce(CASE WHEN callee THEN e.dst_is_error END, false) AS failed, s.start_adj, s.end_adj,
           wr.span_id IS NOT NULL AS callee_wrote
    FROM span_steps s
    LEFT JOIN (SELECT *, dst_service <> src_service AS callee FROM span_edges WHERE via = 'call') e
           ON e.src_trace_id = s.trace_id AND e.src_span_id = s.span_id
    LEFT JOIN writers wr ON wr.trace_id = e.dst_trace_id AND wr.span_id = e.dst_span_id AND e.callee
    WHERE (s.role = 'client' AND s.db_system IS NULL) OR s.role = 'producer'
)
SELECT workflow_id, coordinator, target, operation, instance_id, {_COMPENSATING} AS compensating,
       bool_or(callee_wrote) AS callee_wrote,
       bool_or(NOT failed) AS succeeded, min(end_adj) FILTER (WHERE NOT failed) AS done_at,
       min(start_adj) FILTER (WHERE failed) AS failed_at
FROM actions GROUP BY ALL
"""

# Per (compensation, forward step) pair: failed instances where the step had completed before the
# coordinator's first failure, and whether the compensation ran.
OUTCOMES_SQL = """
WITH failures AS (
    SELECT workflow_id, coordinator, instance_id, min(failed_at) AS failed_at
    FROM _saga_actions WHERE NOT compensating AND failed_at IS NOT NULL GROUP BY ALL
)
SELECT p.workflow_id, p.coordinator, p.target, p.forward, p.compensation,
       count(*) FILTER (WHERE c.succeeded) AS compensated,
       count(*) FILTER (WHERE c.succeeded IS NOT TRUE) AS uncompensated,
       list(i.entry_trace_id ORDER BY i.entry_trace_id) FILTER (WHERE c.succeeded IS NOT TRUE)[1:5]
           AS uncompensated_trace_ids
FROM _saga_pairs p
JOIN _saga_actions f ON f.workflow_id = p.workflow_id AND f.coordinator = p.coordinator
                    AND f.target = p.target AND f.operation = p.forward
JOIN failures fl ON fl.workflow_id = f.workflow_id AND fl.coordinator = f.coordinator
                AND fl.instance_id = f.instance_id AND f.done_at <= fl.failed_at
JOIN instances i ON i.instance_id = f.instance_id
LEFT JOIN _saga_actions c ON c.workflow_id = p.workflow_id AND c.coordinator = p.coordinator
                         AND c.target = p.target AND c.operation = p.compensation AND c.instance_id = f.instance_id
GROUP BY ALL
HAVING count(*) FILTER (WHERE c.succeeded) > 0 AND count(*) FILTER (WHERE c.succeeded IS NOT TRUE) > 0
ORDER BY p.workflow_id, p.coordinator, p.target, p.forward
"""

MIN_NEVER_UNDONE = 3

# Per (coordinator, forward step) never compensated: failed instances where the step (a write, not
# failed itself) had completed before the coordinator's first failure, on a target the coordinator
# never compensates, in a workflow where it compensated some other step in a failed instance.
NEVER_UNDONE_SQL = f"""
WITH failures AS (
    SELECT workflow_id, coordinator, instance_id, min(failed_at) AS failed_at,
           arg_min(target, failed_at) AS failed_target
    FROM _saga_actions WHERE NOT compensating AND failed_at IS NOT NULL GROUP BY ALL
),
undoing AS (  -- coordinators that compensated a step in a failed instance
    SELECT DISTINCT a.workflow_id, a.coordinator FROM _saga_actions a
    JOIN failures f USING (workflow_id, coordinator, instance_id) WHERE a.compensating AND a.succeeded
),
undone_targets AS (SELECT DISTINCT workflow_id, coordinator, target FROM _saga_actions WHERE compensating),
undone_in AS (SELECT DISTINCT workflow_id, coordinator, instance_id FROM _saga_actions WHERE compensating AND succeeded)
SELECT a.workflow_id, a.coordinator, a.target, a.operation AS forward, count(*) AS uncompensated,
       count(ui.instance_id) AS other_step_undone, mode(fl.failed_target) AS failed_target,
       list(i.entry_trace_id ORDER BY i.entry_trace_id)[1:5] AS uncompensated_trace_ids
FROM _saga_actions a
JOIN undoing u ON u.workflow_id = a.workflow_id AND u.coordinator = a.coordinator
JOIN failures fl ON fl.workflow_id = a.workflow_id AND fl.coordinator = a.coordinator
                AND fl.instance_id = a.instance_id AND a.done_at <= fl.failed_at
JOIN instances i ON i.instance_id = a.instance_id
LEFT JOIN undone_targets t ON t.workflow_id = a.workflow_id AND t.coordinator = a.coordinator AND t.target = a.target
LEFT JOIN undone_in ui ON ui.workflow_id = a.workflow_id AND ui.coordinator = a.coordinator
                      AND ui.instance_id = a.instance_id
WHERE NOT a.compensating AND a.failed_at IS NULL AND t.target IS NULL AND a.callee_wrote
  AND NOT regexp_matches(a.operation, '^({"|".join(READ_METHODS)}) ')
GROUP BY ALL
HAVING count(*) >= {MIN_NEVER_UNDONE}
ORDER BY a.workflow_id, a.coordinator, a.target, a.operation
"""


# The choreographed saga (see the docstring): per sibling that never reacts to a failure event.
CHOREOGRAPHY_SQL = f"""
WITH consumed AS (
    SELECT instance_id, workflow_id, dst_service AS service, dst_step AS step, event, src_service AS producer,
           dst_trace_id AS trace_id, dst_span_id AS span_id
    FROM span_edges WHERE via = 'event' AND event IS NOT NULL
),
handled_ops AS (   -- what each handler did (not the consumer span itself: its operation is the event's)
    SELECT h.trace_id, h.handler_span_id AS span_id, s.operation, s.db_system, s.db_operation
    FROM handled_spans h JOIN span_steps s ON s.trace_id = h.trace_id AND s.span_id = h.span_id
    WHERE h.depth > 0
),
compensating AS (SELECT DISTINCT trace_id, span_id FROM handled_ops WHERE {_COMPENSATING}),
wrote AS (
    SELECT DISTINCT trace_id, span_id FROM handled_ops
    WHERE db_system IS NOT NULL AND upper(coalesce(db_operation, '')) IN {WRITE_VERBS}
),
failures AS (   -- (instance, failure event, its producer, the consumer that compensated for it)
    SELECT DISTINCT c.instance_id, c.workflow_id, c.event AS failure, c.producer AS failed, c.service AS compensator
    FROM consumed c JOIN compensating k ON k.trace_id = c.trace_id AND k.span_id = c.span_id
),
siblings AS (   -- consumers of an event the compensator handled too, that wrote handling it
    SELECT DISTINCT f.workflow_id, f.instance_id, f.failure, f.failed, f.compensator, s.service, s.step
    FROM failures f
    JOIN consumed e ON e.instance_id = f.instance_id AND e.service = f.compensator AND e.event <> f.failure
    JOIN consumed s ON s.instance_id = f.instance_id AND s.event = e.event
                   AND s.service <> f.compensator AND s.service <> f.failed
    JOIN wrote w ON w.trace_id = s.trace_id AND w.span_id = s.span_id
)
SELECT sb.workflow_id, sb.service, sb.step, sb.failure, sb.failed, min(sb.compensator) AS compensator,
       count(DISTINCT sb.instance_id) AS uncompensated,
       list(DISTINCT i.entry_trace_id ORDER BY i.entry_trace_id)[1:5] AS uncompensated_trace_ids
FROM siblings sb JOIN instances i ON i.instance_id = sb.instance_id
WHERE NOT EXISTS (SELECT 1 FROM consumed r WHERE r.instance_id = sb.instance_id AND r.service = sb.service
                  AND r.event = sb.failure)
GROUP BY sb.workflow_id, sb.service, sb.step, sb.failure, sb.failed
HAVING count(DISTINCT sb.instance_id) >= {MIN_NEVER_UNDONE}
ORDER BY ALL
"""


def _choreography_findings(con, entries: dict) -> list[Finding]:
    findings = []
    for r in rows(con, CHOREOGRAPHY_SQL):
        name = entries.get(r["workflow_id"], {}).get("name", r["workflow_id"])
        step = {"target": r["service"], "step": r["step"], "compensated_by": None, "failure_event": r["failure"],
                "failed_target": r["failed"], "compensated_by_sibling": r["compensator"],
                "failed_after_step": r["uncompensated"], "compensated": 0, "uncompensated": r["uncompensated"],
                "uncompensated_trace_ids": list(r["uncompensated_trace_ids"] or [])}
        findings.append(Finding(
            kind="missing_compensation", services=[r["service"]], workflow=r["workflow_id"],
            confidence=0.8, severity="critical",
            summary=(f"In the '{name}' choreography, {r['service']} never reacts to {r['failure']} (from "
                     f"{r['failed']}): in {r['uncompensated']} failed instances its work on {r['step']} stays "
                     f"done, while {r['compensator']}, which handled the same event, undoes its own."),
            recommendation=(
                f"Give {r['service']} a handler for {r['failure']} that undoes what it did (as "
                f"{r['compensator']} does), or make the failure event's consumers part of the saga's "
                f"definition, so a new participant cannot join without its compensation."
            ),
            evidence={"steps": [step], "failed_instances": r["uncompensated"]},
            trace_ids=step["uncompensated_trace_ids"],
        ))
    return findings


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


def _any_compensation(con) -> bool:
    """Whether any span's operation names a compensation (by the SQL test and by is_compensation):
    without one there is no saga to check, and the per-span queries below are skipped."""
    ops = con.execute(f"SELECT operation, {_COMPENSATING} FROM (SELECT DISTINCT operation FROM span_steps)").fetchall()
    return any(matched or is_compensation(op) for op, matched in ops)


def detect(con) -> list[Finding]:
    if not _any_compensation(con):
        return []
    entries = workflow_entries(con)
    con.execute(ACTIONS_SQL)
    try:
        ops: dict[tuple[str, str, str], list[str]] = {}
        for r in rows(con, "SELECT DISTINCT workflow_id, coordinator, target, operation FROM _saga_actions "
                           "ORDER BY ALL"):
            ops.setdefault((r["workflow_id"], r["coordinator"], r["target"]), []).append(r["operation"])
        pairs = [(wf, coord, target, forward, comp)
                 for (wf, coord, target), names in ops.items() for comp in names if is_compensation(comp)
                 for forward in [forward_step(comp, names)] if forward is not None]
        con.execute("CREATE OR REPLACE TEMP TABLE _saga_pairs (workflow_id VARCHAR, coordinator VARCHAR, "
                    "target VARCHAR, forward VARCHAR, compensation VARCHAR)")
        if pairs:
            con.executemany("INSERT INTO _saga_pairs VALUES (?, ?, ?, ?, ?)", pairs)  # distinct operations
        outcomes = rows(con, OUTCOMES_SQL)
        never_undone = rows(con, NEVER_UNDONE_SQL)
        failed = {(r["workflow_id"], r["coordinator"]): r["n"] for r in rows(
            con, "SELECT workflow_id, coordinator, count(DISTINCT instance_id) AS n FROM _saga_actions "
                 "WHERE NOT compensating AND failed_at IS NOT NULL GROUP BY ALL")}
    finally:
        con.execute("DROP TABLE IF EXISTS _saga_actions")
        con.execute("DROP TABLE IF EXISTS _saga_pairs")

    steps_by_coordinator: dict[tuple[str, str], list[dict]] = {}
    for r in outcomes:
        steps_by_coordinator.setdefault((r["workflow_id"], r["coordinator"]), []).append({
            "target": r["target"], "step": r["forward"], "compensated_by": r["compensation"],
            "failed_after_step": r["compensated"] + r["uncompensated"], "compensated": r["compensated"],
            "uncompensated": r["uncompensated"],
            "uncompensated_trace_ids": list(r["uncompensated_trace_ids"] or [])})
    for r in never_undone:
        steps_by_coordinator.setdefault((r["workflow_id"], r["coordinator"]), []).append({
            "target": r["target"], "step": r["forward"], "compensated_by": None,
            "failed_after_step": r["uncompensated"], "compensated": 0, "uncompensated": r["uncompensated"],
            "other_step_undone": r["other_step_undone"], "failed_target": r["failed_target"],
            "uncompensated_trace_ids": list(r["uncompensated_trace_ids"] or [])})

    findings = _choreography_findings(con, entries)
    for (wf, coord), steps in sorted(steps_by_coordinator.items()):
        steps.sort(key=lambda s: -s["uncompensated"])
        top = steps[0]
        # how surely the saga means to undo the top step: it undid it in the other failed instances,
        # or (never undone) it undid another step in those same instances
        backing = top["other_step_undone"] if top["compensated_by"] is None else top["compensated"]
        consistency = backing / top["failed_after_step"]
        name = entries.get(wf, {}).get("name", wf)
        undone_elsewhere = "; ".join(
            f"{s['target']} {s['step']} was not undone ({s['compensated_by']}) in {s['uncompensated']} of "
            f"{s['failed_after_step']} failed instances" for s in steps if s["compensated_by"])
        never = "; ".join(
            f"{s['target']} {s['step']} is never undone, in {s['uncompensated']} failed instances where it had "
            f"completed before a failure (most often of {s['failed_target']}; another step was undone in "
            f"{s['other_step_undone']} of them)" for s in steps if not s["compensated_by"])
        gaps = "; ".join(part for part in (undone_elsewhere and f"{undone_elsewhere}, although it does so in the "
                                                                "others", never) if part)
        findings.append(Finding(
            kind="missing_compensation", services=[coord], workflow=wf,
            confidence=0.55 + 0.4 * consistency, severity="critical",
            summary=f"In the '{name}' saga, {coord} compensates inconsistently after failures: {gaps}.",
            recommendation=(
                f"Make compensation part of the saga definition, not of each error path: record every"
                f" completed step in {coord}'s saga state and undo all of them, newest first, on every"
                f" failure (an orchestrator owns this; in a choreography each service must react to the"
                f" failure event). Add a test that fails each step in turn."
            ),
            evidence={"steps": steps, "failed_instances": failed.get((wf, coord), 0)},
            trace_ids=top["uncompensated_trace_ids"],
        ))
    return findings
