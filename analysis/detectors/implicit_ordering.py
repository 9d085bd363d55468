"""implicit_ordering: a step that silently depends on another finishing first, with no causal path.

Detects: pairs of handler steps (A, B) of one workflow, with no causal path between them, where B
needs A to be done — judged consequence first. Each row of `step_orderings` is the happens-before
hypothesis "A before B" (The Mystery Machine, Chow et al., OSDI 2014); the order is judged on the
table A writes and B reads where there is one (B's first read against A's write), else on the
handler spans (B's first start against A's end) — see analysis/orderings.py.

Reported when (the consequence path):
- the order broke in at least MIN_BROKEN = 3 instances — no share: a race a few percent of
  instances lose is the common case in production (8 of 200, 12 of 60), and two lost races can
  still be a coincidental retry of a flaky consumer;
- when it broke, B suffered in at least MIN_HARMED_SHARE = 0.5 of them: it erred, was retried or
  redelivered, or re-read the table after A's write. Half, not all: the handler-span basis counts
  as broken a B that started early but reached the point it needs A only after A was done;
- B suffered at least MIN_RISK_RATIO = 4 times as often when the order broke as when it held (the
  baseline): a B that fails for its own reasons fails as often either way. With no instance where
  the order held there is no baseline and the next condition alone speaks;
- B's final attempt came after A in at least MIN_SUPPORT = 0.9 of the instances: B got through
  only once A was done (10% left for a lost span or a clock the skew correction missed);
- broken and unharmed (contradicting) in at most MAX_CONTRADICTING = 0.1 of the instances.

Reported with less confidence (at most TIMING_CONFIDENCE = 0.75) when too few races were lost to
judge a consequence (fewer than MIN_BROKEN, or none harmful within MAX_CONTRADICTING) — the timing
path: B's final start follows A's end in MIN_SUPPORT of the instances, *moves with it*
(correlation >= MIN_CORR = 0.7 and regression slope in SLOPE_RANGE = 0.6..1.4 of B's start on A's
end, one for one), both measured from their common cause's start so that the variation both
inherit from above does not count as following, with A's end spread over at least
MIN_SPREAD_MS = 2 ms (below that "follows" cannot be judged), and B harmed in at most
MAX_CONTRADICTING of the instances where it came after A (else its trouble has nothing to do
with A).

Refuted (never reported) without a consequence:
- latency, not dependency: B sits more hops (handler steps entered) below the common cause of both
  than A does — B's own chain is longer, so B is always after A with or without A (a consumer three
  events downstream of a fan-out always starts after a sibling that handles the fan-out directly);
- the order held only by a large constant offset (a poll, a batch delay): B does not follow A's end;
- B suffered when the order broke, but not MIN_HARMED_SHARE of the time or not MIN_RISK_RATIO times
  as often as when it held: its trouble is not the order's doing;
- B often went first and was fine (contradicting), or A and B are one service's handlers (its own
  business), or the ordering is inherited through a causal path from another reported one
  (A before C, C causes B).
Pairs ordered by a common synchronous ancestor (A called synchronously by C, B caused later by C)
are explicit and not in the table (analysis/orderings.py). Findings are aggregated per service
pair, the strongest step pair leading.

Evidence: instances seen together, supporting (final attempt after A), contradicting, broken (the
order broke), harmed when broken and what happened (errors, retries/redeliveries, re-reads), harmed
when ordered (baseline), the basis (shared table or handler spans), the shared table and reads
before the write, the common cause and each step's hops below it, gap quantiles, follow correlation
and slope, example traces of broken instances first.
"""

from __future__ import annotations

import networkx as nx

from choreoscope.analysis.detectors import shared_data_coupling
from choreoscope.analysis.detectors.query_helpers import ratio, rows
from choreoscope.analysis.findings import Finding
from choreoscope.analysis.orderings import step_graphs

MIN_INSTANCES = 5          # fewer instances together cannot tell an order from a coincidence
MIN_BROKEN = 3             # lost races needed by the consequence path (a count, not a share)
MIN_HARMED_SHARE = 0.5     # ... in at least half of which B suffered
MIN_RISK_RATIO = 4.0       # ... four times as often as when the order held
MIN_SUPPORT = 0.9          # share of instances where B's final attempt came after A
MAX_CONTRADICTING = 0.1    # share where B went first and did fine anyway
MIN_CORR = 0.7             # timing path: B's start follows A's end ...
SLOPE_RANGE = (0.6, 1.4)   # ... one for one
MIN_SPREAD_MS = 2.0        # below this A ends at a constant time: "follows" cannot be judged
TIMING_CONFIDENCE = 0.75   # the ceiling of a claim no consequence backs


