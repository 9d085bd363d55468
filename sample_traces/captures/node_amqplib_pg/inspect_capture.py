"""Recompute, from the spans alone, the evidence behind every entry of truth.yaml (standard library only).

    python inspect_capture.py [--capture capture.otlp.jsonl.gz] [--truth truth.yaml]

Every workflow, edge, finding and must_not entry of truth.yaml has a check here (keyed by kind,
services and event/resource); an entry without a check fails. Prints one row per entry and exits 0
when every entry is backed by the data, 1 otherwise.

Events are named by routing key. The Node amqplib spans carry `messaging.rabbitmq.routing_key`; the
Python pika consumer spans do not (only `messaging.destination` = the exchange), so their event is the
routing key of the producer span that is their parent.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ERROR = "STATUS_CODE_ERROR"


# ------------------------------------------------------------------ truth.yaml (flow-style subset)
def _parse_flow(text: str, i: int):
    """Parse one YAML flow value at text[i:]: {..}, [..], "quoted" or a bare scalar. Returns (value, next i)."""
    while text[i] == " ":
        i += 1
    ch = text[i]
    if ch == "{":
        out, i = {}, i + 1
        while True:
            while text[i] in " ,":
                i += 1
            if text[i] == "}":
                return out, i + 1
            j = text.index(":", i)
            key = text[i:j].strip()
            out[key], i = _parse_flow(text, j + 1)
    if ch == "[":
        out, i = [], i + 1
        while True:
            while text[i] in " ,":
                i += 1
            if text[i] == "]":
                return out, i + 1
            val, i = _parse_flow(text, i)
            out.append(val)
    if ch == '"':
        j = text.index('"', i + 1)
        return text[i + 1:j], j + 1
    j = i
    while j < len(text) and text[j] not in ",}]":
        j += 1
    raw = text[i:j].strip()
    return (int(raw) if raw.isdigit() else raw), j


def load_truth(path: Path) -> dict:
    truth: dict = {}
    section = None
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not line.startswith(" ") and ":" in line:
            key, _, rest = line.partition(":")
            rest = rest.split("#")[0].strip()
            if rest:
                truth[key] = rest
                section = None
            else:
                section = key
                truth[section] = []
        elif stripped.startswith("- {") and section:
            value, _ = _parse_flow(stripped, 2)
            truth[section].append(value)
    return truth


# ------------------------------------------------------------------ spans
def _value(v: dict):
    if not v:
        return None
    kind, val = next(iter(v.items()))
    if kind == "intValue":
        return int(val)
    if kind == "arrayValue":
        return [_value(x) for x in val.get("values", [])]
    return val


class Span:
    __slots__ = ("attrs", "end", "events", "id", "kind", "links", "name", "parent", "scope", "service",
                 "start", "status", "trace")

    def __init__(self, service: str, scope: str, raw: dict):
        self.service = service
        self.scope = scope
        self.trace = raw["traceId"]
        self.id = raw["spanId"]
        self.parent = raw.get("parentSpanId") or None
        self.name = raw["name"]
        self.kind = raw["kind"].replace("SPAN_KIND_", "")
        self.start = int(raw["startTimeUnixNano"])
        self.end = int(raw["endTimeUnixNano"])
        self.attrs = {a["key"]: _value(a["value"]) for a in raw.get("attributes", [])}
        self.status = (raw.get("status") or {}).get("code", "")
        self.events = [e["name"] for e in raw.get("events", [])]
        self.links = raw.get("links", [])

    @property
    def failed(self) -> bool:
        return self.status == ERROR

    @property
    def statement(self) -> str | None:
        return self.attrs.get("db.query.text") or self.attrs.get("db.statement")


def load_spans(path: Path) -> list[Span]:
    spans = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            for rs in json.loads(line).get("resourceSpans", []):
                res = {a["key"]: _value(a["value"]) for a in rs.get("resource", {}).get("attributes", [])}
                for ss in rs.get("scopeSpans", []):
                    scope = ss.get("scope", {}).get("name", "")
                    for raw in ss.get("spans", []):
                        spans.append(Span(res.get("service.name", "?"), scope, raw))
    return spans


class Capture:
    def __init__(self, spans: list[Span]):
        self.spans = spans
        self.by_id = {s.id: s for s in spans}
        self.children = collections.defaultdict(list)
        self.by_trace = collections.defaultdict(list)
        for s in spans:
            self.by_trace[s.trace].append(s)
            if s.parent:
                self.children[s.parent].append(s)

    def ancestors(self, span: Span):
        seen = span
        while seen.parent and seen.parent in self.by_id:
            seen = self.by_id[seen.parent]
            yield seen

    def event_of(self, span: Span) -> str | None:
        """Routing key of a messaging span; for a consumer without one (pika), that of its parent producer."""
        key = span.attrs.get("messaging.rabbitmq.routing_key") or span.attrs.get(
            "messaging.rabbitmq.destination.routing_key")
        if key:
            return key
        parent = self.by_id.get(span.parent or "")
        if span.kind == "CONSUMER" and parent is not None and parent.kind == "PRODUCER":
            return self.event_of(parent)
        return None

    def producers(self, service: str | None = None, event: str | None = None) -> list[Span]:
        return [s for s in self.spans if s.kind == "PRODUCER" and (service is None or s.service == service)
                and (event is None or self.event_of(s) == event)]

    def consumers(self, service: str | None = None, event: str | None = None) -> list[Span]:
        return [s for s in self.spans if s.kind == "CONSUMER" and (service is None or s.service == service)
                and (event is None or self.event_of(s) == event)]

    def instances(self) -> list[str]:
        """Traces rooted at checkout's POST /checkout server span: one per workflow instance."""
        return [s.trace for s in self.spans if s.service == "checkout" and s.kind == "SERVER" and not s.parent]

    def deliveries(self, trace: str, service: str, event: str) -> list[Span]:
        """Consumer spans of `service` for `event` in one trace, in start order (redeliveries included)."""
        return sorted((s for s in self.by_trace[trace] if s.kind == "CONSUMER" and s.service == service
                       and self.event_of(s) == event), key=lambda s: s.start)

    def descendants(self, span: Span):
        stack = list(self.children.get(span.id, []))
        while stack:
            s = stack.pop()
            yield s
            stack.extend(self.children.get(s.id, []))


