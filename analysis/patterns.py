"""Stage: pattern, is a workflow orchestrated, choreographed, or a hybrid?

Answered by the three questions of the orchestration/choreography trade-off, over the hand-offs
between services (distinct service -> service edges of the workflow, uninstrumented peers left out):
- who knows the whole workflow: a service that calls two or more other services directly is an
  orchestrator; hand-offs by events spread that knowledge over the producers;
- where state lives: which services write to databases during the workflow;
- where errors are handled: who issues compensating calls (cancel/release/refund/delete/undo)
  after a failure, and who retries.
Rule: no event hand-off -> orchestration; events but no orchestrator -> choreography; both ->
hybrid. Reads `workflows`, `workflow_edges`, `span_steps`, `data_access`; writes `workflow_patterns`.
"""

from __future__ import annotations

import re

import duckdb
import pyarrow as pa

COMPENSATION_WORDS = re.compile(r"cancel|release|refund|compensat|undo|revert|rollback|void|^delete ", re.IGNORECASE)


def classify(handoffs: list[tuple[str, str, str]]) -> tuple[str, list[str]]:
    """(pattern, orchestrators) from distinct (source service, target service, via) hand-offs."""
    callees: dict[str, set[str]] = {}
    events = 0
    for src, dst, via in handoffs:
        if via == "call":
            callees.setdefault(src, set()).add(dst)
        else:
            events += 1
    orchestrators = sorted(s for s, c in callees.items() if len(c) >= 2)
    if events == 0:
        return "orchestration", orchestrators
    if not orchestrators:
        return "choreography", orchestrators
    return "hybrid", orchestrators


def classify_workflows(con: duckdb.DuckDBPyConnection) -> None:
    """Create `workflow_patterns`: one row per workflow type."""
    handoffs: dict[str, list] = {}
    for wf, src, dst, via in con.execute(
        """
        SELECT DISTINCT workflow_id, src_service, dst_service, via FROM workflow_edges
        WHERE src_service <> dst_service AND NOT ('unanswered' = ANY(evidence))
        """
    ).fetchall():
        handoffs.setdefault(wf, []).append((src, dst, via))
    writers = dict(
        con.execute(
            """
            SELECT workflow_id, list(DISTINCT service ORDER BY service) FROM data_access
            WHERE writes GROUP BY ALL
            """
        ).fetchall()
    )
    compensators: dict[str, list] = {}
    # Calls to other services only: a SQL DELETE is a write to the service's own data, not a
    # compensating call (an HTTP DELETE of another service's resource is).
    for wf, service, operation in con.execute(
        "SELECT DISTINCT workflow_id, service, operation FROM span_steps WHERE role = 'client' AND db_system IS NULL"
    ).fetchall():
        if COMPENSATION_WORDS.search(operation or ""):
            compensators.setdefault(wf, []).append(service)
    retriers = dict(
        con.execute(
            "SELECT workflow_id, list(DISTINCT service ORDER BY service) FROM span_steps "
            "WHERE coalesce(retry_attempt, 0) > 0 GROUP BY ALL"
        ).fetchall()
    )
    updates = []
    for (wf,) in con.execute("SELECT workflow_id FROM workflows").fetchall():
        pairs = handoffs.get(wf, [])
        pattern, orchestrators = classify(pairs)
        n_events = sum(1 for p in pairs if p[2] == "event")
        n_calls = len(pairs) - n_events
        producers = sorted({p[0] for p in pairs if p[2] == "event"})
        if orchestrators:
            who = (f"{', '.join(orchestrators)} call{'s' if len(orchestrators) == 1 else ''} "
                   f"{n_calls} service(s) directly; {n_events} hand-off(s) by events"
                   + (f" from {', '.join(producers)}" if producers else ""))
        elif n_events:
            who = (f"nobody: {n_events} hand-off(s) by events from {len(producers)} service(s) "
                   f"({', '.join(producers)}); {n_calls} direct call(s)")
        else:
            who = f"{n_calls} direct call(s)" if n_calls else "a single service"
        w = writers.get(wf) or []
        state = (f"databases written by {', '.join(w)}" if w else "no database writes seen")
        if orchestrators and set(w) & set(orchestrators):
            state += " (including the orchestrator)"
        comp = sorted(set(compensators.get(wf, [])))
        retry = retriers.get(wf) or []
        errors = []
        if comp:
            errors.append(f"compensating calls issued by {', '.join(comp)}")
        if retry:
            errors.append(f"retries in {', '.join(retry)}")
        updates.append((pattern, who, state, "; ".join(errors) or "no compensation or retry seen", wf))
    columns = ["pattern", "who_knows_the_workflow", "where_state_lives", "where_errors_are_handled", "workflow_id"]
    con.execute(
        "CREATE OR REPLACE TABLE workflow_patterns (workflow_id VARCHAR, pattern VARCHAR, "
        "who_knows_the_workflow VARCHAR, where_state_lives VARCHAR, where_errors_are_handled VARCHAR)"
    )
    if updates:  # one row per workflow type, but there can be thousands: Arrow, not executemany
        table = pa.table({c: pa.array([u[i] for u in updates], type=pa.string()) for i, c in enumerate(columns)})
        con.register("_pattern_rows", table)
        try:
            con.execute(f"INSERT INTO workflow_patterns SELECT workflow_id, {', '.join(columns[:-1])} "
                        "FROM _pattern_rows")
        finally:
            con.unregister("_pattern_rows")
