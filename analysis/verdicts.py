"""A verdict per workflow: the signs that a team should reconsider its pattern, with their evidence.

Built from what the stages already computed — the findings, `workflows`, `workflow_patterns`,
`event_relays`, `deliveries` and `critical_path_steps` — never from spans. Each sign names the
findings it rests on (their ids), so a reader can check every word. A verdict needs signs of two
different kinds (one alone is a local defect to fix where it is, not a pattern to reconsider),
except the god coordinator, which is itself the pattern's failure.

- fighting the choreography (the workflow hands off by events): an implicit ordering (an order that
  must be got right, held by timing alone) together with any of: a retry loop (a consumer retrying
  until what it is not told about has happened), redeliveries of the ordered step's messages (the
  broker's timer doing the same), a table one service writes and the other reads to learn the state
  (a state machine kept in a shared table), a `wait` on the critical path (the order costs time).
  Several services doing this for one order is what choreography cannot express.
- fighting the orchestration: a god coordinator finding (the coordinator calls most of one
  callee's operations: every change of the callee's internals touches it), or a coordinator that
  calls at least COORDINATOR_CALLEES other services while its own version churns
  (VERSION_CHURN distinct versions in the traces: it is redeployed with its callees).
- event spaghetti: signs of two kinds among an event cycle finding, an implicit orchestrator
  finding (one service relays every hand-off: an orchestrator in disguise), at least RELAYS_P50
  event relays (an event in causing another out) in the median instance, and at least
  READ_SERVICES services on the typical critical path (how many services' code one must read to
  follow the workflow's time), in a workflow of at least SPAGHETTI_SERVICES services. The suggestion:
  extract the critical path into an orchestrated saga.
"""

from __future__ import annotations

import duckdb

from choreoscope.analysis.findings import load_findings

# Three relays: the order of the workflow is split over three handlers' code, none of which sees it.
RELAYS_P50 = 3
# Five services on the path that sets the workflow's time: more than a reader holds in mind at once
# (the notification fan-outs have one or two; a saga's coordinator is one place to read).
READ_SERVICES = 5
# A step on the typical critical path: on it in at least a quarter of the instances.
ON_PATH_SHARE = 0.25
# Spaghetti needs somewhere to spread: with two services the whole flow is two codebases, and a loop
# between them is its event_cycle finding, not a tangle.
SPAGHETTI_SERVICES = 3
# A coordinator of this many callees redeployed this many times in the traces changes with them.
COORDINATOR_CALLEES = 3
VERSION_CHURN = 3

CHOREOGRAPHY = "fighting the choreography"
ORCHESTRATION = "fighting the orchestration"
SPAGHETTI = "event spaghetti"


def _sign(kind: str, text: str, findings=(), **evidence) -> dict:
    return {"sign": kind, "text": text, "finding_ids": [f.key for f in findings], "evidence": evidence}


