"""Conformance: the recovered workflows against the intended model (analysis/intended/).

Compares at the service level: producer -> consumer per event, caller -> callee for calls.
- undeclared_edge [producer|caller, consumer|callee]: observed, not declared for that workflow.
- missing_edge: declared, never observed.
- ordering_violation [earlier, later]: a declared ordering broken in some instances.
A recovered workflow is compared with the native workflow whose `entry` matches its entry step
(else the one sharing most edges/events); AsyncAPI declarations are global and apply everywhere.
A recovered workflow no native workflow matches is compared with every declaration.

What is compared (docs/intended-format.md, "How conformance is judged"):
- event edges always (edges to no consumer are dead events, a detector's business, not ours);
- calls between instrumented services only if the model declares any call at all;
- calls to uninstrumented peers (external hosts, evidence `unanswered`) only for callers that
  have declared calls; calls to an unnamed peer and database calls never (databases are resources).
Assumption: a declared ordering "A before B" means B's first handler span in an instance starts
after A's last handler span ended (clock-skew corrected times), as The Mystery Machine (Chow et
al., OSDI 2014) tests happens-before hypotheses against traces.

Reads the workflow tables, `span_edges`, `unanswered_spans`, `span_steps`, `instances`; writes
`conformance_workflows` and `conformance_edges` (only when intended documents are given),
`conformance_findings` and `declared_orderings` (the findings stage drops an implicit_ordering that
a declared ordering states: it is declared, not implicit).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import duckdb

from choreoscope.analysis.findings import Finding, store_findings
from choreoscope.analysis.intended import IntendedModel, IntendedWorkflow, load_intended

CONFORMANCE_KINDS = ("undeclared_edge", "missing_edge", "ordering_violation")
MAX_EXAMPLES = 5
CLOSE_CALL_NS = 25_000_000  # an order held by less than this may be a clock-skew artefact

INSTANCE_EDGES_SQL = """
CREATE OR REPLACE TEMP TABLE conformance_instance_edges AS
WITH joined AS (
    SELECT workflow_id, instance_id, src_trace_id AS trace_id, src_service AS src, dst_service AS dst, via,
           event, false AS external, evidence, confidence,
           CASE WHEN via = 'call' THEN dst_operation END AS operation
    FROM span_edges
    WHERE src_step <> dst_step AND (via = 'event' OR src_service <> dst_service)
),
unanswered AS (   -- calls to uninstrumented peers (not databases), as workflow_edges has them
    SELECT workflow_id, instance_id, trace_id, service AS src, peer AS dst, 'call' AS via,
           NULL AS event, true AS external, 'unanswered' AS evidence, 1.0::DOUBLE AS confidence, operation
    FROM unanswered_spans
    WHERE role = 'client' AND peer IS NOT NULL
)
SELECT * FROM joined WHERE event IS NOT NULL OR via = 'call'
UNION ALL SELECT * FROM unanswered
"""

WORKFLOW_EDGES_SQL = """
SELECT workflow_id, src, dst, via, event, bool_or(external), count(*), count(DISTINCT instance_id),
       list(DISTINCT evidence ORDER BY evidence), max(confidence),
       list_slice(list(DISTINCT trace_id ORDER BY trace_id), 1, ?)
