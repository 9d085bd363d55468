"""Recompute, from the spans alone, the evidence for every entry of truth.yaml (standard library only).

    python inspect_capture.py [--capture capture.otlp.jsonl.gz] [--truth truth.yaml]

Prints one row per truth entry (workflows, edges, findings, must_not) with the numbers that back it,
and exits 0 when every entry is backed by the data, 1 when one is not. The truth file is read by
hand: every entry is one YAML flow mapping on one line; each entry's check is keyed by its kind and
services (see CHECKS). Nothing here knows choreoscope.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent


# --- the truth file's YAML subset --------------------------------------------------------------------

def _parse_flow(text: str, i: int = 0):
    """Parse a YAML flow value (map, list, quoted or plain scalar) starting at text[i]."""
    def ws(j):
        while j < len(text) and text[j] == " ":
            j += 1
        return j
    i = ws(i)
    if text[i] == "{":
        out, i = {}, ws(i + 1)
        while text[i] != "}":
            colon = text.index(":", i)
            key = text[i:colon].strip()
            value, i = _parse_flow(text, colon + 1)
            out[key] = value
            i = ws(i)
            if text[i] == ",":
                i = ws(i + 1)
        return out, i + 1
    if text[i] == "[":
        out, i = [], ws(i + 1)
        while text[i] != "]":
            value, i = _parse_flow(text, i)
            out.append(value)
            i = ws(i)
            if text[i] == ",":
                i = ws(i + 1)
        return out, i + 1
    if text[i] == '"':
        end = text.index('"', i + 1)
        return text[i + 1:end], end + 1
    j = i
    while j < len(text) and text[j] not in ",}]":
        j += 1
    raw = text[i:j].strip()
    if raw in ("null", "~"):
        return None, j
    if re.fullmatch(r"-?\d+", raw):
        return int(raw), j
    return raw, j


def read_truth(path: Path) -> dict:
    truth, section = {}, None
    for line in path.read_text().splitlines():
        stripped = line.split(" #")[0].rstrip() if not line.lstrip().startswith("#") else ""
        if not stripped.strip():
            continue
        if not line.startswith(" ") and ":" in stripped:
            key, _, rest = stripped.partition(":")
            section = key.strip()
            truth[section] = rest.strip() if rest.strip() else []
        elif stripped.strip().startswith("- {"):
            value, _ = _parse_flow(stripped.strip()[2:])
            truth[section].append(value)
    return truth


# --- the spans ---------------------------------------------------------------------------------------

def _value(v: dict):
    for key in ("stringValue", "intValue", "boolValue", "doubleValue"):
        if key in v:
            return int(v[key]) if key == "intValue" else v[key]
    return None


def load_spans(path: Path) -> dict[str, dict]:
    spans = {}
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            doc = json.loads(line)
            for rs in doc["resourceSpans"]:
                res = {a["key"]: _value(a["value"]) for a in rs.get("resource", {}).get("attributes", [])}
                for ss in rs.get("scopeSpans", []):
                    for s in ss.get("spans", []):
                        spans[s["spanId"]] = {
                            "id": s["spanId"], "trace": s["traceId"], "parent": s.get("parentSpanId") or None,
                            "name": s["name"], "kind": s["kind"], "service": res.get("service.name"),
                            "start": int(s["startTimeUnixNano"]), "end": int(s["endTimeUnixNano"]),
                            "attrs": {a["key"]: _value(a["value"]) for a in s.get("attributes", [])},
                            "error": (s.get("status") or {}).get("code") == "STATUS_CODE_ERROR",
                        }
    return spans


class Capture:
    def __init__(self, spans: dict[str, dict]):
        self.spans = spans
        self.children = defaultdict(list)
        for s in spans.values():
            if s["parent"]:
                self.children[s["parent"]].append(s)
        self.by_trace = defaultdict(list)
        for s in spans.values():
            self.by_trace[s["trace"]].append(s)

    def ancestors(self, s: dict):
        while s["parent"] and s["parent"] in self.spans:
            s = self.spans[s["parent"]]
            yield s

    def roots(self, service: str, name: str) -> list[dict]:
        return [s for s in self.spans.values() if s["service"] == service and s["name"] == name and not s["parent"]]

    def runs(self, trace: str, task: str) -> list[dict]:
        return sorted((s for s in self.by_trace[trace] if s["name"] == f"run/{task}"), key=lambda s: s["start"])

    def sql(self) -> list[dict]:
        return [s for s in self.spans.values() if "db.statement" in s["attrs"]]

    def retried(self, s: dict) -> bool:
        return s["attrs"].get("celery.state") == "RETRY" or "celery.retry.reason" in s["attrs"]

    def causal(self, earlier: dict, later: dict) -> bool:
        """True when `earlier` is an ancestor of `later` (parent chain)."""
        return any(a["id"] == earlier["id"] for a in self.ancestors(later))


ENTRY = {"POST /orders": "POST /orders", "checkout": "POST /orders/<order_id>/checkout",
         "reservations": "POST /orders/<order_id>/reservations"}


# --- the checks: (ok, evidence text) per truth entry ---------------------------------------------------

def check_workflow(cap: Capture, e: dict):
    roots = cap.roots(e["entry"]["service"], e["entry"]["operation"])
    return len(roots) == e["instances"], f"{len(roots)} root server spans (truth {e['instances']})"


def cross_edges(cap: Capture) -> Counter:
    """(source, target, destination) of every PRODUCER span whose CONSUMER child is in another service."""
    out = Counter()
    for s in cap.spans.values():
        if s["kind"] != "SPAN_KIND_CONSUMER" or s["parent"] not in cap.spans:
            continue
        p = cap.spans[s["parent"]]
        if p["kind"] == "SPAN_KIND_PRODUCER" and p["service"] != s["service"]:
            out[(p["service"], s["service"], s["attrs"].get("messaging.destination"))] += 1
    return out


def check_edge(cap: Capture, e: dict, edges: Counter):
    n = edges.get((e["source"], e["target"], e["event"]), 0)
    return n > 0, f"{n} publish->run hand-offs (run span is the publish span's child)"


def fanout(cap: Capture):
    """Per POST /orders instance: update_stats run, award_points attempts, send_receipt run."""
    rows = []
    for root in cap.roots("storefront", ENTRY["POST /orders"]):
        t = root["trace"]
        stats, points, receipt = cap.runs(t, "update_stats"), cap.runs(t, "award_points"), cap.runs(t, "send_receipt")
        if stats and points and receipt:
            rows.append({"trace": t, "stats": stats[0], "points": points, "receipt": receipt[0]})
    return rows


def sql_in(cap: Capture, run: dict, verb: str) -> list[dict]:
    return [c for c in cap.children[run["id"]] if str(c["attrs"].get("db.statement", "")).upper().startswith(verb)]


def check_planted_ordering(cap: Capture, e: dict):
    rows = fanout(cap)
    n = len(rows)
    early = [r for r in rows if r["points"][0]["start"] < r["stats"]["end"]]
    early_retried = [r for r in early if cap.retried(r["points"][0])]
    early_fine = len(early) - len(early_retried)
    final_after = sum(r["points"][-1]["start"] >= r["stats"]["end"] for r in rows)
    # at the SQL level: award_points' first SELECT ran before update_stats' INSERT had committed
    sel_before = 0
    for r in rows:
        ins, sel = sql_in(cap, r["stats"], "INSERT"), sql_in(cap, r["points"][0], "SELECT")
        if ins and sel and sel[0]["start"] < ins[0]["end"]:
            sel_before += 1
    retried_rows = [r for r in rows if len(r["points"]) > 1]
    causal = sum(cap.causal(r["stats"], r["points"][0]) or cap.causal(r["points"][0], r["stats"]) for r in rows)
    retry_when_ordered = sum(1 for r in rows if r not in early and cap.retried(r["points"][0]))
    share = len(retried_rows) / n if n else 0
    ok = (n >= 5 and final_after >= 0.95 * n and len(early_retried) >= 1 and early_fine <= 0.1 * n
          and causal == 0 and 0.02 <= share <= 0.35)
    text = (f"{n} instances; award_points' first attempt started before update_stats ended in {len(early)} "
            f"({len(early_retried)} of them retried, {early_fine} fine); its SELECT ran before the INSERT in "
            f"{sel_before}; retried in {len(retried_rows)} instances ({share:.0%}), {retry_when_ordered} retries when "
            f"ordered; final attempt after update_stats' end in {final_after}/{n}; causal paths between them: {causal}")
    return ok, text


def table_users(cap: Capture, table: str):
    writers, readers = Counter(), Counter()
    pat_w = re.compile(rf"^\s*(INSERT\s+INTO|UPDATE|DELETE\s+FROM|REPLACE\s+INTO)\s+{table}\b", re.IGNORECASE)
    pat_r = re.compile(rf"\bFROM\s+{table}\b", re.IGNORECASE)
    for s in cap.sql():
        stmt = s["attrs"]["db.statement"]
        if pat_w.search(stmt):
            writers[s["service"]] += 1
        elif stmt.lstrip().upper().startswith("SELECT") and pat_r.search(stmt):
            readers[s["service"]] += 1
    return writers, readers


def check_shared_table(cap: Capture, e: dict):
    writers, readers = table_users(cap, e["resource"])
    writer, reader = e["services"]
    ok = set(writers) == {writer} and set(readers) == {reader}
    return ok, f"{e['resource']}: writes {dict(writers)}; reads {dict(readers)}"


def retries_of(cap: Capture, service: str):
    runs = [s for s in cap.spans.values() if s["service"] == service and s["kind"] == "SPAN_KIND_CONSUMER"]
    retried = [s for s in runs if cap.retried(s)]
    republished = [c for s in retried for c in cap.children[s["id"]] if c["kind"] == "SPAN_KIND_PRODUCER"
                   and c["attrs"].get("messaging.message.id") == s["attrs"].get("messaging.message.id")]
    attempts = Counter(s["attrs"].get("messaging.message.id") for s in runs)
    return runs, retried, republished, attempts


def check_retry_loop(cap: Capture, e: dict):
    runs, retried, republished, attempts = retries_of(cap, e["services"][0])
    multi = sum(1 for v in attempts.values() if v > 1)
    max_retries = max((s["attrs"].get("celery.retries", 0) for s in runs), default=0)
    reasons = Counter(s["attrs"].get("celery.retry.reason") for s in retried)
    ok = len(retried) >= 3 and len(republished) == len(retried) and multi >= 3
    return ok, (f"{len(retried)} run spans with celery.state=RETRY, each republishing the same message id "
                f"({len(republished)}); {multi} message ids run more than once; max celery.retries {max_retries}; "
                f"reasons {dict(reasons)}")


def check_no_retry(cap: Capture, e: dict):
    runs, retried, _, attempts = retries_of(cap, e["services"][0])
    unlock = sum(1 for s in cap.spans.values() if "chord_unlock" in s["name"])
    multi = sum(1 for v in attempts.values() if v > 1)
    ok = runs and not retried and multi == 0 and unlock == 0
    return ok, f"{len(runs)} run spans, {len(retried)} retried, {multi} message ids run twice, {unlock} chord_unlock spans"


def check_dead(cap: Capture, e: dict):
    dest = e["event"]
    pubs = Counter(s["service"] for s in cap.spans.values()
                   if s["kind"] == "SPAN_KIND_PRODUCER" and s["attrs"].get("messaging.destination") == dest)
    runs = sum(1 for s in cap.spans.values()
               if s["kind"] == "SPAN_KIND_CONSUMER" and s["attrs"].get("messaging.destination") == dest)
    ok = set(pubs) == {e["services"][0]} and runs == 0
    return ok, f"published to {dest}: {dict(pubs)}; consumed: {runs}"


def check_consumed(cap: Capture, e: dict):
    dest = e["event"]
    pubs = Counter(s["service"] for s in cap.spans.values()
                   if s["kind"] == "SPAN_KIND_PRODUCER" and s["attrs"].get("messaging.destination") == dest)
    runs = [s for s in cap.spans.values()
            if s["kind"] == "SPAN_KIND_CONSUMER" and s["attrs"].get("messaging.destination") == dest]
    orphans = sum(1 for s in runs if s["parent"] not in cap.spans
                  or cap.spans[s["parent"]]["kind"] != "SPAN_KIND_PRODUCER")
    ok = pubs and runs and orphans == 0
    return ok, f"{dest}: published by {dict(pubs)}, {len(runs)} run spans, {orphans} without their publish span"


def check_chain_step(cap: Capture, e: dict, tasks: dict[str, str], entry: str):
    a_task, b_task = tasks[e["services"][0]], tasks[e["services"][1]]
    n = causal = 0
    for root in cap.roots("storefront", ENTRY[entry]):
        a, b = cap.runs(root["trace"], a_task), cap.runs(root["trace"], b_task)
        if not a or not b:
            continue
        n += 1
        causal += any(cap.causal(x, b[0]) for x in a)
    return n >= 5 and causal == n, f"{n} instances; {b_task} run descends from a {a_task} run in {causal}"


CHAIN = {"orders-worker": "validate_order", "payments-worker": "charge_payment", "fulfilment-worker": "ship_order"}
CHORD = {"fulfilment-worker": "reserve_item", "reporting-worker": "summarise_order"}


def check_sibling_order(cap: Capture, e: dict):
    """Hypothesis 'A before B' between fan-out siblings: refuted by B (final attempt) starting before A
    ended and doing fine."""
    def pick(r, service):
        return {"reporting-worker": [r["stats"]], "loyalty-worker": r["points"],
                "notifications-worker": [r["receipt"]]}[service]
    rows = fanout(cap)
    a_first = b_first = overlap_fine = a_ends_first = 0
    for r in rows:
        a, b = pick(r, e["services"][0]), pick(r, e["services"][1])
        a_end, b_final = a[-1]["end"], b[-1]
        if b_final["start"] < a_end and not cap.retried(b_final) and not b_final["error"]:
            overlap_fine += 1
        if a[-1]["end"] <= b[0]["start"]:
            a_first += 1
        if b[-1]["end"] <= a[0]["start"]:
            b_first += 1
        a_ends_first += a[-1]["end"] < b[-1]["end"]
    n = len(rows)
    ok = n >= 5 and overlap_fine >= 0.1 * n
    return ok, (f"{n} instances; {e['services'][1]} started before {e['services'][0]} ended and did fine in "
                f"{overlap_fine}; {e['services'][0]} ended first in {a_ends_first}, {e['services'][1]} in {n - a_ends_first}; "
                f"no overlap, {e['services'][0]} first {a_first}, {e['services'][1]} first {b_first}")


def check_retry_not_cycle(cap: Capture, e: dict):
    service = e["services"][0]
    self_pubs = [s for s in cap.spans.values() if s["kind"] == "SPAN_KIND_PRODUCER" and s["service"] == service]
    same_id = sum(1 for p in self_pubs if p["parent"] in cap.spans
                  and cap.spans[p["parent"]]["attrs"].get("messaging.message.id") == p["attrs"].get("messaging.message.id")
                  and cap.retried(cap.spans[p["parent"]]))
    ok = self_pubs and same_id == len(self_pubs)
    return ok, (f"{len(self_pubs)} publishes by {service}, {same_id} of them republish the consumed message's id "
                f"from a run span with celery.state=RETRY")


def check_reservations_not_read(cap: Capture, e: dict):
    writers, readers = table_users(cap, e["resource"])
    ok = set(writers) == {e["services"][0]} and not readers
    return ok, f"{e['resource']}: writes {dict(writers)}; reads {dict(readers)}"


def check(cap: Capture, section: str, e: dict, edges: Counter):
    kind, services = e.get("kind"), tuple(e.get("services") or ())
    if section == "workflows":
        return check_workflow(cap, e)
    if section == "edges":
        return check_edge(cap, e, edges)
    if section == "findings":
        return {"implicit_ordering": check_planted_ordering, "shared_data_coupling": check_shared_table,
                "retry_loop": check_retry_loop, "dead_event": check_dead}[kind](cap, e)
    # must_not
    if kind == "implicit_ordering":
        if set(services) <= set(CHAIN):
            return check_chain_step(cap, e, CHAIN, "checkout")
        if set(services) <= set(CHORD) and services[0] == "fulfilment-worker":
            return check_chain_step(cap, e, CHORD, "reservations")
        return check_sibling_order(cap, e)
    return {"event_cycle": check_retry_not_cycle, "retry_loop": check_no_retry,
            "shared_data_coupling": check_reservations_not_read, "orphan_event": check_consumed,
            "dead_event": check_consumed}[kind](cap, e)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capture", type=Path, default=HERE / "capture.otlp.jsonl.gz")
    parser.add_argument("--truth", type=Path, default=HERE / "truth.yaml")
    args = parser.parse_args(argv)
    truth = read_truth(args.truth)
    cap = Capture(load_spans(args.capture))
    edges = cross_edges(cap)
    print(f"{len(cap.spans)} spans, {len(cap.by_trace)} traces, services: "
          f"{', '.join(sorted({s['service'] for s in cap.spans.values()}))}")
    failed = 0
    for section in ("workflows", "edges", "findings", "must_not"):
        print(f"\n{section}:")
        for e in truth.get(section) or []:
            label = (e["entry"]["operation"] if section == "workflows" else
                     f"{e['source']} -> {e['target']} ({e['event']})" if section == "edges" else
                     f"{e['kind']} {e['services']}" + (f" {e.get('event') or e.get('resource') or ''}"))
            ok, text = check(cap, section, e, edges)
            failed += not ok
            print(f"  {'ok  ' if ok else 'FAIL'} {label:62} {text}")
    declared = {(e["source"], e["target"], e["event"]) for e in truth.get("edges") or []}
    extra = {k: v for k, v in edges.items() if k not in declared}
    print(f"\ncross-service hand-offs not in the truth's edges: {extra or 'none'}")
    failed += bool(extra)
    print("\nall backed by the data" if not failed else f"\n{failed} entries NOT backed by the data")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