SQL_TABLE = re.compile(r"^\s*(?:(INSERT)\s+INTO|(UPDATE)|(DELETE)\s+FROM|(SELECT)\b.*?\bFROM)\s+([A-Za-z_][\w.]*)",
                       re.IGNORECASE | re.DOTALL)


def sql_access(statement: str) -> tuple[str, str] | None:
    m = SQL_TABLE.match(statement or "")
    if not m:
        return None
    verb = next(g for g in m.groups()[:4] if g).upper()
    return ("read" if verb == "SELECT" else "write"), m.group(5).lower()


def pct(a: int, b: int) -> str:
    return f"{a}/{b} ({100.0 * a / b:.0f}%)" if b else f"{a}/0"


# ------------------------------------------------------------------ checks
def check_workflow(cap: Capture, entry: dict) -> tuple[bool, str]:
    e = entry["entry"]
    want = int(entry["instances"])
    if e["service"] == "checkout":
        roots = [s for s in cap.spans if s.service == "checkout" and s.kind == "SERVER" and not s.parent
                 and f"POST {s.attrs.get('http.route')}" == e["operation"]]
        names = collections.Counter(s.name for s in roots)
        return len(roots) == want, f"{len(roots)} root server spans {dict(names)} with http.route; truth {want}"
    roots = [s for s in cap.consumers(e["service"], e["operation"]) if not s.parent]
    return len(roots) == want, (f"{len(roots)} root CONSUMER spans of {e['service']} for {e['operation']} "
                                f"(new trace each, no parent, no link); truth {want}")