FROM conformance_instance_edges WHERE workflow_id IS NOT NULL
GROUP BY ALL ORDER BY ALL
"""


@dataclass
class Observed:
    workflow_id: str
    src: str
    dst: str
    via: str
    event: str | None  # as observed
    external: bool
    count: int
    instances: int
    evidence: list[str]
    confidence: float
    trace_ids: list[str]
    canonical: tuple = ()  # (src, dst, via, declared event name or template)


@dataclass
class Recovered:
    workflow_id: str
    entry_service: str
    entry_operation: str
    instances: int
    services: set[str] = field(default_factory=set)
    events: set[str] = field(default_factory=set)
    edges: dict[tuple, Observed] = field(default_factory=dict)  # canonical key -> merged observation
    intended: IntendedWorkflow | None = None
    matched_by: str | None = None


def _template_regex(name: str) -> re.Pattern | None:
    if "{" not in name:
        return None
    parts = re.split(r"\{[^}]*\}", name)
    return re.compile("^" + "[^/.]+".join(re.escape(p) for p in parts) + "$")


class _EventNames:
    """Maps an observed destination to the declared name it satisfies (exact, else a `{param}` template)."""

    def __init__(self, declared: set[str]):
        self.declared = declared
        self.templates = [(n, rx) for n in sorted(declared) if (rx := _template_regex(n))]

    def canonical(self, event: str | None) -> str | None:
        if event is None or event in self.declared:
            return event
        return next((n for n, rx in self.templates if rx.match(event)), event)


def _declared_events(model: IntendedModel) -> set[str]:
    names = set(model.global_events)
    for wf in model.workflows:
        names |= wf.events
    return names


def build_instance_edges(con: duckdb.DuckDBPyConnection) -> None:
    """Temp table `conformance_instance_edges`: service-level edges per instance (also used by export)."""
    con.execute(INSTANCE_EDGES_SQL)


def _load_recovered(con: duckdb.DuckDBPyConnection, names: _EventNames) -> dict[str, Recovered]:
    recovered = {
        r[0]: Recovered(r[0], r[1], r[2], int(r[3]))
        for r in con.execute(
            "SELECT workflow_id, entry_service, entry_operation, instances FROM workflows "
            "ORDER BY instances DESC, workflow_id").fetchall()
    }
    for wf, svc, role, op in con.execute(
        "SELECT workflow_id, service, role, operation FROM workflow_steps WHERE NOT virtual"
    ).fetchall():
        if wf in recovered:
            recovered[wf].services.add(svc)
            if role in ("producer", "consumer"):
                recovered[wf].events.add(names.canonical(op))
    build_instance_edges(con)
    for r in con.execute(WORKFLOW_EDGES_SQL, [MAX_EXAMPLES]).fetchall():
        if r[0] not in recovered:
            continue
        ob = Observed(r[0], r[1], r[2], r[3], r[4], bool(r[5]), int(r[6]), int(r[7]), list(r[8]),
                      float(r[9] or 0), list(r[10]))
        ob.canonical = (ob.src, ob.dst, ob.via, names.canonical(ob.event))
        rec = recovered[r[0]]
        if ob.event:
            rec.events.add(ob.canonical[3])
        prev = rec.edges.get(ob.canonical)
        if prev is None:
            rec.edges[ob.canonical] = ob
        else:  # two destinations matching one template
            prev.count += ob.count
            prev.instances = max(prev.instances, ob.instances)
            prev.evidence = sorted(set(prev.evidence) | set(ob.evidence))
            prev.trace_ids = sorted(set(prev.trace_ids) | set(ob.trace_ids))[:MAX_EXAMPLES]
    return recovered


def _match(recovered: dict[str, Recovered], model: IntendedModel) -> None:
    """Entry first (service and, when given, operation); then the most shared edges/events."""
    by_entry = set()
    for rec in recovered.values():
        cands = [w for w in model.workflows if w.entry_service == rec.entry_service
                 and w.entry_operation in (None, rec.entry_operation)]
        cands.sort(key=lambda w: w.entry_operation is None)  # an exact operation wins
        if cands:
            rec.intended, rec.matched_by = cands[0], "entry"
            by_entry.add(cands[0].name)
    for rec in recovered.values():
        if rec.intended is not None:
            continue
        best, best_score = None, (0, 0, 0)
        for w in model.workflows:
            if w.name in by_entry:
                continue
            score = (len(set(w.edges) & set(rec.edges)), len(w.events & rec.events), len(w.services & rec.services))
            if score[0] + score[1] > 0 and score > best_score:
                best, best_score = w, score
        if best is not None:
            rec.intended, rec.matched_by = best, "overlap"


def _compared(ob: Observed, model: IntendedModel, declares_calls: bool, callers: set[str]) -> bool:
    if ob.via == "event":
        return True
    if ob.dst == "unknown peer":
        return False
    if ob.external:
        return ob.src in callers
    return declares_calls


def _severity_conf_undeclared(ob: Observed) -> float:
    return min(0.95, ob.confidence * (0.95 if ob.instances > 1 else 0.8))


def _missing_confidence(instances: int) -> float:
    """More instances of the workflow without the edge make its absence more certain."""
    return min(0.95, 0.5 + 0.05 * instances)


def _edge_text(src: str, dst: str, via: str, event: str | None) -> str:
    return f"{src} -> {dst} on `{event}`" if via == "event" else f"{src} -> {dst} (call)"


def run(con: duckdb.DuckDBPyConnection, paths: list[str] | IntendedModel) -> dict:
    """Compare the recovered workflows in `con` with the intended documents under `paths`.

    Returns counts {undeclared, missing, ordering_violations, orderings_holding}.
    Raises analysis.intended.IntendedError on an invalid document.
    """
    model = paths if isinstance(paths, IntendedModel) else load_intended(paths)
    names = _EventNames(_declared_events(model))
    recovered = _load_recovered(con, names)
    _match(recovered, model)
    declares_calls, callers = model.declares_calls, model.callers()
    all_declared = model.all_edges()
    owners = model.owners

    findings: list[Finding] = []
    edge_rows: list[tuple] = []
    bad_keys: list[tuple] = []  # (workflow_id, src, dst, via, observed event) of undeclared edges
    stats: dict[str | None, dict] = {}

    def row_stats(wf_id, intended_name):
        return stats.setdefault(wf_id, {"intended": intended_name, "matched": 0, "undeclared": 0,
                                        "missing": 0, "orderings": 0, "violated": 0})

    observed_anywhere = {k for rec in recovered.values() for k in rec.edges}

    # 1. observed edges: matched or undeclared
    for rec in recovered.values():
        declared = dict(model.global_edges)
        if rec.intended is not None:
            declared.update(rec.intended.edges)
        elif model.workflows:
            declared = all_declared
        st = row_stats(rec.workflow_id, rec.intended.name if rec.intended else None)
        for key, ob in sorted(rec.edges.items(), key=lambda kv: tuple(map(str, kv[0]))):
            base = (rec.workflow_id, rec.intended.name if rec.intended else None, ob.src, ob.dst, ob.via,
                    key[3], ob.count, ob.instances, ob.external, ob.trace_ids)
            if not _compared(ob, model, declares_calls, callers):
                edge_rows.append(base + ("unchecked", None))
                continue
            if key in declared:
                st["matched"] += 1
                where = (model.global_sources.get(key) if key in model.global_edges
                         else rec.intended.source if rec.intended else None)
                edge_rows.append(base + ("matched", where))
                continue
            st["undeclared"] += 1
            edge_rows.append(base + ("undeclared", None))
            bad_keys.append((rec.workflow_id, ob.src, ob.dst, ob.via, ob.event))
            elsewhere = sorted(w.name for w in model.workflows if key in w.edges)
            scope = (f"the intended workflow {rec.intended.name!r} does not declare it" if rec.intended
                     else "no intended document declares it")
            findings.append(Finding(
                kind="undeclared_edge", services=[ob.src, ob.dst], event=key[3] if ob.via == "event" else None,
                workflow=rec.workflow_id, confidence=_severity_conf_undeclared(ob), severity="warning",
                summary=(f"{_edge_text(ob.src, ob.dst, ob.via, key[3])} happens in {ob.instances} of "
                         f"{rec.instances} instances of {rec.workflow_id!r} but {scope}."),
                recommendation=("Declare it in the intended flow if it is meant to be there"
                                + (f" (owner: {owners[ob.dst]})" if ob.dst in owners else "")
                                + "; otherwise remove the dependency."),
                evidence={"count": ob.count, "instances": ob.instances, "workflow_instances": rec.instances,
                          "edge_evidence": ob.evidence, "external_peer": ob.external,
                          "intended_workflow": rec.intended.name if rec.intended else None,
                          "matched_by": rec.matched_by, "declared_in_other_workflows": elsewhere},
                trace_ids=ob.trace_ids,
            ))

    # 2. declared edges never observed: per native workflow, then the global (AsyncAPI) ones
    recs_by_intended: dict[str, list[Recovered]] = {}
    for rec in recovered.values():
        if rec.intended is not None:
            recs_by_intended.setdefault(rec.intended.name, []).append(rec)

    def add_missing(edge, wf_id, intended_name, source, confidence, context, workflow_instances):
        st = row_stats(wf_id, intended_name)
        st["missing"] += 1
        edge_rows.append((wf_id, intended_name, edge.src, edge.dst, edge.via, edge.event, 0, 0,
                          False, [], "missing", source))
        findings.append(Finding(
            kind="missing_edge", services=[edge.src, edge.dst], event=edge.event, workflow=wf_id,
            confidence=confidence, severity="warning",
            summary=f"{_edge_text(edge.src, edge.dst, edge.via, edge.event)} is declared but never observed {context}.",
            recommendation=(f"Check that {edge.dst} is deployed and " +
                            ("subscribed" if edge.via == "event" else "called") +
                            ", or remove the declaration" + (f" (owner: {owners[edge.dst]})" if edge.dst in owners else "") + "."),
            evidence={"declared_in": source, "workflow_instances": workflow_instances,
                      "intended_workflow": intended_name},
        ))

    for wf in model.workflows:
        recs = recs_by_intended.get(wf.name, [])
        seen = {k for r in recs for k in r.edges}
        primary = recs[0] if recs else None
        n = sum(r.instances for r in recs)
        for key, edge in sorted(wf.edges.items(), key=lambda kv: tuple(map(str, kv[0]))):
            if key in seen or (primary is None and key in observed_anywhere):
                continue
            if primary is None:
                add_missing(edge, None, wf.name, wf.source, 0.4,
                            f"(the intended workflow {wf.name!r} itself was not recognised in the traces)", 0)
            else:
                add_missing(edge, primary.workflow_id, wf.name, wf.source, _missing_confidence(n),
                            f"in {n} instances of {primary.workflow_id!r}", n)
    for key, edge in sorted(model.global_edges.items(), key=lambda kv: tuple(map(str, kv[0]))):
        if key in observed_anywhere:
            continue
        hosts = [r for r in recovered.values()
                 if (edge.via == "event" and edge.event in r.events) or (edge.via == "call" and edge.src in r.services)]
        host = hosts[0] if hosts else None
        n = host.instances if host else 0
        add_missing(edge, host.workflow_id if host else None, host.intended.name if host and host.intended else None,
                    model.global_sources.get(key), _missing_confidence(n) if host else 0.5,
                    f"in {n} instances of {host.workflow_id!r}" if host else "in any workflow", n)

    # 3. declared orderings
    con.execute("CREATE OR REPLACE TEMP TABLE conformance_bad_instances (instance_id VARCHAR)")
    if bad_keys:
        con.execute("CREATE OR REPLACE TEMP TABLE conformance_bad_edges (workflow_id VARCHAR, src VARCHAR, "
                    "dst VARCHAR, via VARCHAR, event VARCHAR)")
        con.executemany("INSERT INTO conformance_bad_edges VALUES (?,?,?,?,?)", bad_keys)  # tens of rows
        con.execute("""INSERT INTO conformance_bad_instances
            SELECT DISTINCT i.instance_id FROM conformance_instance_edges i JOIN conformance_bad_edges b
              ON i.workflow_id = b.workflow_id AND i.src = b.src AND i.dst = b.dst AND i.via = b.via
             AND i.event IS NOT DISTINCT FROM b.event""")
    held: list[tuple] = []
    for rec in recovered.values():
        if rec.intended is None:
            continue
        for o in rec.intended.orderings:
            result = _check_ordering(con, rec.workflow_id, o)
            if result is None:
                continue
            st = row_stats(rec.workflow_id, rec.intended.name)
            st["orderings"] += 1
            both, violated, examples, errors, close = result
            if not violated:
                held.append((o.before, o.after, o.event))
                continue
            st["violated"] += 1
            share = violated / both
            findings.append(Finding(
                kind="ordering_violation", services=[o.before, o.after], event=o.event, workflow=rec.workflow_id,
                confidence=0.9 if violated >= 3 else 0.6 + 0.1 * violated,
                severity="critical" if errors else "warning",
                summary=(f"{o.after} must start after {o.before} has finished"
                         + (f" (both react to `{o.event}`)" if o.event else "")
                         + f", but started earlier in {violated} of {both} instances."),
                recommendation=(f"Make the order explicit: have {o.after} react to an event {o.before} emits "
                                "when done, or have one coordinator call them in sequence."),
                evidence={"instances_both": both, "instances_violating": violated,
                          "instances_holding": both - violated, "share_violating": round(share, 3),
                          "violating_with_errors": errors, "holding_within_25ms": close,
                          "declared_in": o.source},
                trace_ids=examples,
            ))
    held_set = set(held)

    # 4. findings of its own, and the declared orderings (the findings stage drops implicit
    # orderings a team declared: they are declared, not implicit)
    store_findings(con, findings, table="conformance_findings")
    store_declared_orderings(con, [(o.before, o.after, o.event) for _, o in model.orderings()])
    _write_tables(con, recovered, stats, edge_rows)
    return {"undeclared": sum(f.kind == "undeclared_edge" for f in findings),
            "missing": sum(f.kind == "missing_edge" for f in findings),
            "ordering_violations": sum(f.kind == "ordering_violation" for f in findings),
            "orderings_holding": len(held_set)}


def run_stage(con: duckdb.DuckDBPyConnection, paths: list[str]) -> None:
    """The conformance stage: without intended documents no comparison was made, so the comparison
    tables of an earlier run are dropped (they would no longer be true) and no findings are added."""
    if paths:
        run(con, paths)
        return
    con.execute("DROP TABLE IF EXISTS conformance_edges")
    con.execute("DROP TABLE IF EXISTS conformance_workflows")
    store_findings(con, [], table="conformance_findings")
    store_declared_orderings(con, [])


def store_declared_orderings(con: duckdb.DuckDBPyConnection, orders: list[tuple[str, str, str | None]]) -> None:
    """`declared_orderings` (before, after, event): the orderings the intended documents state."""
    con.execute("CREATE OR REPLACE TABLE declared_orderings (before VARCHAR, after VARCHAR, event VARCHAR)")
    if orders:
        con.executemany("INSERT INTO declared_orderings VALUES (?, ?, ?)", orders)  # declared: tens


def _handler_filter(service: str, operation: str | None, event: str | None) -> tuple[str, list]:
    sql, params = "service = ?", [service]
    if operation:
        sql += " AND operation = ?"
        params.append(operation)
    elif event:
        sql += " AND role = 'consumer' AND messaging_destination = ?"
        params.append(event)
    else:
        sql += " AND role IN ('consumer', 'server')"
    return sql, params


def _check_ordering(con, workflow_id: str, o) -> tuple[int, int, list[str], int, int] | None:
    """(instances with both, instances where `after` started before `before` ended, examples,
    violating instances with errors, holding instances within CLOSE_CALL_NS: clock skew could hide
    a violation there)."""
    a_sql, a_params = _handler_filter(o.before, o.before_operation, o.event)
    b_sql, b_params = _handler_filter(o.after, o.after_operation, o.event)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE conformance_ordering AS
        WITH a AS (SELECT instance_id, max(end_adj) AS a_end FROM span_steps
                   WHERE workflow_id = ? AND {a_sql} GROUP BY instance_id),
             b AS (SELECT instance_id, min(start_adj) AS b_start, arg_min(trace_id, start_adj) AS trace_id,
                          bool_or(is_error) AS errors
                   FROM span_steps WHERE workflow_id = ? AND {b_sql} GROUP BY instance_id)
        SELECT a.instance_id, b.trace_id, b.errors, b.b_start < a.a_end AS violated,
               b.b_start - a.a_end < ? AS close_call
        FROM a JOIN b USING (instance_id)""", [workflow_id, *a_params, workflow_id, *b_params, CLOSE_CALL_NS])
    both, violated, errors, close = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE violated), count(*) FILTER (WHERE violated AND errors), "
        "count(*) FILTER (WHERE close_call AND NOT violated) FROM conformance_ordering").fetchall()[0]
    if not both:
        return None
    examples = [r[0] for r in con.execute(
        "SELECT DISTINCT trace_id FROM conformance_ordering WHERE violated ORDER BY trace_id LIMIT ?",
        [MAX_EXAMPLES]).fetchall()]
    con.execute("INSERT INTO conformance_bad_instances SELECT instance_id FROM conformance_ordering WHERE violated")
    return int(both), int(violated), examples, int(errors), int(close)


