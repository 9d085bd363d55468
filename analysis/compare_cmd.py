"""`choreoscope compare BEFORE AFTER`: what changed between two runs of a system.

Each side is a JSON report (`choreoscope analyze --format json`), trace dumps or a .duckdb store;
dumps and stores are analysed first, so the one comparison, `compare_reports`, always works on
two reports. `--split KEY=A..B` or `--split time=ISO` cuts one input into the two sides instead:
the input is analysed once, each workflow instance goes to a side as a whole (by the versions its
spans carry, or by when it started) and each side is analysed on its own.

Workflows are matched by their id (the entry step), steps by step id, edges by (source, target,
via, event), findings by their stable `id`. Exit 0; 1 only when --fail-on is given and a new
finding matches it (parsed as `check` does); 2 on bad input.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from choreoscope.analysis.analyze_cmd import analyze, write_output
from choreoscope.analysis.check_cmd import CheckInputError, gate, parse_fail_on
from choreoscope.analysis.open_inputs import InputError, open_inputs, warn_load_errors
from choreoscope.analysis.pipeline import AnalysisError, run_pipeline
from choreoscope.analysis.report import SCHEMA_VERSION, build_report, validate_report
from choreoscope.collector import store
from choreoscope.collector.store import StoreError

EXIT_OK, EXIT_NEW_FINDINGS, EXIT_BAD_INPUT = 0, 1, 2


class CompareInputError(ValueError):
    """The sides cannot be compared (wrong number of inputs, a bad --split, an invalid report)."""


@dataclass
class Side:
    report: dict
    description: str
    notes: list[str] = field(default_factory=list)


# --- the two sides -------------------------------------------------------------------------------


def _read_report(path: str, validate: bool = True) -> dict | None:
    """The report in `path` if it is one (a JSON object with schema_version, workflows and
    findings), None if it is something else (a trace dump in JSON, say). A report of another
    schema version, or one that does not follow the schema, is an error (with `validate`)."""
    if not path.lower().endswith(".json") or not Path(path).is_file():
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # not a report: let the dump loaders say what is wrong with it
    if not (isinstance(doc, dict) and "schema_version" in doc and "workflows" in doc and "findings" in doc):
        return None
    if not validate:
        return doc
    if doc["schema_version"] != SCHEMA_VERSION:
        raise CompareInputError(f"{path}: report schema_version {doc['schema_version']!r}; this choreoscope "
                                f"compares version {SCHEMA_VERSION}")
    import jsonschema

    try:
        validate_report(doc)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top)"
        raise CompareInputError(f"{path}: not a valid choreoscope report at {where}: {exc.message}") from exc
    return doc


def load_side(path: str, db: str) -> Side:
    """A report as it is; dumps or a store analysed into one."""
    report = _read_report(path)
    if report is not None:
        return Side(report, path)
    return Side(analyze([path], db), path)


SPLIT_TIME = re.compile(r"^time=(?P<at>.+)$")
SPLIT_KEY = re.compile(r"^(?P<key>[^=]+)=(?P<a>.+?)\.\.(?P<b>.+)$")


@dataclass
class Split:
    key: str  # "time" or a resource attribute (service.version, deployment.environment, ...)
    before: str
    after: str
    at_ns: int | None = None

    def label(self, side: str) -> str:
        """How an instance of `side` is chosen: "started before T", "with spans at service.version=A"."""
        if self.at_ns is not None:
            return f"started {'before' if side == 'before' else 'at or after'} {self.before}"
        return f"with spans at {self.key}={self.before if side == 'before' else self.after}"


def parse_split(text: str) -> Split:
    m = SPLIT_TIME.match(text)
    if m:
        raw = m["at"].strip()
        try:
            at = datetime.fromisoformat(raw.replace("Z", "+00:00") if raw.endswith("Z") else raw)
        except ValueError as exc:
            raise CompareInputError(f"--split {text!r}: {raw!r} is not an ISO 8601 instant "
                                    "(e.g. 2025-01-15T09:00:00Z)") from exc
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        at_ns = int(at.timestamp()) * 1_000_000_000 + at.microsecond * 1000
        return Split("time", at.isoformat(), at.isoformat(), at_ns)
    m = SPLIT_KEY.match(text)
    if m and m["a"] != m["b"]:
        return Split(m["key"].strip(), m["a"].strip(), m["b"].strip())
    raise CompareInputError(f"--split {text!r}: expected KEY=BEFORE..AFTER (e.g. service.version=1.4.0..1.5.0) "
                            "or time=ISO-INSTANT (e.g. time=2025-01-15T09:00:00Z)")


def _attribute_sql(key: str) -> tuple[str, list]:
    """SQL for a span's value of resource attribute `key`."""
    columns = {"service.version": "service_version", "service.name": "service_name",
               "service.namespace": "service_namespace", "service.instance.id": "service_instance_id"}
    if key in columns:
        return columns[key], []
    return "json_extract_string(resource_attributes, ?)", ["$." + json.dumps(key)]