def observed_edges(cap: Capture) -> collections.Counter:
    edges = collections.Counter()
    for c in cap.spans:
        if c.kind == "CONSUMER" and c.parent in cap.by_id:
            p = cap.by_id[c.parent]
            if p.kind == "PRODUCER" and p.service != c.service:
                edges[(p.service, c.service, "event", cap.event_of(p))] += 1
        if c.kind == "SERVER" and c.parent in cap.by_id:
            p = cap.by_id[c.parent]
            if p.kind == "CLIENT" and p.service != c.service:
                edges[(p.service, c.service, "call", None)] += 1
    return edges


def check_edge(cap: Capture, entry: dict, edges: collections.Counter) -> tuple[bool, str]:
    key = (entry["source"], entry["target"], entry["via"], entry.get("event"))
    n = edges.get(key, 0)
    return n > 0, f"{n} {entry['target']} consumer spans whose parent is a {entry['source']} producer span"


def implicit_ordering_backed(cap: Capture, earlier: str, later: str, event: str) -> tuple[bool, str]:
    """payments -> ledger: ledger reads the row payments INSERTs; when ledger is first it fails and is redelivered."""
    n = overlap = failed = failed_redelivered = failed_before_insert_end = final_ok = after_insert = causal = 0
    for trace in cap.instances():
        e_spans = cap.deliveries(trace, earlier, event)
        l_spans = cap.deliveries(trace, later, event)
        if not e_spans or not l_spans:
            continue
        n += 1
        writes = [d for d in cap.descendants(e_spans[0]) if (sql_access(d.statement or "") or ("", ""))[0] == "write"]
        insert = min(writes, key=lambda d: d.start) if writes else None
        first = l_spans[0]
        if insert and first.start < insert.end:
            overlap += 1
        if first.failed:
            failed += 1
            failed_redelivered += len(l_spans) > 1
            reads = [d for d in cap.descendants(first) if (sql_access(d.statement or "") or ("", ""))[0] == "read"]
            if insert and reads and min(r.start for r in reads) < insert.end:
                failed_before_insert_end += 1
        last = l_spans[-1]
        if not last.failed:
            final_ok += 1
            reads = [d for d in cap.descendants(last) if (sql_access(d.statement or "") or ("", ""))[0] == "read"]
            if insert and reads and min(r.start for r in reads) >= insert.start:
                after_insert += 1
        if any(a.service == earlier for s in l_spans for a in cap.ancestors(s)):
            causal += 1
    ok = (n > 0 and 0 < failed <= 0.5 * n and failed_redelivered == failed == failed_before_insert_end
          and final_ok == n and after_insert == n and causal == 0)
    return ok, (f"{n} instances; {later}'s first delivery started before {earlier}'s INSERT ended in "
                f"{pct(overlap, n)}; first delivery failed (ERROR + exception event) in {pct(failed, n)}, "
                f"its SELECT before the INSERT ended in {failed_before_insert_end}/{failed}, redelivered in "
                f"{failed_redelivered}/{failed}; final delivery OK in {final_ok}/{n}, its SELECT after the INSERT "
                f"started in {after_insert}/{n}; {earlier} is an ancestor of {later} in {causal}/{n}")


def shared_data_backed(cap: Capture, writer: str, reader: str, table: str) -> tuple[bool, str]:
    access = collections.defaultdict(collections.Counter)
    keys = collections.Counter()
    for s in cap.spans:
        acc = sql_access(s.statement or "")
        if acc and acc[1] == table:
            access[s.service][acc[0]] += 1
            keys["db.query.text" if "db.query.text" in s.attrs else "db.statement"] += 1
    desc = "; ".join(f"{svc}: {dict(c)}" for svc, c in sorted(access.items()))
    ok = access[writer]["write"] > 0 and access[reader]["read"] > 0
    return ok, f"table {table} in SQL text: {desc} (attribute keys {dict(keys)})"