def _write_tables(con, recovered: dict[str, Recovered], stats: dict, edge_rows: list[tuple]) -> None:
    con.execute("""CREATE OR REPLACE TABLE conformance_edges (
        workflow_id VARCHAR, intended_workflow VARCHAR, src_service VARCHAR, dst_service VARCHAR,
        via VARCHAR, event VARCHAR, count BIGINT, instances BIGINT, external BOOLEAN,
        example_trace_ids VARCHAR[], status VARCHAR, declared_in VARCHAR)""")
    if edge_rows:
        con.executemany("INSERT INTO conformance_edges VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", edge_rows)  # per edge
    bad = dict(con.execute(
        "SELECT s.workflow_id, count(DISTINCT b.instance_id) FROM conformance_bad_instances b "
        "JOIN instances s USING (instance_id) GROUP BY ALL").fetchall())
    rows = []
    for wf_id, st in stats.items():
        rec = recovered.get(wf_id) if wf_id else None
        declared = st["matched"] + st["missing"]
        n = rec.instances if rec else 0
        conforming = n - int(bad.get(wf_id, 0)) if rec else 0
        rows.append((wf_id, st["intended"], rec.matched_by if rec else None, declared, st["matched"],
                     st["undeclared"], st["missing"], round(st["matched"] / declared, 3) if declared else None,
                     st["orderings"], st["violated"], n, conforming, round(conforming / n, 3) if n else None))
    for wf_id, rec in recovered.items():
        if wf_id not in stats:
            rows.append((wf_id, rec.intended.name if rec.intended else None, rec.matched_by, 0, 0, 0, 0, None,
                         0, 0, rec.instances, rec.instances, 1.0))
    con.execute("""CREATE OR REPLACE TABLE conformance_workflows (
        workflow_id VARCHAR, intended_workflow VARCHAR, matched_by VARCHAR, declared_edges BIGINT,
        matched_edges BIGINT, undeclared_edges BIGINT, missing_edges BIGINT, coverage DOUBLE,
        declared_orderings BIGINT, violated_orderings BIGINT, instances BIGINT,
        conforming_instances BIGINT, conforming_share DOUBLE)""")
    if rows:
        con.executemany("INSERT INTO conformance_workflows VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        sorted(rows, key=lambda r: (r[0] is None, -(r[10] or 0), str(r[0]), str(r[1]))))
