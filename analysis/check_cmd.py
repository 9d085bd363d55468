"""`choreoscope check`: the drift gate for CI.

Runs the analysis (with --intended documents, if given), prints a short Markdown summary, and
exits 1 when a finding matching --fail-on appears that the --baseline report did not have
(findings are matched by their stable `id`), 0 otherwise, 2 on bad input. A severity in
--fail-on means that severity or worse; a kind means any finding of that kind.
"""

from __future__ import annotations

import json
import re
import sys
from xml.etree import ElementTree as ET

from choreoscope.analysis.analyze_cmd import analyze
from choreoscope.analysis.findings import KINDS, SEVERITIES
from choreoscope.analysis.intended import IntendedError, load_intended
from choreoscope.analysis.open_inputs import InputError
from choreoscope.analysis.pipeline import AnalysisError
from choreoscope.collector.store import StoreError

EXIT_OK, EXIT_DRIFT, EXIT_BAD_INPUT = 0, 1, 2


class CheckInputError(ValueError):
    """--fail-on or --baseline cannot be used."""


def parse_fail_on(tokens: list[str]) -> tuple[set[str], str | None]:
    """(kinds, lowest failing severity) from KIND|SEVERITY tokens (commas allowed)."""
    kinds, severities = set(), []
    for token in (t.strip() for raw in tokens for t in raw.split(",")):
        if not token:
            continue
        if token in SEVERITIES:
            severities.append(SEVERITIES.index(token))
        elif token in KINDS:
            kinds.add(token)
        else:
            raise CheckInputError(f"--fail-on {token!r}: expected a severity ({', '.join(SEVERITIES)}) "
                                  f"or a finding kind ({', '.join(KINDS)})")
    return kinds, (SEVERITIES[min(severities)] if severities else None)


def load_baseline(path: str | None) -> set[str]:
    """Finding ids of a previous JSON report (`choreoscope analyze --format json`)."""
    if not path:
        return set()
    try:
        with open(path, encoding="utf-8") as fh:
            report = json.load(fh)
    except OSError as exc:
        raise CheckInputError(f"--baseline {path}: cannot read: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise CheckInputError(f"--baseline {path}:{exc.lineno}: not JSON ({exc.msg}); expected a report "
                              "written by `choreoscope analyze --format json`") from exc
    findings = report.get("findings") if isinstance(report, dict) else None
    if not isinstance(findings, list):
        raise CheckInputError(f"--baseline {path}: no `findings` list; expected a report written by "
                              "`choreoscope analyze --format json`")
    ids = set()
    for i, f in enumerate(findings):
        if not isinstance(f, dict) or not isinstance(f.get("id"), str):
            raise CheckInputError(f"--baseline {path}: findings[{i}] has no string `id`")
        ids.add(f["id"])
    return ids


def gate(findings: list[dict], kinds: set[str], min_severity: str | None, known: set[str]) -> list[dict]:
    """Findings that fail the check: new (id not in `known`) and matching a kind or severity."""
    floor = SEVERITIES.index(min_severity) if min_severity else len(SEVERITIES)
    return [f for f in findings if f["id"] not in known
            and (f["kind"] in kinds or SEVERITIES.index(f["severity"]) >= floor)]


def _label(f: dict) -> str:
    extra = "".join(f" {k}={f[k]}" for k in ("event", "resource") if f.get(k))
    return f"{f['kind']}: {' -> '.join(f['services'])}{extra}"


def _one_line(text: str) -> str:
    """Names come from the traces: a line break in one must not end the list item."""
    return " ".join(text.splitlines())


def summary_markdown(report: dict, failing: list[dict], known: set[str], fail_on: list[str]) -> str:
    findings = report["findings"]
    new = [f for f in findings if f["id"] not in known]
    out = ["# choreoscope check", "",
           (f"{len(findings)} finding(s), {len(new)} new since the baseline, {len(failing)} failing "
            f"the gate (--fail-on {' '.join(fail_on)})."), ""]
    if findings:
        out += ["| kind | findings | new | failing |", "|---|---|---|---|"]
        for kind in sorted({f["kind"] for f in findings}):
            of = [f for f in findings if f["kind"] == kind]
            out.append(f"| {kind} | {len(of)} | {sum(f['id'] not in known for f in of)} | "
                       f"{sum(f in failing for f in of)} |")
        out.append("")
    if failing:
        out += ["## Failing", ""]
        out += [_one_line(f"- **{f['severity']}** `{f['id']}` {_label(f)} — {f['summary']}") for f in failing]
        out.append("")
    for row in report.get("conformance") or []:
        if row.get("intended_workflow") or row.get("declared_edges"):
            cov = row.get("coverage")
            against = (f"vs {row['intended_workflow']}" if row.get("intended_workflow")
                       else "vs the declared service edges")
            out.append(_one_line(f"- conformance {row.get('workflow_id')} {against}: "
                                 f"{row.get('matched_edges')}/{row.get('declared_edges')} declared edges seen"
                                 + (f" ({cov:.0%})" if cov is not None else "")
                                 + f", {row.get('undeclared_edges')} undeclared, {row.get('missing_edges')} missing"))
    out.append("")
    out.append("Result: " + ("FAIL" if failing else "pass"))
    return "\n".join(out) + "\n"


XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def junit_xml(report: dict, failing: list[dict], known: set[str]) -> str:
    """One testcase per finding (classname = kind); failures for those failing the gate."""
    failing_ids = {f["id"] for f in failing}
    findings = report["findings"]
    suite = ET.Element("testsuite", name="choreoscope", tests=str(max(1, len(findings))),
                       failures=str(len(failing)), errors="0", skipped="0")
    if not findings:
        ET.SubElement(suite, "testcase", classname="choreoscope", name="no findings")
    for f in findings:
        case = ET.SubElement(suite, "testcase", classname=f"choreoscope.{f['kind']}", name=f"{_label(f)} [{f['id']}]")
        if f["id"] in failing_ids:
            failure = ET.SubElement(case, "failure", message=f["summary"], type=f["severity"])
            failure.text = json.dumps({k: f.get(k) for k in ("services", "event", "resource", "workflow",
                                                             "confidence", "evidence", "trace_ids")}, indent=2)
        elif f["id"] in known:
            ET.SubElement(case, "system-out").text = "known: present in the baseline"
    suites = ET.Element("testsuites", name="choreoscope check")
    suites.append(suite)
    # Names come from the traces; XML 1.0 cannot carry control characters even escaped.
    return XML_ILLEGAL.sub("\ufffd", ET.tostring(suites, encoding="unicode", xml_declaration=True)) + "\n"


def run(args) -> int:
    try:
        kinds, min_severity = parse_fail_on(args.fail_on)
        known = load_baseline(args.baseline)
        if args.intended:
            load_intended(args.intended)  # invalid documents fail fast, before any analysis
        report = analyze(args.inputs, args.db, args.intended)
    except (CheckInputError, IntendedError, InputError, StoreError, AnalysisError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    failing = gate(report["findings"], kinds, min_severity, known)
    sys.stdout.write(summary_markdown(report, failing, known, args.fail_on))
    if args.junit:
        try:
            with open(args.junit, "w", encoding="utf-8") as fh:
                fh.write(junit_xml(report, failing, known))
        except OSError as exc:
            print(f"error: --junit {args.junit}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    return EXIT_DRIFT if failing else EXIT_OK
