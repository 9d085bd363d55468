"""Recompute, from the spans alone, the evidence behind every entry of truth.yaml (standard library only).

    python sample_traces/captures/rabbitmq_pika/inspect_capture.py [--capture FILE] [--truth FILE]

Prints one row per workflow / edge / finding / must_not entry with the numbers that back it and
exits 0 when every entry is backed by the data, 1 otherwise.

What the spans give (see README.md): pika producer spans "shop send" (nested twice per publish),
consumer spans "shop receive" whose parent is the producer span (same trace), `messaging.message.id`,
sqlite3 CLIENT spans with `db.statement`, requests CLIENT / flask SERVER spans. They carry the
exchange only (`messaging.destination: shop`), never the routing key, so an event is told apart by
the position of its publish inside shop-api's POST /orders handler, which is fixed by construction:
the first publish is `order.placed`, the second `order.audited` (see services/shop_api.py).
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
EVENT_PUBLISH_INDEX = {"order.placed": 0, "order.audited": 1}  # order of basic_publish in POST /orders
ENTRY_ROUTE = ("shop-api", "POST /orders")
WRITE_RE = re.compile(r"^\s*(?:INSERT\s+(?:OR\s+\w+\s+)?INTO|UPDATE|DELETE\s+FROM|REPLACE\s+INTO)\s+\"?(\w+)", re.IGNORECASE)
READ_RE = re.compile(r"\b(?:FROM|JOIN)\s+\"?(\w+)", re.IGNORECASE)


# ----------------------------------------------------------------------------- truth.yaml (flow subset)
def _parse_value(text: str):
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        return [x.strip() for x in text[1:-1].split(",") if x.strip()]
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return text


def _parse_flow_map(text: str) -> dict:
    """`{k: v, k: [a, b], why: free text, commas allowed}` - `why` must come last."""
    body = text.strip()[1:-1]
    out: dict = {}
    why = None
    m = re.search(r"(?:^|,)\s*why:\s*(.*)$", body)
    if m:
        why = m.group(1).strip()
        body = body[: m.start()]
    parts, depth, cur = [], 0, ""
    for ch in body:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    for part in parts:
        key, _, value = part.partition(":")
        out[key.strip()] = _parse_value(value)
    if why is not None:
        out["why"] = why
    return out


def load_truth(path: Path) -> dict:
    truth: dict = {"workflows": [], "edges": [], "findings": [], "must_not": []}
    section = None
    current_wf = None
    for raw in path.read_text().splitlines():
        line = raw.split("  #")[0].rstrip() if "{" not in raw else re.sub(r"\}\s+#.*$", "}", raw.rstrip())
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line.startswith(" "):
            key = line.split(":")[0]
            section = key if key in truth else None
            if key == "scenario":
                truth["scenario"] = line.split(":", 1)[1].strip()
            continue
        if section is None:
            continue
        stripped = line.strip()
        if section == "workflows":
            if stripped.startswith("- entry:"):
                current_wf = {"entry": _parse_flow_map(stripped.split(":", 1)[1])}
                truth["workflows"].append(current_wf)
            elif current_wf is not None and ":" in stripped:
                k, _, v = stripped.partition(":")
                current_wf[k.strip()] = _parse_value(v)
        elif stripped.startswith("- {"):
            truth[section].append(_parse_flow_map(stripped[2:]))
    return truth


# ----------------------------------------------------------------------------- spans
def _value(v: dict):
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in v:
            return v[key]
    if "intValue" in v:
        return int(v["intValue"])
    return v


def load_spans(path: Path) -> list[dict]:
    spans = []
    with gzip.open(path, "rt") as fh:
        for line in fh:
            if not line.strip():
                continue
            doc = json.loads(line)
            for rs in doc.get("resourceSpans", []):
                res = {a["key"]: _value(a["value"]) for a in rs.get("resource", {}).get("attributes", [])}
                for ss in rs.get("scopeSpans", []):
                    for s in ss.get("spans", []):
                        spans.append({
                            "svc": res.get("service.name"),
                            "scope": ss.get("scope", {}).get("name", ""),
                            "kind": s.get("kind", "").replace("SPAN_KIND_", ""),
                            "name": s.get("name", ""),
                            "trace": s["traceId"],
                            "id": s["spanId"],
                            "parent": s.get("parentSpanId") or None,
                            "start": int(s["startTimeUnixNano"]),
                            "end": int(s["endTimeUnixNano"]),
                            "status": s.get("status", {}).get("code", "STATUS_CODE_UNSET"),
                            "attrs": {a["key"]: _value(a["value"]) for a in s.get("attributes", [])},
                        })
    return spans


class Capture:
    def __init__(self, spans: list[dict]):
        self.spans = spans
        self.by_id = {s["id"]: s for s in spans}
        self.children: dict[str, list[dict]] = defaultdict(list)
        for s in spans:
            if s["parent"]:
                self.children[s["parent"]].append(s)
        for kids in self.children.values():
            kids.sort(key=lambda s: s["start"])
        self.services = sorted({s["svc"] for s in spans})

        # one instance per POST /orders server span; its publishes in order (outer producer spans)
        self.instances = []
        for s in sorted(spans, key=lambda s: s["start"]):
            if (s["svc"], s["kind"], s["name"]) == (ENTRY_ROUTE[0], "SERVER", ENTRY_ROUTE[1]):
                pubs = [c for c in self.children[s["id"]] if c["kind"] == "PRODUCER"]
                self.instances.append({"entry": s, "publishes": pubs})
        self.pub_event: dict[str, str] = {}  # outer producer span id -> event name (by publish position)
        for inst in self.instances:
            for ev, idx in EVENT_PUBLISH_INDEX.items():
                if idx < len(inst["publishes"]):
                    self.pub_event[inst["publishes"][idx]["id"]] = ev
        # deliveries: consumer spans, with the outer producer span they descend from
        self.deliveries: list[dict] = []
        for s in spans:
            if s["kind"] == "CONSUMER":
                outer = self.outer_producer(s)
                self.deliveries.append({
                    "span": s, "svc": s["svc"], "producer": outer,
                    "event": self.pub_event.get(outer["id"]) if outer else None,
                    "msg": s["attrs"].get("messaging.message.id"),
                })

    def outer_producer(self, span: dict) -> dict | None:
        p = self.by_id.get(span["parent"]) if span["parent"] else None
        if p is None or p["kind"] != "PRODUCER":
            return None
        while p["parent"] and self.by_id.get(p["parent"], {}).get("kind") == "PRODUCER":
            p = self.by_id[p["parent"]]
        return p

    def descendants(self, span: dict, same_service: bool = True) -> list[dict]:
        out, stack = [], list(self.children[span["id"]])
        while stack:
            s = stack.pop()
            if same_service and s["svc"] != span["svc"]:
                continue
            out.append(s)
            stack.extend(self.children[s["id"]])
        return out

    def is_ancestor(self, a: dict, b: dict) -> bool:
        p = b
        while p["parent"] and p["parent"] in self.by_id:
            p = self.by_id[p["parent"]]
            if p["id"] == a["id"]:
                return True
        return False

    def deliveries_of(self, inst: dict, svc: str, event: str) -> list[dict]:
        idx = EVENT_PUBLISH_INDEX[event]
        if idx >= len(inst["publishes"]):
            return []
        pid = inst["publishes"][idx]["id"]
        return sorted((d for d in self.deliveries if d["svc"] == svc and d["producer"] and
                       d["producer"]["id"] == pid), key=lambda d: d["span"]["start"])

    @staticmethod
    def sql_tables(span: dict) -> tuple[set, set]:
        stmt = span["attrs"].get("db.statement") or span["attrs"].get("db.query.text") or ""
        writes = set(WRITE_RE.findall(stmt))
        reads = set(READ_RE.findall(stmt)) - writes if not writes else set()
        return writes, reads

    def db_spans(self, span: dict, table: str | None = None, mode: str | None = None) -> list[dict]:
        out = []
        for s in sorted(self.descendants(span), key=lambda s: s["start"]):
            if "db.system" not in s["attrs"]:
                continue
            w, r = self.sql_tables(s)
            if table is None or (mode in (None, "w") and table in w) or (mode in (None, "r") and table in r):
                out.append(s)
        return out

    def last_write_end(self, inst: dict, svc: str, event: str) -> int | None:
        ends = []
        for d in self.deliveries_of(inst, svc, event):
            for s in self.db_spans(d["span"]):
                if self.sql_tables(s)[0]:
                    ends.append(s["end"])
        return max(ends) if ends else None

    def table_access(self) -> dict[str, dict[str, Counter]]:
        acc: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
        for s in self.spans:
            if "db.system" in s["attrs"]:
                w, r = self.sql_tables(s)
                for t in w:
                    acc[t][s["svc"]]["write"] += 1
                for t in r:
                    acc[t][s["svc"]]["read"] += 1
        return acc

    def callbacks(self, d: dict) -> list[tuple[dict, dict]]:
        """(client span, server span in another service) pairs made while handling delivery d."""
        out = []
        for c in self.descendants(d["span"]):
            if c["kind"] == "CLIENT":
                for srv in self.children[c["id"]]:
                    if srv["kind"] == "SERVER" and srv["svc"] != d["svc"]:
                        out.append((c, srv))
        return out

    def observed_edges(self) -> Counter:
        edges: Counter = Counter()
        for s in self.spans:
            if s["kind"] == "SERVER" and s["parent"] in self.by_id:
                p = self.by_id[s["parent"]]
                if p["kind"] == "CLIENT" and p["svc"] != s["svc"]:
                    edges[(p["svc"], s["svc"], "call", None)] += 1
        for d in self.deliveries:
            if d["producer"]:
                edges[(d["producer"]["svc"], d["svc"], "event", d["event"])] += 1
        return edges


# ----------------------------------------------------------------------------- checks
def pct(n: int, d: int) -> str:
    return f"{n}/{d} ({100.0 * n / d:.0f}%)" if d else f"{n}/0"


def check_workflow(cap: Capture, wf: dict):
    entry = wf["entry"]
    n = sum(1 for i in cap.instances if (i["entry"]["svc"], i["entry"]["name"]) == (entry["service"], entry["operation"]))
    roots = Counter()
    for inst in cap.instances:
        p = inst["entry"]
        while p["parent"] in cap.by_id:
            p = cap.by_id[p["parent"]]
        roots[(p["svc"], p["kind"], p["name"], p["parent"] is None)] += 1
    ok = n == int(wf.get("instances", n)) and n > 0 and all(k[3] for k in roots)
    root_txt = ", ".join(f"{svc} {kind} '{name}' x{c}" for (svc, kind, name, _), c in roots.items())
    return ok, f"{n} '{entry['operation']}' server spans (truth {wf.get('instances')}); trace roots: {root_txt}"


def check_edge(cap: Capture, e: dict, observed: Counter):
    key = (e["source"], e["target"], e["via"], e.get("event"))
    n = observed.get(key, 0)
    return n > 0, f"{n} {'client->server pairs' if e['via'] == 'call' else 'deliveries'} observed"


def check_edges_complete(cap: Capture, edges: list[dict], observed: Counter):
    truth = {(e["source"], e["target"], e["via"], e.get("event")) for e in edges}
    extra = {k: v for k, v in observed.items() if k not in truth}
    return not extra, ("no edge in the spans beyond truth.edges" if not extra else f"untruthed edges: {extra}")


def overlap_stats(cap: Capture, a: str, b: str, event: str):
    """Per instance: does b's first delivery start before a's last delivery ends; who writes last."""
    overlap = a_first = b_first = both = 0
    for inst in cap.instances:
        da, db_ = cap.deliveries_of(inst, a, event), cap.deliveries_of(inst, b, event)
        wa, wb = cap.last_write_end(inst, a, event), cap.last_write_end(inst, b, event)
        if not da or not db_ or wa is None or wb is None:
            continue
        both += 1
        if db_[0]["span"]["start"] < da[-1]["span"]["end"]:
            overlap += 1
        if wa < wb:
            a_first += 1
        else:
            b_first += 1
    return both, overlap, a_first, b_first


def check_implicit_ordering(cap: Capture, f: dict, positive: bool):
    earlier, later = f["services"]
    event = f.get("event", "order.placed")
    both, overlap, e_first, l_first = overlap_stats(cap, earlier, later, event)
    if not positive:
        lo = min(e_first, l_first)
        ok = both > 0 and lo >= max(3, both // 10)
        return ok, (f"last writes: {earlier} first in {pct(e_first, both)}, {later} first in "
                    f"{pct(l_first, both)} (order varies both ways); {later} started before {earlier} "
                    f"finished in {pct(overlap, both)}")
    # positive: later's effect always after earlier's; when later looked too early it was redelivered
    tables_w = {t for t, svcs in cap.table_access().items() if svcs.get(earlier, {}).get("write")}
    race = race_redelivered = calm = calm_redelivered = final_after = causal = 0
    for inst in cap.instances:
        de, dl = cap.deliveries_of(inst, earlier, event), cap.deliveries_of(inst, later, event)
        if not de or not dl:
            continue
        writes = [s for d in de for s in cap.db_spans(d["span"]) if cap.sql_tables(s)[0] & tables_w]
        if not writes:
            continue
        w_end = max(s["end"] for s in writes)
        reads_first = [s for s in cap.db_spans(dl[0]["span"]) if cap.sql_tables(s)[1] & tables_w]
        if any(cap.is_ancestor(x["span"], y["span"]) or cap.is_ancestor(y["span"], x["span"])
               for x in de for y in dl):
            causal += 1
        if reads_first and reads_first[0]["start"] < w_end:
            race += 1
            race_redelivered += len(dl) > 1
        else:
            calm += 1
            calm_redelivered += len(dl) > 1
        final_reads = [s for s in cap.db_spans(dl[-1]["span"]) if cap.sql_tables(s)[1] & tables_w]
        if final_reads and final_reads[0]["start"] >= w_end:
            final_after += 1
    n = race + calm
    ok = (n > 0 and 0 < race <= n // 2 and race_redelivered == race and calm_redelivered == 0
          and final_after == n and causal == 0)
    return ok, (f"{later}'s first read of {earlier}'s table started before {earlier}'s write ended in "
                f"{pct(race, n)} instances, all of them redelivered: {race_redelivered}/{race}; "
                f"redelivered otherwise: {calm_redelivered}/{calm}; {later}'s last attempt read after the "
                f"write in {pct(final_after, n)}; consumer spans overlap in {pct(overlap, both)}; "
                f"causal path between them in {causal}")


def check_shared_data(cap: Capture, f: dict, positive: bool):
    writer, reader = f["services"]
    table = f["resource"]
    acc = cap.table_access().get(table, {})
    who = ", ".join(f"{svc} {dict(c)}" for svc, c in sorted(acc.items())) or "nobody"
    if positive:
        ok = acc.get(writer, {}).get("write", 0) > 0 and acc.get(reader, {}).get("read", 0) > 0
    else:
        ok = not (writer in acc and reader in acc)
    return ok, f"SQL naming `{table}`: {who}"


def check_callback(cap: Capture, f: dict, positive: bool):
    consumer, called = f["services"]
    event = f.get("event", "order.placed")
    ds = [d for d in cap.deliveries if d["svc"] == consumer and d["event"] == event]
    with_cb = [d for d in ds if any(srv["svc"] == called for _, srv in cap.callbacks(d))]
    producers = Counter(d["producer"]["svc"] for d in ds if d["producer"])
    routes = Counter(srv["name"] for d in with_cb for _, srv in cap.callbacks(d) if srv["svc"] == called)
    txt = (f"{pct(len(with_cb), len(ds))} {consumer} deliveries of {event} (producer {dict(producers)}) "
           f"call {called} synchronously {dict(routes) or ''}")
    ok = (len(ds) > 0 and len(with_cb) == len(ds)) if positive else (len(ds) > 0 and not with_cb)
    return ok, txt


def redelivery_stats(cap: Capture, svc: str):
    per_msg: dict[tuple, list[dict]] = defaultdict(list)
    for d in cap.deliveries:
        if d["svc"] == svc:
            per_msg[(d["producer"]["id"] if d["producer"] else None, d["msg"])].append(d)
    multi = {k: v for k, v in per_msg.items() if len(v) > 1}
    hist = Counter(len(v) for v in per_msg.values())
    same_parent = all(len({d["span"]["parent"] for d in v}) == 1 for v in multi.values())
    errors = sum(1 for v in per_msg.values() for d in v if d["span"]["status"] == "STATUS_CODE_ERROR")
    return per_msg, multi, hist, same_parent, errors


def check_retry(cap: Capture, f: dict, positive: bool):
    svc = f["services"][0]
    per_msg, multi, hist, same_parent, errors = redelivery_stats(cap, svc)
    txt = (f"{pct(len(multi), len(per_msg))} messages delivered to {svc} more than once "
           f"(deliveries per message: {dict(sorted(hist.items()))}); redeliveries share message id and parent "
           f"producer span: {same_parent}; consumer spans with ERROR status: {errors}")
    ok = (len(multi) > 0 and same_parent) if positive else (len(per_msg) > 0 and not multi)
    return ok, txt


def check_dead_event(cap: Capture, f: dict, positive: bool):
    producer = f["services"][0]
    event = f["event"]
    pubs = [p for p, ev in cap.pub_event.items() if ev == event and cap.by_id[p]["svc"] == producer]
    consumed = Counter(d["svc"] for d in cap.deliveries if d["event"] == event)
    pub_msgs = set()
    for p in pubs:
        stack = [cap.by_id[p]]
        while stack:
            s = stack.pop()
            if s["kind"] == "PRODUCER":
                pub_msgs.add(s["attrs"].get("messaging.message.id"))
                stack.extend(cap.children[s["id"]])
    msg_seen = sum(1 for d in cap.deliveries if d["msg"] in pub_msgs)
    n_inst = len(cap.instances)
    per_inst_all = sum(1 for inst in cap.instances
                       if all(cap.deliveries_of(inst, c, event) for c in ("inventory", "shipping", "billing")))
    txt = (f"{len(pubs)} publishes of {event} by {producer} ({n_inst} instances); consumer spans below them: "
           f"{dict(consumed) or 0}; consumer spans carrying their message ids: {msg_seen}")
    if positive:
        ok = len(pubs) > 0 and not consumed and msg_seen == 0
    else:
        ok = len(pubs) > 0 and per_inst_all == n_inst
        txt += f"; instances consumed by all three consumers: {per_inst_all}/{n_inst}"
    return ok, txt


def check_orphan(cap: Capture, f: dict, positive: bool):
    consumer = f["services"][0]
    event = f["event"]
    ds = [d for d in cap.deliveries if d["svc"] == consumer]
    with_prod = [d for d in ds if d["producer"] is not None and d["event"] == event]
    txt = f"{pct(len(with_prod), len(ds))} {consumer} deliveries have {event}'s producer span as parent"
    ok = (len(ds) > 0 and not with_prod) if positive else (len(ds) > 0 and len(with_prod) == len(ds))
    return ok, txt


CHECKS = {
    "implicit_ordering": check_implicit_ordering,
    "shared_data_coupling": check_shared_data,
    "callback_coupling": check_callback,
    "retry_loop": check_retry,
    "dead_event": check_dead_event,
    "orphan_event": check_orphan,
}


def label(entry: dict) -> str:
    extra = entry.get("event") or entry.get("resource") or ""
    return f"{entry['kind']} [{', '.join(entry['services'])}]" + (f" {extra}" if extra else "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--capture", type=Path, default=HERE / "capture.otlp.jsonl.gz")
    ap.add_argument("--truth", type=Path, default=HERE / "truth.yaml")
    args = ap.parse_args()
    truth = load_truth(args.truth)
    cap = Capture(load_spans(args.capture))
    kinds = Counter((s["svc"], s["kind"], s["name"]) for s in cap.spans)
    print(f"capture: {len(cap.spans)} spans, services {cap.services}, {len(cap.instances)} instances")
    for (svc, kind, name), n in sorted(kinds.items()):
        print(f"  {n:5d}  {svc:10s} {kind:9s} {name}")
    rows = []
    observed = cap.observed_edges()
    for wf in truth["workflows"]:
        rows.append(("workflow", f"{wf['entry']['service']} {wf['entry']['operation']}", *check_workflow(cap, wf)))
    for e in truth["edges"]:
        rows.append(("edge", f"{e['source']} -> {e['target']} {e['via']} {e.get('event') or ''}".rstrip(),
                     *check_edge(cap, e, observed)))
    rows.append(("edge", "(edges complete)", *check_edges_complete(cap, truth["edges"], observed)))
    for section, positive in (("findings", True), ("must_not", False)):
        for f in truth[section]:
            fn = CHECKS.get(f["kind"])
            if fn is None:
                rows.append((section, label(f), False, "no check for this kind"))
            else:
                rows.append((section, label(f), *fn(cap, f, positive)))
    width = max(len(r[1]) for r in rows)
    print()
    print(f"{'section':9s} | {'entry':{width}s} | ok  | evidence")
    print(f"{'-' * 9}-+-{'-' * width}-+-----+---------")
    for section, name, ok, txt in rows:
        print(f"{section:9s} | {name:{width}s} | {'yes' if ok else 'NO '} | {txt}")
    bad = [r for r in rows if not r[2]]
    print(f"\n{len(rows) - len(bad)}/{len(rows)} entries backed by the data")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
