"""implicit_orchestrator: in an event-driven workflow, a service that has quietly become the conductor.

Detects: a service that consumes the results of several other services and, while handling
them, emits the events that start the next steps. Scored per workflow by the share of the
workflow's service-to-service event hand-offs that pass through the service (in or out; hand-offs
into observers, services that emit nothing in the workflow, are left out: a reporting sink that
consumes every event does not make the flow less centred on its conductor), the
distinct services upstream (whose events it consumes) and downstream (who consume what it emits),
and emits-per-consume (the share of its consumer steps that emit an event while handling).

Assumption: a relay is an event produced inside the handling of a consumed event (a producer
span under the consumer span, same service and trace). A join relays too: a service that waits for
several results and emits once the last one came relays from the last one's handler only, so the
consumer steps it had handled before emitting, in the same instance (in at least half of its
relaying instances: JOIN_SHARE), count as relaying with it. A sink with high fan-in relays nothing;
a service that calls others directly is an explicit orchestrator (the pattern stage names it),
not an implicit one; a worker that answers one command with one result has one service upstream.

Evidence: hand-offs through the service and in total, upstream and downstream services,
consumer steps and relaying consumer steps, relays per instance, example traces.
"""

from __future__ import annotations

from choreoscope.analysis.detectors.query_helpers import ratio, rows, workflow_entries
from choreoscope.analysis.findings import Finding

MIN_UPSTREAM = 2
MIN_DOWNSTREAM = 2
MIN_RELAY_SHARE = 0.5     # of its consumer steps, those that emit while handling
MIN_HANDOFF_SHARE = 0.5   # of the workflow's event hand-offs, those through the service
JOIN_SHARE = 0.5          # of a service's relaying instances, those where a step was handled before the emit

# Consumer steps a service had handled before it relayed, in the same instance: the inputs it
# joined (see the docstring), with the instances where they were, and the relaying instances.
JOIN_INPUTS_SQL = """
WITH relay_at AS (
    SELECT r.workflow_id, r.instance_id, r.service, min(p.start_adj) AS at
    FROM event_relays r
    JOIN span_steps p ON p.instance_id = r.instance_id AND p.service = r.service AND p.step_id = r.producer_step
    GROUP BY ALL
),
relaying AS (SELECT workflow_id, service, count(DISTINCT instance_id) AS n FROM relay_at GROUP BY ALL)
SELECT a.workflow_id, a.service, c.step_id AS consumer_step, count(DISTINCT a.instance_id) AS instances,
       any_value(r.n) AS relaying
FROM relay_at a
JOIN span_steps c ON c.instance_id = a.instance_id AND c.service = a.service AND c.role = 'consumer'
                 AND c.end_adj <= a.at
JOIN relaying r ON r.workflow_id = a.workflow_id AND r.service = a.service
GROUP BY a.workflow_id, a.service, c.step_id
"""