def build_verdicts(con: duckdb.DuckDBPyConnection) -> dict[str, list[dict]]:
    """workflow id -> its verdicts: [{"verdict", "summary", "recommendation", "signs": [...]}]."""
    q = lambda sql, params=None: con.execute(sql, params or []).fetchall()
    services = {wf: set(s) for wf, s in q(
        "SELECT workflow_id, list(DISTINCT service) FROM workflow_steps WHERE NOT virtual GROUP BY ALL")}
    meta = {r[0]: r[1:] for r in q(
        "SELECT workflow_id, events, pattern FROM workflows JOIN workflow_patterns USING (workflow_id)")}
    relays = dict(q("SELECT workflow_id, quantile_cont(n, 0.5) FROM (SELECT workflow_id, instance_id, count(*) n "
                    "FROM event_relays GROUP BY ALL) GROUP BY ALL"))
    path_services = {wf: list(s) for wf, s in q(
        "SELECT workflow_id, list(DISTINCT service ORDER BY service) FROM critical_path_steps "
        "WHERE share >= ? GROUP BY ALL", [ON_PATH_SHARE])}
    waits = {}
    for wf, step, waits_on, share, p50 in q(
        "SELECT workflow_id, step_id, waits_on, share, p50_ms FROM critical_path_steps WHERE kind = 'wait'"
    ):
        waits.setdefault(wf, []).append((step, waits_on, share, p50))
    redeliveries = {}
    for wf, step, n, messages in q(
        "SELECT workflow_id, step_id, count(*) FILTER (WHERE is_redelivery), count(DISTINCT message_key) "
        "FROM deliveries GROUP BY ALL"
    ):
        redeliveries[(wf, step)] = (int(n), int(messages))
    versions = dict(q("SELECT service_name, count(DISTINCT service_version) FROM spans "
                      "WHERE service_version IS NOT NULL GROUP BY ALL"))
    callees = {}
    for wf, src, n in q(
        "SELECT workflow_id, src_service, count(DISTINCT dst_service) FROM workflow_edges "
        "WHERE via = 'call' AND src_service <> dst_service GROUP BY ALL"
    ):
        callees[(wf, src)] = int(n)
    by_wf: dict[str, list] = {}
    for f in load_findings(con):
        for wf, svcs in services.items():
            if f.workflow == wf or (f.workflow is None and set(f.services) <= svcs):
                by_wf.setdefault(wf, []).append(f)

    out: dict[str, list[dict]] = {}
    for wf, (events, pattern) in meta.items():
        by_kind: dict[str, list] = {}
        for f in by_wf.get(wf, []):
            by_kind.setdefault(f.kind, []).append(f)
        verdicts = []
        # fighting the choreography
        orderings = by_kind.get("implicit_ordering", [])
        if events and orderings:
            signs = [_sign("implicit ordering",
                           f"{' before '.join(f.services)} only by timing" + (f" on {f.event}" if f.event else ""),
                           [f]) for f in orderings]
            ordered_services = {s for f in orderings for s in f.services}
            ordered_steps = {p[1] for f in orderings for p in f.evidence.get("step_pairs", [])}
            props = []
            props += [_sign("retries", f"{', '.join(f.services)} retries until it gets through", [f])
                      for f in by_kind.get("retry_loop", []) if set(f.services) & ordered_services]
            for step in sorted(ordered_steps):
                n, messages = redeliveries.get((wf, step), (0, 0))
                if n and not any(step == f.evidence.get("step") for f in by_kind.get("retry_loop", [])):
                    props.append(_sign("redeliveries", f"{step} was redelivered {n} time(s) over {messages} "
                                       "message(s)", step=step, redeliveries=n))
            props += [_sign("state in a shared table",
                            f"{f.services[0]} writes {f.resource} and {f.services[1]} reads it to learn the state",
                            [f]) for f in by_kind.get("shared_data_coupling", []) if set(f.services) <= ordered_services]
            props += [_sign("wait on the critical path",
                            f"{step} waits on {on} in {share:.0%} of the instances (p50 {p50:.1f} ms)",
                            orderings, step=step, waits_on=on, share=round(share, 3), p50_ms=round(p50, 3))
                      for step, on, share, p50 in waits.get(wf, [])]
            if props:
                verdicts.append({
                    "verdict": CHOREOGRAPHY,
                    "summary": (f"You are fighting the choreography: an order between "
                                f"{', '.join(sorted(ordered_services))} is held by timing, and "
                                + ", ".join(sorted({s['sign'] for s in props})) + " prop it up."),
                    "recommendation": ("Make the order explicit: have the first service publish the event the "
                                       "second needs (or orchestrate the two steps) instead of retrying, "
                                       "polling a table or waiting."),
                    "signs": signs + props,
                })
        # fighting the orchestration
        gods = by_kind.get("god_coordinator", [])
        signs = [_sign("god coordinator", f"{f.services[0]} reaches into {f.services[1]}'s internals "
                       f"({len(f.evidence.get('operations', []))} of its operations)", [f], coordinator=f.services[0])
                 for f in gods]
        for (w, coord), n in sorted(callees.items()):
            if w == wf and n >= COORDINATOR_CALLEES and versions.get(coord, 0) >= VERSION_CHURN:
                signs.append(_sign("version churn", f"{coord} calls {n} services and ran {versions[coord]} "
                                   "versions in these traces", coordinator=coord, callees=n,
                                   versions=versions[coord]))
        if gods or len(signs) >= 2:
            verdicts.append({
                "verdict": ORCHESTRATION,
                "summary": ("You are fighting the orchestration: every change to the callees' internals touches "
                            f"the coordinator ({', '.join(sorted({s['evidence']['coordinator'] for s in signs}))})."),
                "recommendation": ("Give the callee one coarse operation per step of the workflow and let the "
                                   "coordinator sequence steps, not the callee's data; or let the callee react "
                                   "to an event."),
                "signs": signs,
            })
        # event spaghetti
        signs = [_sign("event cycle", f"events loop through {', '.join(f.services)}", [f])
                 for f in by_kind.get("event_cycle", [])]
        signs += [_sign("hidden orchestrator", f"{f.services[0]} relays every hand-off", [f])
                  for f in by_kind.get("implicit_orchestrator", [])]
        if events and (relays.get(wf) or 0) >= RELAYS_P50:
            signs.append(_sign("dense events", f"{relays[wf]:g} event relays in the median instance",
                               relays_p50=relays[wf]))
        path = path_services.get(wf, [])
        if events and len(path) >= READ_SERVICES:
            signs.append(_sign("many services to read", f"{len(path)} services on the critical path",
                               services=path))
        if len({s["sign"] for s in signs}) >= 2 and len(services.get(wf, ())) >= SPAGHETTI_SERVICES:
            verdicts.append({
                "verdict": SPAGHETTI,
                "summary": ("Event spaghetti: " + "; ".join(s["text"] for s in signs) + "."),
                "recommendation": ("Extract the critical path (" + ", ".join(path) + ") into an orchestrated "
                                   "saga: one coordinator that sends the commands and handles the results, "
                                   "with events left for the side effects."),
                "signs": signs,
            })
        if verdicts:
            out[wf] = verdicts
    return out
