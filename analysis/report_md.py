"""The report for people: Markdown, findings first (most severe first), then each workflow."""

from __future__ import annotations

import json
import re

SEVERITY_MARK = {"critical": "🔴 critical", "warning": "🟠 warning", "info": "🔵 info"}


def _inline(text) -> str:
    """Names come from the traces: a line break in one must not end a heading or a list item."""
    return " ".join(str(text if text is not None else "").splitlines())


def _cell(text) -> str:
    return _inline(text).replace("|", "\\|")


def _ms(value) -> str:
    return "–" if value is None else str(value)


def _code(text) -> str:
    """An inline code span that survives backticks in the text (CommonMark: a longer fence)."""
    text = _inline(text)
    runs = [len(r) for r in re.findall(r"`+", text)]
    fence = "`" * (max(runs, default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def report_markdown(report: dict, max_workflows: int = 25) -> str:
    s = report["summary"]
    out = [
        "# choreoscope report",
        "",
        (f"{s['spans']} spans in {s['traces']} traces from {s['services']} services, stitched into "
         f"{s['workflow_instances']} workflow instances of {len(report['workflows'])} workflow types."),
        "",
    ]
    skewed = {k: v for k, v in report["clock_offsets_ms"].items() if abs(v) >= 1.0}
    if skewed:
        out.append("Clock offsets corrected before judging orderings: "
                   + ", ".join(f"{k} {v:+.1f} ms" for k, v in sorted(skewed.items())) + ".")
        out.append("")
    findings = report["findings"]
    out += _verdicts_section(report)
    out += [f"## Findings ({len(findings)})", ""]
    if not findings:
        out += ["Nothing to report: no undeclared coordination was found.", ""]
    for f in findings:
        where = _inline(", ".join(f["services"]))
        extra = "".join(f" · {label} {_code(f[k])}" for k, label in (("event", "event"), ("resource", "resource"))
                        if f.get(k))
        out += [
            f'<a id="finding-{f["id"]}"></a>' if f.get("id") else "",
            "",
            f"### {SEVERITY_MARK.get(f['severity'], f['severity'])} · {f['kind']} · {where}{extra}",
            "",
            _inline(f["summary"]),
            "",
            f"**What to do:** {_inline(f['recommendation'])}",
            "",
            f"Confidence {f['confidence']:.2f}. Evidence: {_code(json.dumps(f['evidence'], default=str))}",
        ]
        if f["trace_ids"]:
            out.append("Example traces: " + ", ".join(_code(t) for t in f["trace_ids"][:3]))
        out.append("")
    if "conformance" in report:
        out += ["## Conformance with the intended workflows", ""]
        rows = report["conformance"]
        if rows:
            cols = list(rows[0].keys())
            out.append("| " + " | ".join(cols) + " |")
            out.append("|" + "---|" * len(cols))
            for r in rows:
                out.append("| " + " | ".join(_cell(r[c]) for c in cols) + " |")
        out.append("")
    out += ["## Workflows", ""]
    for wf in report["workflows"][:max_workflows]:
        ev = wf["pattern_evidence"]
        m = wf["metrics"]
        out += [
            f"### {_inline(wf['name'])} — {wf['pattern']}, {wf['instances']} instance(s)",
            "",
            f"- Who knows the workflow: {_inline(ev['who_knows_the_workflow'])}",
            f"- Where state lives: {_inline(ev['where_state_lives'])}",
            f"- Where errors are handled: {_inline(ev['where_errors_are_handled'])}",
            (f"- Services ({m['services']}): {_inline(', '.join(wf['services']))}; events: {m['events']}; depth "
             f"{m['max_depth']}; cycles {m['cycles']}; widest fan-out {m['fan_out_max']}; "
             f"variants: {len(wf['variants'])}"),
            "",
        ]
        out += _critical_path_lines(wf)
        service_of = {st["id"]: st["service"] for st in wf["steps"]}
        cross = [e for e in wf["edges"] if service_of.get(e["source"]) != service_of.get(e["target"])]
        if cross:
            names = {st["id"]: f"{st['service']} · {st['operation']}" for st in wf["steps"]}
            out += ["| from | to | via | count | p50 ms | p95 ms | note |", "|---|---|---|---|---|---|---|"]
            for e in cross:
                note = "inferred (" + ", ".join(e.get("evidence", [])) + ")" if e["inferred"] else ""
                if "unanswered" in e.get("evidence", []):
                    note = "uninstrumented peer"
                via = e["via"] + (f" {_code(e['event'])}" if e["event"] else "")
                out.append(
                    f"| {_cell(names.get(e['source'], e['source']))} | {_cell(names.get(e['target'], e['target']))} "
                    f"| {_cell(via)} | {e['count']} | {_ms(e['latency_ms']['p50'])} | {_ms(e['latency_ms']['p95'])} "
                    f"| {note} |"
                )
            out.append("")
    if len(report["workflows"]) > max_workflows:
        out.append(f"… and {len(report['workflows']) - max_workflows} more workflow types (see the JSON report).")
    return "\n".join(out) + "\n"


def _verdicts_section(report: dict) -> list[str]:
    """Plain words per workflow with signs that its pattern should be reconsidered, each sign linked
    to the findings it rests on; nothing for the workflows with none."""
    judged = [wf for wf in report["workflows"] if wf.get("verdicts")]
    if not judged:
        return []
    out = ["## Verdicts", ""]
    for wf in judged:
        for v in wf["verdicts"]:
            out += [f"### {_inline(wf['name'])}: {_inline(v['verdict'])}", "", _inline(v["summary"]), ""]
            for sign in v["signs"]:
                links = ", ".join(f"[finding {i}](#finding-{i})" for i in sign["finding_ids"])
                out.append(f"- {_inline(sign['sign'])}: {_inline(sign['text'])}" + (f" ({links})" if links else ""))
            out += ["", f"**What to do:** {_inline(v['recommendation'])}", ""]
    return out


def _critical_path_lines(wf: dict, min_share: float = 0.25) -> list[str]:
    """The typical critical path in path order: the steps on it in at least `min_share` of the
    instances, and every wait (the cost of an implicit ordering, however rare)."""
    path = [p for p in wf.get("critical_path", []) if p["share"] >= min_share or p["kind"] == "wait"]
    if not path:
        return []
    out = ["Typical critical path (what sets the end-to-end time), in path order:", ""]
    for i, p in enumerate(path, 1):
        kind = p["kind"] + (f" on {_code(p['waits_on'])}" if p.get("waits_on") else "")
        out.append(f"{i}. {_code(p['step'])}: {kind}, on the path in {p['share']:.0%} of the instances, "
                   f"p50 {_ms(p['p50_ms'])} ms")
    return out + [""]