def detect(con) -> list[Finding]:
    entries = workflow_entries(con)
    handoffs: dict[str, list[dict]] = {}
    for r in rows(con, """
        SELECT workflow_id, src_step, dst_step, src_service, dst_service, event, instances
        FROM workflow_edges
        WHERE via = 'event' AND src_service <> dst_service AND NOT ('unanswered' = ANY(evidence))"""):
        handoffs.setdefault(r["workflow_id"], []).append(r)
    relays = rows(con, """
        SELECT workflow_id, service, consumer_step, list(DISTINCT event_out ORDER BY event_out) AS emits,
               count(*) AS relayed, count(DISTINCT instance_id) AS instances,
               list(DISTINCT trace_id ORDER BY trace_id)[1:5] AS trace_ids
        FROM event_relays GROUP BY ALL""")
    relaying: dict[tuple[str, str], dict[str, dict]] = {}
    for r in relays:
        relaying.setdefault((r["workflow_id"], r["service"]), {})[r["consumer_step"]] = r
    for r in rows(con, JOIN_INPUTS_SQL):  # a join's inputs relay with the step that emitted
        steps = relaying.setdefault((r["workflow_id"], r["service"]), {})
        if r["consumer_step"] not in steps and r["instances"] >= JOIN_SHARE * r["relaying"]:
            steps[r["consumer_step"]] = {"emits": [], "trace_ids": []}
    explicit = {(r["workflow_id"], r["service"]) for r in rows(con, """
        SELECT workflow_id, src_service AS service FROM workflow_edges
        WHERE via = 'call' AND src_service <> dst_service AND NOT ('unanswered' = ANY(evidence))
        GROUP BY ALL HAVING count(DISTINCT dst_service) >= 2""")}

    findings = []
    for wf, edges in sorted(handoffs.items()):
        emitters = {e["src_service"] for e in edges}
        info = entries.get(wf, {})
        if info.get("pattern") == "orchestration":
            continue
        for service in sorted({e["src_service"] for e in edges} | {e["dst_service"] for e in edges}):
            if (wf, service) in explicit:
                continue
            consumed = [e for e in edges if e["dst_service"] == service]
            consumer_steps = {e["dst_step"] for e in consumed}
            relay_steps = relaying.get((wf, service), {})
            relayed_in = [e for e in consumed if e["dst_step"] in relay_steps]
            emitted = [e for e in edges if e["src_service"] == service]
            upstream = sorted({e["src_service"] for e in relayed_in})
            downstream = sorted({e["dst_service"] for e in emitted})
            relay_share = ratio(len(set(relay_steps) & consumer_steps), len(consumer_steps))
            through = len(relayed_in) + len(emitted)
            # the share is of the flow's hand-offs: those into observers (services that emit
            # nothing in the workflow, e.g. a reporting sink consuming every event) carry no
            # step onward and are left out of both counts
            flow = [e for e in edges if e["dst_service"] in emitters]
            share = ratio(sum(1 for e in relayed_in + emitted if e["dst_service"] in emitters), len(flow))
            if (len(upstream) < MIN_UPSTREAM or len(downstream) < MIN_DOWNSTREAM
                    or relay_share < MIN_RELAY_SHARE or share < MIN_HANDOFF_SHARE):
                continue
            breadth = min(1.0, (len(upstream) + len(downstream)) / 6)
            confidence = 0.45 * share + 0.25 * relay_share + 0.25 * breadth
            examples = [t for r in relay_steps.values() for t in (r["trace_ids"] or [])]
            name = info.get("name", wf)
            summary = (f"{service} conducts the '{name}' workflow without saying so: {through} of its "
                       f"{len(edges)} event hand-offs pass through it; it consumes the results of "
                       f"{', '.join(upstream)} and emits the events that start "
                       f"{', '.join(downstream)}.")
            recommendation = (
                f"Decide which pattern this is. If {service} is meant to coordinate, make it an explicit"
                f" orchestrator (commands and replies it owns, the workflow state and error handling in one"
                f" place, visible in its API and docs). If not, move the decisions back into the services:"
                f" let each react to the previous service's event directly, so {service} stops being a"
                f" hidden single point of change and failure."
            )
            findings.append(Finding(
                kind="implicit_orchestrator", services=[service], workflow=wf, confidence=confidence,
                severity="warning", summary=summary, recommendation=recommendation,
                evidence={"handoffs_through": through, "handoffs_total": len(edges),
                          "handoff_share": round(share, 3), "upstream": upstream, "downstream": downstream,
                          "consumer_steps": len(consumer_steps), "relaying_consumer_steps":
                          len(set(relay_steps) & consumer_steps), "emits_per_consume": round(relay_share, 3),
                          "relays": {step: r["emits"] for step, r in sorted(relay_steps.items())},
                          "instances": info.get("instances")},
                trace_ids=sorted(set(examples))[:5],
            ))
    return findings