def judge(r: dict) -> dict:
    """The decision on one `step_orderings` row: {verdict: reported/refuted, reason, confidence,
    support, contradicting, harmed_share, baseline, tightness}."""
    n = r["both_instances"]
    out = {"verdict": "refuted", "reason": "", "confidence": 0.0}
    if n < MIN_INSTANCES:
        return out | {"reason": f"seen together in {n} instances (< {MIN_INSTANCES})"}
    broken, harmed = r["broken_instances"], r["broken_harmed"]
    ordered = n - broken - r["uncertain_instances"]
    support = ratio(r["final_ordered"], n)
    contradicting = broken - harmed
    harmed_share = ratio(harmed, broken)
    baseline = ratio(r["ordered_harmed"], ordered)
    out |= {"support": round(support, 3), "contradicting": contradicting,
            "harmed_share": round(harmed_share, 3), "baseline": round(baseline, 3), "tightness": None}
    if support < MIN_SUPPORT:
        return out | {"reason": f"B's final attempt came after A in {r['final_ordered']} of {n} instances"}
    if ratio(contradicting, n) > MAX_CONTRADICTING:
        return out | {"reason": f"B went first and was fine in {contradicting} of {n} instances"}
    if broken >= MIN_BROKEN and harmed:   # enough lost races: the consequence decides
        if harmed_share >= MIN_HARMED_SHARE and (ordered <= 0 or harmed_share >= MIN_RISK_RATIO * baseline):
            on_table = bool(r["data_instances"]) and r["data_instances"] >= n / 2
            confidence = support * (0.7 + 0.2 * harmed_share + (0.1 if on_table else 0.0)) * (1.0 - baseline)
            return out | {"verdict": "reported", "reason": "consequence", "confidence": min(confidence, 0.99)}
        return out | {"reason": f"B suffered in {harmed} of {broken} instances where the order broke and in "
                                f"{r['ordered_harmed']} of {ordered} where it held: not the order's doing"}
    hops_a, hops_b = r["hops_a"], r["hops_b"]
    if hops_a is not None and hops_b is not None and hops_b > hops_a:
        return out | {"reason": f"latency: B is {hops_b} hops below {r['common_cause']}, A {hops_a}"}
    if ratio(r["ordered_harmed"], n) > MAX_CONTRADICTING:
        return out | {"reason": "B suffers as often when it comes after A"}
    corr, slope = r["cause_follow_corr"], r["cause_follow_slope"]
    spread = r["cause_a_end_stddev_ms"] or 0.0
    if spread < MIN_SPREAD_MS:
        return out | {"reason": "A ends at a constant time: whether B follows it cannot be judged"}
    follows = (corr is not None and slope is not None   # NaN compares False: not following
               and corr >= MIN_CORR and SLOPE_RANGE[0] <= slope <= SLOPE_RANGE[1])
    if not follows:
        return out | {"reason": "B's start does not move with A's end"}
    gap = r["gap_p50_ms"] or 0.0
    tight = 1.0 / (1.0 + gap / max(spread, 1.0))     # gap small against A's own variation
    follow = corr * max(0.0, 1.0 - abs(1.0 - slope))
    confidence = min(TIMING_CONFIDENCE, support * follow * (0.8 + 0.2 * tight))
    return out | {"verdict": "reported", "reason": "timing", "confidence": confidence, "tightness": round(tight, 3)}


def detect(con) -> list[Finding]:
    graphs = step_graphs(con)
    candidates: dict[tuple[str, str, str], tuple[dict, float, dict]] = {}
    # judge's first tests, in SQL: a wide fan-out has millions of step pairs, few of them seen often.
    for r in rows(con, "SELECT * FROM step_orderings WHERE both_instances >= ? AND final_ordered >= ? * both_instances - 1e-9 "
                       "ORDER BY workflow_id, step_a, step_b", [MIN_INSTANCES, MIN_SUPPORT]):
        if r["service_a"] == r["service_b"]:
            continue  # a service ordering its own handlers is its own business
        judgement = judge(r)
        if judgement["verdict"] == "reported":
            candidates[(r["workflow_id"], r["step_a"], r["step_b"])] = (r, judgement["confidence"], judgement)

    # Drop orderings inherited through a causal path from another implicit ordering.
    kept = {}
    for (wf, a, b), value in candidates.items():
        g = graphs.get(wf, nx.DiGraph())
        inherited = any(
            wf2 == wf and a2 == a and c != b and c in g and b in g and nx.has_path(g, c, b)
            for (wf2, a2, c) in candidates
        ) or any(
            wf2 == wf and b2 == b and c != a and c in g and a in g and nx.has_path(g, a, c)
            for (wf2, c, b2) in candidates
        )
        if not inherited:
            kept[(wf, a, b)] = value

    shared = {}
    for s in shared_data_coupling.shared_resources(con):
        shared.setdefault((s["writer"], s["reader"]), []).append(s["resource"])

    by_pair: dict[tuple[str, str], list] = {}
    for value in kept.values():
        by_pair.setdefault((value[0]["service_a"], value[0]["service_b"]), []).append(value)
    return [_finding(earlier, later, group, shared) for (earlier, later), group in sorted(by_pair.items())]


