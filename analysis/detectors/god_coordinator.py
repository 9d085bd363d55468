"""god_coordinator: an orchestrator that drives many distinct internal operations of one callee.

Detects: a coordinating service (it drives a workflow's steps by calling other services) that,
within one workflow, calls many different operations of the same callee (reads of several
resources, writes, compensations): the coordinator knows the callee's internals and the two
must change together. That holds when it calls no other service too: a renewal process that runs
seven operations of the policy service one after the other is the policy service's logic, kept
outside it.

Assumption: distinct operations are the callee's server steps (templated routes or RPC
methods; the client's operation for uninstrumented peers). Five or more distinct operations of
one callee from one coordinator is a smell (MIN_OPERATIONS): four is what one resource's create,
read, update and delete take, a contract an orchestrator may rightly hold; a fifth reaches past one
resource into how the callee works. The confidence grows with the number.

Evidence: the operations, calls in total and per instance, the share of the callee's operations
seen that this coordinator drives, the coordinator's other callees.
"""

from __future__ import annotations

from choreoscope.analysis.detectors.query_helpers import ratio, rows
from choreoscope.analysis.findings import Finding

MIN_OPERATIONS = 5

SQL = """
WITH calls AS (
    SELECT e.workflow_id, e.src_service AS caller, e.dst_service AS callee, e.count, e.instances,
           coalesce(st.operation, regexp_extract(e.dst_step, ' virtual (.*)$', 1)) AS operation
    FROM workflow_edges e
    LEFT JOIN workflow_steps st ON st.workflow_id = e.workflow_id AND st.step_id = e.dst_step
    WHERE e.via = 'call' AND e.src_service <> e.dst_service AND e.dst_service <> 'unknown peer'
),
callee_ops AS (SELECT callee, count(DISTINCT operation) AS ops_seen FROM calls GROUP BY callee),
callers AS (SELECT workflow_id, caller, list(DISTINCT callee ORDER BY callee) AS callees
            FROM calls GROUP BY ALL)
SELECT c.workflow_id, c.caller, c.callee, list(DISTINCT c.operation ORDER BY c.operation) AS operations,
       sum(c.count) AS calls, any_value(w.instances) AS instances, any_value(co.ops_seen) AS ops_seen,
       any_value(cl.callees) AS callees
FROM calls c
JOIN workflows w USING (workflow_id)
JOIN callee_ops co ON co.callee = c.callee
JOIN callers cl ON cl.workflow_id = c.workflow_id AND cl.caller = c.caller
GROUP BY c.workflow_id, c.caller, c.callee
HAVING count(DISTINCT c.operation) >= ?
ORDER BY c.caller, c.callee, c.workflow_id
"""


def _examples(con, workflow_id: str, callee: str) -> list[str]:
    return rows(con, "SELECT list(DISTINCT trace_id ORDER BY trace_id)[1:5] AS t FROM span_steps "
                     "WHERE workflow_id = ? AND service = ?", [workflow_id, callee])[0]["t"] or []


def detect(con) -> list[Finding]:
    findings: dict[tuple[str, str], Finding] = {}
    for r in rows(con, SQL, [MIN_OPERATIONS]):
        others = [s for s in r["callees"] if s != r["callee"]]
        ops = list(r["operations"])
        n = len(ops)
        confidence = min(0.95, 0.45 + 0.07 * n)
        key = (r["caller"], r["callee"])
        if key in findings and findings[key].confidence >= confidence:
            continue
        per_instance = round(ratio(r["calls"], r["instances"]), 2)
        findings[key] = Finding(
            kind="god_coordinator", services=[r["caller"], r["callee"]], workflow=r["workflow_id"],
            confidence=confidence, severity="warning",
            summary=(f"{r['caller']} drives {n} distinct operations of {r['callee']} "
                     f"({per_instance} calls per instance): it knows {r['callee']}'s internals, so the two "
                     f"must change and be deployed together."),
            recommendation=(
                f"Move the knowledge to its owner: give {r['callee']} one coarse operation for what"
                f" {r['caller']} needs (e.g. a single 'assess and hold' command) and let it run its own"
                f" steps; the orchestrator should sequence services, not micro-manage one of them."
            ),
            evidence={"operations": ops, "calls": int(r["calls"]), "instances": r["instances"],
                      "calls_per_instance": per_instance, "callee_operations_seen": r["ops_seen"],
                      "share_of_callee_operations": round(ratio(n, r["ops_seen"]), 3),
                      "other_callees": others},
            trace_ids=_examples(con, r["workflow_id"], r["callee"]),
        )
    return list(findings.values())