def _instance_sides(con: duckdb.DuckDBPyConnection, split: Split) -> dict[str, set[str]]:
    """Instance ids of each side, plus `both` (untouched by the split key) and `mixed` (left out)."""
    instances = {i for (i,) in con.execute("SELECT instance_id FROM instances").fetchall()}
    if split.at_ns is not None:
        before = {i for (i,) in con.execute("SELECT instance_id FROM instances WHERE start_adj < ?",
                                            [split.at_ns]).fetchall()}
        return {"before": before, "after": instances - before, "both": set(), "mixed": set()}
    expr, params = _attribute_sql(split.key)
    rows = con.execute(
        f"SELECT s.instance_id, bool_or(v = ?), bool_or(v = ?) FROM span_steps s "
        f"JOIN (SELECT trace_id, span_id, {expr} AS v FROM spans) USING (trace_id, span_id) GROUP BY ALL",
        [split.before, split.after, *params]).fetchall()
    sides: dict[str, set[str]] = {"before": set(), "after": set(), "both": set(), "mixed": set()}
    seen = set()
    for instance, has_a, has_b in rows:
        seen.add(instance)
        sides["mixed" if has_a and has_b else "before" if has_a else "after" if has_b else "both"].add(instance)
    sides["both"] |= instances - seen
    return sides


def _side_report(con: duckdb.DuckDBPyConnection, instances: set[str]) -> dict:
    """The report of the spans of `instances` alone, analysed in a store of their own."""
    con.execute("CREATE OR REPLACE TEMP TABLE _compare_instances (instance_id VARCHAR)")
    con.executemany("INSERT INTO _compare_instances VALUES (?)", [[i] for i in sorted(instances)])
    con.execute("CREATE OR REPLACE TEMP TABLE _compare_spans AS SELECT trace_id, span_id FROM span_steps "
                "SEMI JOIN _compare_instances USING (instance_id)")
    try:
        spans = con.sql(f"SELECT {', '.join(store.SPAN_COLUMN_NAMES)} FROM spans "
                            "SEMI JOIN _compare_spans USING (trace_id, span_id)").to_arrow_table()
        links = con.sql(f"SELECT {', '.join(store.LINK_COLUMN_NAMES)} FROM span_links "
                            "SEMI JOIN _compare_spans USING (trace_id, span_id)").to_arrow_table()
    finally:
        con.execute("DROP TABLE IF EXISTS _compare_instances")
        con.execute("DROP TABLE IF EXISTS _compare_spans")
    side = duckdb.connect(":memory:")
    try:
        store.ensure_schema(side)
        store.insert_arrow(side, spans, links)
        run_pipeline(side)
        report = build_report(side)
        validate_report(report)
        return report
    finally:
        side.close()