def retry_loop_backed(cap: Capture, service: str) -> tuple[bool, str]:
    by_msg = collections.defaultdict(list)
    for s in cap.consumers(service):
        mid = s.attrs.get("messaging.message.id") or s.attrs.get("messaging.message_id")
        by_msg[(s.trace, mid)].append(s)
    retried = {k: sorted(v, key=lambda s: s.start) for k, v in by_msg.items() if len(v) > 1}
    attempts = collections.Counter(len(v) for v in retried.values())
    ends_ok = sum(1 for v in retried.values() if not v[-1].failed and all(s.failed for s in v[:-1]))
    same_parent = sum(1 for v in retried.values() if len({s.parent for s in v}) == 1)
    gaps = [(v[i + 1].start - v[i].end) / 1e6 for v in retried.values() for i in range(len(v) - 1)]
    ok = bool(retried) and ends_ok == len(retried) and same_parent == len(retried)
    gap = f"{min(gaps):.1f}..{max(gaps):.1f} ms" if gaps else "-"
    return ok, (f"{len(by_msg)} messages consumed by {service}; {len(retried)} delivered more than once "
                f"(deliveries: {dict(sorted(attempts.items()))}); failed-then-OK {ends_ok}/{len(retried)}; "
                f"same parent producer span {same_parent}/{len(retried)}; gap between deliveries {gap}")


def orphan_backed(cap: Capture, consumer: str, event: str) -> tuple[bool, str]:
    cons = cap.consumers(consumer, event)
    roots = [s for s in cons if not s.parent and not s.links]
    prods = cap.producers(event=event)
    ok = len(cons) > 0 and len(roots) == len(cons) and not prods
    return ok, (f"{len(cons)} {consumer} consumer spans for {event}, {len(roots)} without parent or link; "
                f"producer spans for {event} anywhere: {len(prods)}")


def concurrent_backed(cap: Capture, a: str, b: str, event: str) -> tuple[bool, str]:
    n = a_ends_first = b_ends_first = b_after_a = a_after_b = 0
    for trace in cap.instances():
        sa, sb = cap.deliveries(trace, a, event), cap.deliveries(trace, b, event)
        if not sa or not sb:
            continue
        n += 1
        ea, eb = sa[-1].end, sb[-1].end
        a_ends_first += ea < eb
        b_ends_first += eb < ea
        b_after_a += sb[0].start >= sa[-1].end
        a_after_b += sa[0].start >= sb[-1].end
    fraud_failures = sum(1 for s in cap.spans if s.service == "fraud" and s.failed)
    fraud_redeliveries = sum(1 for t in cap.instances() if len(cap.deliveries(t, "fraud", event)) > 1)
    ok = n > 0 and a_ends_first >= 0.05 * n and b_ends_first >= 0.05 * n and not fraud_failures \
        and not fraud_redeliveries
    return ok, (f"{n} instances; {a} finished first in {pct(a_ends_first, n)}, {b} first in {pct(b_ends_first, n)}; "
                f"{b} started after {a} ended in {b_after_a}, {a} after {b} in {a_after_b}; fraud ERROR spans "
                f"{fraud_failures}, fraud redeliveries {fraud_redeliveries}")


def downstream_backed(cap: Capture, upstream: str, downstream: str) -> tuple[bool, str]:
    n = causal = later = 0
    for trace in cap.instances():
        ups = [s for s in cap.by_trace[trace] if s.service == upstream and s.kind == "CONSUMER"]
        downs = [s for s in cap.by_trace[trace] if s.service == downstream and s.kind == "CONSUMER"]
        if not ups or not downs:
            continue
        n += 1
        chain = list(cap.ancestors(downs[0]))
        if any(x.service == upstream and x.kind == "PRODUCER" for x in chain):
            causal += 1
        later += downs[0].start >= ups[0].start
    ok = n > 0 and causal == n
    return ok, (f"{n} instances; {downstream} consumer has a {upstream} producer span among its ancestors in "
                f"{causal}/{n}; starts after {upstream}'s consumer in {later}/{n}")


def not_dead_backed(cap: Capture, producer: str, event: str) -> tuple[bool, str]:
    prods = cap.producers(producer, event)
    consumed = sum(1 for p in prods if any(c.kind == "CONSUMER" for c in cap.children.get(p.id, [])))
    by = collections.Counter(c.service for p in prods for c in cap.children.get(p.id, []) if c.kind == "CONSUMER")
    ok = len(prods) > 0 and consumed == len(prods)
    return ok, f"{len(prods)} {producer} producer spans for {event}; consumed (child CONSUMER span) {consumed}; by {dict(by)}"