def _event(r: dict) -> str | None:
    """The event both react to: the destination both consume, else the message their common cause
    published when each consumes it directly (one message fanned out to queues the spans name
    differently: an exchange on one side and a routing key on the other, SNS topic and SQS queues)."""
    if r["event_a"] and r["event_a"] == r["event_b"]:
        return r["event_a"]
    if r["cause_event"] and r["event_a"] and r["event_b"] and r["hops_a"] == r["hops_b"] == 1:
        return r["cause_event"]
    return None


def _finding(earlier: str, later: str, group: list, shared: dict) -> Finding:
    group.sort(key=lambda v: -v[1])
    r, confidence, judgement = group[0]
    n, broken, harmed = r["both_instances"], r["broken_instances"], r["broken_harmed"]
    event = _event(r)
    tables = list(r["shared_tables"] or [])
    resources = sorted(set(tables) | set(shared.get((earlier, later), [])))
    on_table = bool(tables) and r["data_instances"] >= n / 2
    reacting = f" Both react to {event}." if event else ""
    what = [f"{k} {r[c]}" for k, c in (("erred", "broken_errors"), ("was retried or redelivered", "broken_retries"),
                                        ("read the table again", "broken_rereads")) if r[c]]
    if broken and judgement["reason"] == "consequence":
        point = (f"read {', '.join(tables)} before {earlier}'s write had ended" if on_table
                 else f"started before {earlier} had finished")
        broke = (f" In {broken} of {n} instances {later} {point}, and in {harmed} of them it paid for it"
                 f" ({', '.join(what)}) until an attempt after {earlier} got through;"
                 f" when the order held it suffered in {r['ordered_harmed']} of"
                 f" {n - broken - r['uncertain_instances']}.")
    elif broken:
        broke = f" In {broken} of {n} instances {later} went first without visible harm."
    else:
        broke = (f" The order never broke; {later}'s start follows {earlier}'s end from their common cause"
                 f" {r['common_cause']}, so this rests on timing alone.")
    because = (f" They share the table {', '.join(resources)}: {earlier} writes it, {later} reads it."
               if resources else "")
    gap = f", median gap {r['gap_p50_ms']:.0f} ms" if r["gap_p50_ms"] is not None else ""
    summary = (f"{later} only succeeds after {earlier} has finished ({r['final_ordered']} of {n} instances"
               f"{gap}), but nothing in the workflow makes it wait.{reacting}{broke}{because}")
    recommendation = (
        f"Make the dependency explicit: either let {earlier} announce completion with its own "
        f"event and have {later} react to that (choreography: the knowledge stays with the services),"
        f" or have one orchestrator call {earlier} then {later} (orchestration: the order lives in"
        f" one place). Until then {later} depends on timing and retries"
        + (f", and on the shape of {', '.join(resources)}" if resources else "") + "."
    )
    evidence = {
        "instances": n, "supporting": r["final_ordered"], "contradicting": judgement["contradicting"],
        "decided_by": judgement["reason"], "basis": "shared table" if on_table else "handler spans",
        "broken": broken, "harmed_when_broken": harmed,
        "when_broken": {"errors": r["broken_errors"], "retries": r["broken_retries"],
                        "rereads": r["broken_rereads"]},
        "harmed_when_ordered": r["ordered_harmed"], "reads_before_write": r["reads_before_write"],
        "read_before_commit": r["uncertain_instances"],
        "started_early": r["b_started_early"], "early_errors": r["b_early_errors"],
        "early_retries": r["b_early_retries"], "errors_when_ordered": r["b_errors_when_ordered"],
        "common_cause": r["common_cause"], "hops_from_common_cause": [r["hops_a"], r["hops_b"]],
        "gap_p50_ms": r["gap_p50_ms"], "gap_p90_ms": r["gap_p90_ms"],
        "follow_corr": r["follow_corr"], "follow_slope": r["follow_slope"],
        "tightness": judgement["tightness"], "workflow": r["workflow_id"],
        "step_pairs": list(map(list, dict.fromkeys((v[0]["step_a"], v[0]["step_b"]) for v in group))),
        "shared_resources": resources,
    }
    trace_ids = list(dict.fromkeys(list(r["broken_example_trace_ids"] or []) + list(r["example_trace_ids"] or [])))
    return Finding(
        kind="implicit_ordering", services=[earlier, later], event=event, workflow=r["workflow_id"],
        confidence=confidence, severity="critical" if r["broken_errors"] else "warning",
        summary=summary, recommendation=recommendation, evidence=evidence, trace_ids=trace_ids[:5],
    )