def split_sides(inputs: list[str], db: str, split: Split) -> tuple[Side, Side]:
    if any(_read_report(p, validate=False) is not None for p in inputs):
        raise CompareInputError("--split needs trace dumps or a .duckdb store: a report has no spans to split")
    opened = open_inputs(inputs, db)
    try:
        warn_load_errors(opened)
        run_pipeline(opened.con)
        sides = _instance_sides(opened.con, split)
        if split.at_ns is None:
            expr, params = _attribute_sql(split.key)
            present = {v for (v,) in opened.con.execute(
                f"SELECT DISTINCT {expr} FROM spans WHERE {expr} IN (?, ?)",
                [*params, *params, split.before, split.after]).fetchall()}
            for value in (split.before, split.after):
                if value not in present:
                    raise CompareInputError(f"--split: no span of {opened.description} has {split.key}={value}")
        for name in ("before", "after"):
            if not sides[name]:
                raise CompareInputError(f"--split: no workflow instance of {opened.description} "
                                        f"{split.label(name)}; nothing to compare")
        notes = []
        if sides["both"]:
            notes.append(f"{len(sides['both'])} instance(s) with no span at either {split.key} are on both sides")
        if sides["mixed"]:
            notes.append(f"{len(sides['mixed'])} instance(s) with spans at both {split.key} values are left out")
        result = []
        for name in ("before", "after"):
            chosen = sides[name] | sides["both"]
            result.append(Side(_side_report(opened.con, chosen),
                               f"{opened.description}, {len(sides[name])} instance(s) {split.label(name)}",
                               notes))
        return result[0], result[1]
    finally:
        opened.con.close()


# --- the comparison ------------------------------------------------------------------------------


def _edge_key(e: dict) -> tuple:
    return (e["source"], e["target"], e["via"], e.get("event"))


def _edge_ref(e: dict) -> dict:
    return {"source": e["source"], "target": e["target"], "via": e["via"], "event": e.get("event"),
            "count": e["count"], "latency_ms": e.get("latency_ms")}


def _change(before, after) -> dict:
    delta = None if before is None or after is None else round(after - before, 3)
    return {"before": before, "after": after, "change": delta}


# A critical-path entry worth comparing: on the path of a quarter of the instances (or a wait, the
# cost of an implicit ordering, however rare); changed when its median moved by a tenth and at least
# a millisecond, or its share of instances by a tenth.
PATH_SHARE, PATH_P50_RATIO, PATH_P50_MS, PATH_SHARE_DELTA = 0.25, 0.10, 1.0, 0.10


def _critical_path_changes(a: dict, b: dict) -> list[dict]:
    """Entries of the typical critical path that appeared, disappeared or moved; nothing when either
    report predates the field."""
    if "critical_path" not in a or "critical_path" not in b:
        return []
    keep = lambda w: {(p["step"], p["kind"]): p for p in w["critical_path"]
                      if p["share"] >= PATH_SHARE or p["kind"] == "wait"}
    pa, pb = keep(a), keep(b)
    out = []
    for key in sorted(pa.keys() | pb.keys()):
        ea, eb = pa.get(key), pb.get(key)
        if ea and eb:
            p50a, p50b = ea["p50_ms"] or 0.0, eb["p50_ms"] or 0.0
            moved = abs(p50b - p50a) >= max(PATH_P50_MS, PATH_P50_RATIO * max(p50a, p50b))
            if not moved and abs(eb["share"] - ea["share"]) < PATH_SHARE_DELTA:
                continue
        out.append({"step": key[0], "kind": key[1],
                    "share": _change(ea and ea["share"], eb and eb["share"]),
                    "p50_ms": _change(ea and ea["p50_ms"], eb and eb["p50_ms"])})
    return out


def _compare_workflow(a: dict, b: dict) -> dict | None:
    steps_a = {s["id"]: s for s in a["steps"]}
    steps_b = {s["id"]: s for s in b["steps"]}
    edges_a = {_edge_key(e): e for e in a["edges"]}
    edges_b = {_edge_key(e): e for e in b["edges"]}
    changed = []
    for key in sorted(edges_a.keys() & edges_b.keys(), key=str):
        ea, eb = edges_a[key], edges_b[key]
        la, lb = ea.get("latency_ms") or {}, eb.get("latency_ms") or {}
        if ea["count"] != eb["count"] or la.get("p50") != lb.get("p50") or la.get("p95") != lb.get("p95"):
            changed.append({"source": key[0], "target": key[1], "via": key[2], "event": key[3],
                            "count": _change(ea["count"], eb["count"]),
                            "latency_p50_ms": _change(la.get("p50"), lb.get("p50")),
                            "latency_p95_ms": _change(la.get("p95"), lb.get("p95"))})
    diff = {
        "id": a["id"],
        "instances": _change(a["instances"], b["instances"]),
        "steps_added": [steps_b[s] for s in sorted(steps_b.keys() - steps_a.keys())],
        "steps_removed": [steps_a[s] for s in sorted(steps_a.keys() - steps_b.keys())],
        "edges_added": [_edge_ref(edges_b[k]) for k in sorted(edges_b.keys() - edges_a.keys(), key=str)],
        "edges_removed": [_edge_ref(edges_a[k]) for k in sorted(edges_a.keys() - edges_b.keys(), key=str)],
        "edges_changed": changed,
        "pattern": _change(a.get("pattern"), b.get("pattern")) if a.get("pattern") != b.get("pattern") else None,
        "critical_path_changed": _critical_path_changes(a, b),
    }
    if a["instances"] == b["instances"] and diff["pattern"] is None and not any(
            diff[k] for k in ("steps_added", "steps_removed", "edges_added", "edges_removed", "edges_changed",
                              "critical_path_changed")):
        return None
    return diff