def not_orphan_backed(cap: Capture, consumer: str, event: str) -> tuple[bool, str]:
    cons = cap.consumers(consumer, event)
    parented = [s for s in cons if s.parent in cap.by_id and cap.by_id[s.parent].kind == "PRODUCER"]
    by = collections.Counter(cap.by_id[s.parent].service for s in parented)
    no_key = sum(1 for s in cons if "messaging.rabbitmq.routing_key" not in s.attrs)
    ok = len(cons) > 0 and len(parented) == len(cons)
    return ok, (f"{len(cons)} {consumer} consumer spans; parent is a producer span in {len(parented)} "
                f"(producers {dict(by)}); spans without a routing-key attribute {no_key}")


def check_entry(cap: Capture, entry: dict, negative: bool) -> tuple[bool, str]:
    kind, svcs = entry["kind"], entry.get("services", [])
    event, resource = entry.get("event"), entry.get("resource")
    if not negative:
        if kind == "implicit_ordering" and svcs == ["payments", "ledger"]:
            return implicit_ordering_backed(cap, "payments", "ledger", event)
        if kind == "shared_data_coupling" and svcs == ["payments", "ledger"]:
            return shared_data_backed(cap, "payments", "ledger", resource)
        if kind == "retry_loop" and svcs == ["ledger"]:
            return retry_loop_backed(cap, "ledger")
        if kind == "orphan_event" and svcs == ["payments"]:
            return orphan_backed(cap, "payments", event)
    else:
        if kind == "implicit_ordering" and "fraud" in svcs:
            return concurrent_backed(cap, svcs[0], svcs[1], "payment.requested")
        if kind == "implicit_ordering" and svcs == ["payments", "receipts"]:
            return downstream_backed(cap, "payments", "receipts")
        if kind == "dead_event" and svcs == ["payments"]:
            return not_dead_backed(cap, "payments", event)
        if kind == "orphan_event" and svcs == ["ledger"]:
            return not_orphan_backed(cap, "ledger", event)
    return False, "no check for this entry"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--capture", type=Path, default=HERE / "capture.otlp.jsonl.gz")
    ap.add_argument("--truth", type=Path, default=HERE / "truth.yaml")
    args = ap.parse_args(argv)
    truth = load_truth(args.truth)
    cap = Capture(load_spans(args.capture))
    rows = []
    for wf in truth.get("workflows", []):
        rows.append(("workflow", f"{wf['entry']['service']} {wf['entry']['operation']}", *check_workflow(cap, wf)))
    edges = observed_edges(cap)
    for edge in truth.get("edges", []):
        rows.append(("edge", f"{edge['source']} -> {edge['target']} ({edge.get('event') or edge['via']})",
                     *check_edge(cap, edge, edges)))
    declared = {(e["source"], e["target"], e["via"], e.get("event")) for e in truth.get("edges", [])}
    extra = {k: v for k, v in edges.items() if k not in declared}
    rows.append(("edges", "no undeclared edge", not extra, f"observed {len(edges)} edges; undeclared {extra or 'none'}"))
    for f in truth.get("findings", []):
        label = f"{f['kind']} {f.get('services')} {f.get('event') or f.get('resource') or ''}".strip()
        rows.append(("finding", label, *check_entry(cap, f, negative=False)))
    for m in truth.get("must_not", []):
        label = f"{m['kind']} {m.get('services')} {m.get('event') or m.get('resource') or ''}".strip()
        rows.append(("must_not", label, *check_entry(cap, m, negative=True)))
    print(f"{len(cap.spans)} spans, {len(cap.by_trace)} traces, services "
          f"{dict(sorted(collections.Counter(s.service for s in cap.spans).items()))}")
    width = max(len(r[1]) for r in rows)
    failed = 0
    for section, label, ok, evidence in rows:
        failed += not ok
        print(f"{'OK  ' if ok else 'FAIL'} {section:<9} {label:<{width}}  {evidence}")
    print(f"{len(rows) - failed} backed, {failed} not backed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
