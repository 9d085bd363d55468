"""implicit_ordering: a step that silently depends on another finishing first, with no causal path.

Detects: pairs of handler steps (A, B) of one workflow, with no causal path between them, where
B's (final) start follows A's end in (almost) every instance, tightly, and *moves with it*: when A
ends later, B starts later (correlation and regression slope of B's start on A's end near 1). When
the order breaks (B's first attempt started before A ended), B erring or being retried is the
strongest sign of the dependency; B running fine before A ended refutes it.

Assumption: each row of `step_orderings` is the happens-before hypothesis "A before B", which
any instance with B unharmed before A's end refutes (The Mystery Machine, Chow et al., OSDI 2014).
A step that is always late for its own reasons (a poll, a batch delay) has a large constant
offset and does not follow A's end, so it is not reported. Pairs ordered by a common synchronous
ancestor (A called synchronously by C, B caused later by C) are explicit and not in the table
(analysis/orderings.py); an ordering merely inherited through a causal path from another implicit ordering (A before C,
C causes B). Findings are aggregated per service pair, the strongest step pair leading.

Evidence: instances seen together, supporting, contradicting, started early / erred / retried
when early, gap quantiles, follow correlation and slope, the step pairs, and the shared table
(from shared_data_coupling) that explains the dependency if there is one.
"""

from __future__ import annotations

import networkx as nx

from choreoscope.analysis.detectors import shared_data_coupling
from choreoscope.analysis.detectors.query_helpers import ratio, rows
from choreoscope.analysis.findings import Finding
from choreoscope.analysis.orderings import step_graphs

MIN_INSTANCES = 5
MIN_SUPPORT = 0.9          # share of instances where A ended before B's final start
MAX_CONTRADICTING = 0.1    # share where B started before A ended and did fine anyway
MIN_CORR = 0.7             # B's start follows A's end ...
SLOPE_RANGE = (0.6, 1.4)   # ... one for one
MIN_SPREAD_MS = 2.0        # below this A ends at a constant time: "follows" cannot be judged


def _score(r: dict) -> tuple[float, dict] | None:
    """(confidence, judgement) for one step pair, or None when the hypothesis does not hold."""
    n = r["both_instances"]
    if n < MIN_INSTANCES:
        return None
    support = ratio(r["a_before_b"], n)
    harmed_early = max(r["b_early_errors"], r["b_early_retries"])
    contradicting = max(0, r["b_started_early"] - harmed_early)
    if support < MIN_SUPPORT or ratio(contradicting, n) > MAX_CONTRADICTING:
        return None
    corr, slope, spread = r["follow_corr"], r["follow_slope"], r["a_end_stddev_ms"] or 0.0
    follows = (corr is not None and slope is not None   # NaN compares False: not following
               and corr >= MIN_CORR and SLOPE_RANGE[0] <= slope <= SLOPE_RANGE[1])
    broken_hurts = ratio(harmed_early, r["b_started_early"]) if r["b_started_early"] else 0.0
    if spread >= MIN_SPREAD_MS:
        if not follows:
            return None
        follow = corr * max(0.0, 1.0 - abs(1.0 - slope))
    elif broken_hurts >= 0.5:
        follow = 0.6   # A ends at a fixed time; only the harm when the order broke speaks
    else:
        return None
    gap = r["gap_p50_ms"] or 0.0
    tight = 1.0 / (1.0 + gap / max(spread, 1.0))     # gap small against A's own variation
    confidence = support * follow * (0.8 + 0.2 * tight)
    if r["b_started_early"]:
        confidence += 0.15 * broken_hurts
    judgement = {"support": round(support, 3), "contradicting": contradicting, "tightness": round(tight, 3)}
    return min(confidence, 0.99), judgement


def detect(con) -> list[Finding]:
    graphs = step_graphs(con)
    candidates: dict[tuple[str, str, str], tuple[dict, float, dict]] = {}
    # _score's first tests, in SQL: a wide fan-out has millions of step pairs, few of them seen often.
    for r in rows(con, "SELECT * FROM step_orderings WHERE both_instances >= ? AND a_before_b >= ? * both_instances - 1e-9 "
                       "ORDER BY workflow_id, step_a, step_b", [MIN_INSTANCES, MIN_SUPPORT]):
        if r["service_a"] == r["service_b"]:
            continue  # a service ordering its own handlers is its own business
        scored = _score(r)
        if scored:
            candidates[(r["workflow_id"], r["step_a"], r["step_b"])] = (r, *scored)

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
    findings = []
    for (earlier, later), group in sorted(by_pair.items()):
        group.sort(key=lambda v: -v[1])
        r, confidence, judgement = group[0]
        event = r["event_a"] if r["event_a"] and r["event_a"] == r["event_b"] else None
        resources = sorted(shared.get((earlier, later), []))
        reacting = f" Both react to {event}." if event else ""
        because = (f" They share the table {', '.join(resources)}: {earlier} writes it, {later} reads it."
                   if resources else "")
        harmed = max(r["b_early_errors"], r["b_early_retries"])
        broke = (f" In {r['b_started_early']} of {r['both_instances']} instances {later} started first"
                 f" and failed or was retried {harmed} times before succeeding." if r["b_started_early"] else "")
        summary = (f"{later} only succeeds after {earlier} has finished ({r['a_before_b']} of "
                   f"{r['both_instances']} instances, median gap {r['gap_p50_ms']:.0f} ms), but nothing "
                   f"in the workflow makes it wait.{reacting}{broke}{because}")
        recommendation = (
            f"Make the dependency explicit: either let {earlier} announce completion with its own "
            f"event and have {later} react to that (choreography: the knowledge stays with the services),"
            f" or have one orchestrator call {earlier} then {later} (orchestration: the order lives in"
            f" one place). Until then {later} depends on timing and retries"
            + (f", and on the shape of {', '.join(resources)}" if resources else "") + "."
        )
        evidence = {
            "instances": r["both_instances"], "supporting": r["a_before_b"],
            "contradicting": judgement["contradicting"], "started_early": r["b_started_early"],
            "early_errors": r["b_early_errors"], "early_retries": r["b_early_retries"],
            "errors_when_ordered": r["b_errors_when_ordered"],
            "gap_p50_ms": r["gap_p50_ms"], "gap_p90_ms": r["gap_p90_ms"],
            "follow_corr": r["follow_corr"], "follow_slope": r["follow_slope"],
            "tightness": judgement["tightness"], "workflow": r["workflow_id"],
            "step_pairs": [[v[0]["step_a"], v[0]["step_b"]] for v in group],
            "shared_resources": resources,
        }
        trace_ids = list(dict.fromkeys(list(r["broken_example_trace_ids"] or []) + list(r["example_trace_ids"] or [])))
        findings.append(Finding(
            kind="implicit_ordering", services=[earlier, later], event=event, workflow=r["workflow_id"],
            confidence=confidence, severity="critical" if r["b_early_errors"] else "warning",
            summary=summary, recommendation=recommendation, evidence=evidence, trace_ids=trace_ids[:5],
        ))
    return findings