def compare_reports(before: dict, after: dict) -> dict:
    """What changed from report `before` to report `after` (both `analyze --format json`)."""
    wf_a = {w["id"]: w for w in before["workflows"]}
    wf_b = {w["id"]: w for w in after["workflows"]}
    brief = lambda w: {"id": w["id"], "name": w.get("name"), "instances": w["instances"],
                       "pattern": w.get("pattern")}
    changed = [d for wf in sorted(wf_a.keys() & wf_b.keys())
               if (d := _compare_workflow(wf_a[wf], wf_b[wf])) is not None]
    ids_a = {f["id"] for f in before["findings"]}
    ids_b = {f["id"] for f in after["findings"]}
    return {
        "summary": {"before": before["summary"], "after": after["summary"]},
        "workflows_added": [brief(wf_b[w]) for w in sorted(wf_b.keys() - wf_a.keys())],
        "workflows_removed": [brief(wf_a[w]) for w in sorted(wf_a.keys() - wf_b.keys())],
        "workflows_changed": changed,
        "findings_new": [f for f in after["findings"] if f["id"] not in ids_a],
        "findings_resolved": [f for f in before["findings"] if f["id"] not in ids_b],
        "findings_unchanged": len(ids_a & ids_b),
    }


# --- rendering -----------------------------------------------------------------------------------


def _one_line(text) -> str:
    """Names come from the traces: a line break or a pipe in one must not break the Markdown."""
    return " ".join(str(text).splitlines()).replace("|", "\\|")


def _edge_md(e: dict) -> str:
    via = f"event `{_one_line(e['event'])}`" if e.get("event") else e["via"]
    return f"`{_one_line(e['source'])}` → `{_one_line(e['target'])}` ({via})"


def _num(x) -> str:
    return "—" if x is None else f"{x:g}"


def _delta(c: dict) -> str:
    if c["before"] == c["after"]:
        return _num(c["after"])
    sign = "" if c["change"] is None else f" ({c['change']:+g})"
    return f"{_num(c['before'])} → {_num(c['after'])}{sign}"


def _finding_md(f: dict) -> str:
    extra = "".join(f" {k}=`{_one_line(f[k])}`" for k in ("event", "resource") if f.get(k))
    return _one_line(f"- **{f['severity']}** `{f['id']}` {f['kind']}: {' → '.join(f['services'])}{extra} — "
                     f"{f['summary']}")


def compare_markdown(diff: dict, before: Side, after: Side, failing: list[dict] | None = None,
                     fail_on: list[str] | None = None) -> str:
    sa, sb = diff["summary"]["before"], diff["summary"]["after"]
    out = ["# choreoscope compare", "",
           _one_line(f"- before: {before.description} — {sa['spans']} spans, {sa['workflow_instances']} instances"),
           _one_line(f"- after: {after.description} — {sb['spans']} spans, {sb['workflow_instances']} instances")]
    out += [f"- {_one_line(n)}" for n in dict.fromkeys(before.notes + after.notes)]
    out += ["",
            (f"Workflows: {len(diff['workflows_added'])} added, {len(diff['workflows_removed'])} removed, "
             f"{len(diff['workflows_changed'])} changed. Findings: {len(diff['findings_new'])} new, "
             f"{len(diff['findings_resolved'])} resolved, {diff['findings_unchanged']} unchanged."), ""]
    for title, key in (("Workflows added", "workflows_added"), ("Workflows removed", "workflows_removed")):
        if diff[key]:
            out += [f"## {title}", ""]
            out += [_one_line(f"- `{w['id']}` ({w['instances']} instances, {w['pattern']})") for w in diff[key]]
            out.append("")
    for w in diff["workflows_changed"]:
        out += [f"## Workflow `{_one_line(w['id'])}`", "", f"Instances: {_delta(w['instances'])}"
                + (" (unchanged)." if w['instances']['change'] == 0 else ".")]
        if w.get("pattern"):
            out.append(f"Pattern: {w['pattern']['before']} → {w['pattern']['after']}.")
        out.append("")
        out += [_one_line(f"- step added: `{s['id']}` ({s['count']})") for s in w["steps_added"]]
        out += [_one_line(f"- step removed: `{s['id']}` ({s['count']})") for s in w["steps_removed"]]
        out += [f"- edge added: {_edge_md(e)}, {e['count']}×" for e in w["edges_added"]]
        out += [f"- edge removed: {_edge_md(e)}, {e['count']}×" for e in w["edges_removed"]]
        if w["edges_changed"]:
            out += ([] if out[-1] == "" else [""]) + ["| edge | count | p50 ms | p95 ms |", "|---|---|---|---|"]
            out += [f"| {_edge_md(e)} | {_delta(e['count'])} | {_delta(e['latency_p50_ms'])} | "
                    f"{_delta(e['latency_p95_ms'])} |" for e in w["edges_changed"]]
        if w.get("critical_path_changed"):
            out += ([] if out[-1] == "" else [""]) + ["Critical path:", "", "| step | kind | on path | p50 ms |",
                                                       "|---|---|---|---|"]
            out += [f"| `{_one_line(c['step'])}` | {c['kind']} | {_delta(c['share'])} | {_delta(c['p50_ms'])} |"
                    for c in w["critical_path_changed"]]
        out.append("")
    for title, key in (("New findings", "findings_new"), ("Resolved findings", "findings_resolved")):
        if diff[key]:
            out += [f"## {title}", ""] + [_finding_md(f) for f in diff[key]] + [""]
    if fail_on:
        out.append(f"Result: {'FAIL' if failing else 'pass'} (--fail-on {' '.join(fail_on)}: "
                   f"{len(failing or [])} new finding(s) match)")
    return "\n".join(out).rstrip("\n") + "\n"


# --- the command ---------------------------------------------------------------------------------


def sides_for(inputs: list[str], db: str, split: str | None) -> tuple[Side, Side]:
    if split:
        if len(inputs) > 1:
            raise CompareInputError("--split compares one input with itself: give one trace dump or store "
                                    f"(got {len(inputs)} inputs)")
        return split_sides(inputs, db, parse_split(split))
    if len(inputs) != 2:
        raise CompareInputError(f"compare needs two inputs, BEFORE and AFTER (got {len(inputs)}), or one "
                                "input with --split")
    for path in inputs:
        if not Path(path).exists():
            raise CompareInputError(f"{path}: no such file")
    return load_side(inputs[0], db), load_side(inputs[1], db)


def run(args) -> int:
    try:
        kinds, min_severity = parse_fail_on(args.fail_on) if args.fail_on else (set(), None)
        before, after = sides_for(args.inputs, args.db, args.split)
    except (CompareInputError, CheckInputError, InputError, StoreError, AnalysisError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    diff = compare_reports(before.report, after.report)
    failing = gate(diff["findings_new"], kinds, min_severity, set()) if args.fail_on else []
    if args.format == "json":
        doc = {"before": before.description, "after": after.description, "notes": list(dict.fromkeys(before.notes + after.notes)), **diff}
        if args.fail_on:
            doc["failing"] = [f["id"] for f in failing]
        text = json.dumps(doc, indent=2, default=str) + "\n"
    else:
        text = compare_markdown(diff, before, after, failing, args.fail_on)
    try:
        write_output(text, args.out)
    except OSError as exc:
        print(f"error: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_NEW_FINDINGS if failing else EXIT_OK
