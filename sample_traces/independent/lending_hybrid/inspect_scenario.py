"""Recompute, from the spans alone, the evidence behind every entry of truth.yaml (standard library only).

    python sample_traces/independent/lending_hybrid/inspect_scenario.py [--dump FILE] [--truth FILE]
                                                                        [--instances N]

Prints one row per workflow / edge / finding / must_not entry with the numbers that back it and exits
0 when every entry is backed by the data, 1 otherwise. `--instances N` says the dump was generated with
`generate.py --instances N` (the workflow counts of truth.yaml, written for N = 160, are then recomputed
with the same formulas as generate.py's `counts`).

The spans mix two semantic-convention generations (README.md, "What the spans carry"), so every
attribute is read under both names: `messaging.destination.name` / `messaging.destination`,
`messaging.message.id` / `messaging.message_id`, `db.query.text` / `db.statement`, `db.namespace` /
`db.name`, `server.address` / `net.peer.name`, `http.request.method` / `http.method`,
`http.response.status_code` / `http.status_code`, `url.full` / `http.url`. A consumer span is tied to
the producer span of its message by its parent, by a span link, or - when neither is there - by the
same message id on a producer span of the same destination. Tables are taken from the SQL text by a
regular expression; a table is (server, database, table).
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
sys.path.insert(0, str(HERE.parent))  # truth_reader.py, beside the scenarios
from truth_reader import attr_value, load_truth

WRITE_RE = re.compile(r"^\s*(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+\"?(\w+)", re.IGNORECASE)
UNDO_RE = re.compile(r"^\s*(?:UPDATE|DELETE\s+FROM)\s+\"?(\w+)", re.IGNORECASE)
READ_RE = re.compile(r"\b(?:FROM|JOIN)\s+\"?(\w+)", re.IGNORECASE)
# attribute namespaces owned by the semantic conventions: what is left on a producer span is the event's payload
SEMCONV_PREFIXES = ("messaging.", "server.", "network.", "net.", "http.", "url.", "db.", "rpc.", "error.",
                    "peer.", "exception.", "client.", "user_agent.")
GOD_MIN_SERVICES = 3        # a coordinator calls at least three internal services per instance ...
GOD_MIN_ENDPOINTS_PER = 2   # ... and on average two or more endpoints of each
GOD_MIN_SHARE = 0.9         # ... in (nearly) all of its instances
ORCH_MIN_PRODUCERS = 3      # an implicit orchestrator consumes the events of three or more services


# ----------------------------------------------------------------------------- spans
def first(attrs: dict, *keys: str):
    for k in keys:
        if k in attrs:
            return attrs[k]
    return None


def load_spans(path: Path) -> list[dict]:
    spans = []
    with gzip.open(path, "rt") as fh:
        for line in fh:
            if not line.strip():
                continue
            for rs in json.loads(line).get("resourceSpans", []):
                res = {a["key"]: attr_value(a["value"]) for a in rs.get("resource", {}).get("attributes", [])}
                for ss in rs.get("scopeSpans", []):
                    for s in ss.get("spans", []):
                        a = {x["key"]: attr_value(x["value"]) for x in s.get("attributes", [])}
                        spans.append({
                            "svc": res.get("service.name"), "ver": res.get("service.version"),
                            "kind": s.get("kind", "").replace("SPAN_KIND_", ""), "name": s.get("name", ""),
                            "trace": s["traceId"], "id": s["spanId"], "parent": s.get("parentSpanId") or None,
                            "start": int(s["startTimeUnixNano"]), "end": int(s["endTimeUnixNano"]),
                            "error": s.get("status", {}).get("code") == "STATUS_CODE_ERROR",
                            "exceptions": [e for e in s.get("events", []) if e.get("name") == "exception"],
                            "links": [(lk["traceId"], lk["spanId"]) for lk in s.get("links", [])],
                            "attrs": a,
                            "dest": first(a, "messaging.destination.name", "messaging.destination"),
                            "msg": first(a, "messaging.message.id", "messaging.message_id"),
                            "sql": first(a, "db.query.text", "db.statement"),
                            "method": first(a, "http.request.method", "http.method"),
                            "status": first(a, "http.response.status_code", "http.status_code"),
                            "url": first(a, "url.full", "http.url"),
                            "peer": first(a, "server.address", "net.peer.name"),
                        })
    return spans


def pct(a: int, b: int) -> str:
    return f"{a}/{b} ({100 * a / b:.1f}%)" if b else f"{a}/0"


def median(values: list) -> float:
    values = sorted(values)
    return values[len(values) // 2] if values else 0


ENTRIES = {"applications": ("loan-api", "POST /applications"),
           "accepted": ("loan-api", "POST /offers/{offer_id}/accept"),
           "collections": ("collections", "POST /collections/cases")}


class Scenario:
    def __init__(self, spans: list[dict]):
        self.spans = spans
        self.by_id = {s["id"]: s for s in spans}
        self.children: dict[str, list[dict]] = defaultdict(list)
        for s in spans:
            if s["parent"]:
                self.children[s["parent"]].append(s)
        self.producers = [s for s in spans if s["kind"] == "PRODUCER"]
        prod_by_msg = {(p["dest"], p["msg"]): p for p in self.producers}
        self.deliveries: list[dict] = []
        self.delivery_of: dict[str, dict] = {}
        self.consumed_from: dict[str, list[dict]] = defaultdict(list)  # producer span id -> deliveries
        for s in spans:
            if s["kind"] != "CONSUMER":
                continue
            prods = []
            p = self.by_id.get(s["parent"]) if s["parent"] else None
            if p is not None and p["kind"] == "PRODUCER":
                prods.append((p, "parent"))
            for _, sid in s["links"]:
                if sid in self.by_id and self.by_id[sid]["kind"] == "PRODUCER":
                    prods.append((self.by_id[sid], "link"))
            if not prods and (s["dest"], s["msg"]) in prod_by_msg:
                prods.append((prod_by_msg[(s["dest"], s["msg"])], "message id"))
            d = {"span": s, "svc": s["svc"], "event": s["dest"], "msg": s["msg"], "producers": prods}
            self.deliveries.append(d)
            self.delivery_of[s["id"]] = d
            for p, _ in prods:
                self.consumed_from[p["id"]].append(d)
        self.roots = [s for s in spans if not s["parent"]]
        self.instances = {k: sorted((s for s in self.roots if s["kind"] == "SERVER" and (s["svc"], s["name"]) == v),
                                    key=lambda s: s["start"]) for k, v in ENTRIES.items()}
        self.by_trace: dict[str, list[dict]] = defaultdict(list)
        for s in spans:
            self.by_trace[s["trace"]].append(s)

    # ----- structure
    def descendants(self, span: dict, same_service: bool = True) -> list[dict]:
        out, stack = [], list(self.children[span["id"]])
        while stack:
            s = stack.pop()
            if same_service and s["svc"] != span["svc"]:
                continue
            out.append(s)
            stack.extend(self.children[s["id"]])
        return out

    def ancestors(self, span: dict) -> list[dict]:
        """The parent chain, continued across a link or a message-id tie when a consumer span has no parent."""
        out, p = [], span
        while True:
            if p["parent"] and p["parent"] in self.by_id:
                p = self.by_id[p["parent"]]
            elif p["kind"] == "CONSUMER":
                d = self.delivery_of.get(p["id"])
                if not d or not d["producers"]:
                    return out
                p = d["producers"][0][0]
            else:
                return out
            out.append(p)

    def handler(self, span: dict) -> dict | None:
        """The nearest SERVER or CONSUMER span of the same service at or above span."""
        p = span
        while p is not None and p["svc"] == span["svc"]:
            if p["kind"] in ("SERVER", "CONSUMER"):
                return p
            p = self.by_id.get(p["parent"]) if p["parent"] else None
        return None

    @staticmethod
    def tables(span: dict) -> tuple[set, set]:
        text = span["sql"] or ""
        writes = set(WRITE_RE.findall(text))
        return writes, set(READ_RE.findall(text)) - writes

    def calls(self, span: dict) -> list[tuple[dict, dict | None]]:
        """(CLIENT http/grpc span, the SERVER span it reached or None) below span, same service."""
        out = []
        for c in sorted(self.descendants(span), key=lambda s: s["start"]):
            if c["kind"] == "CLIENT" and (c["method"] or "rpc.system" in c["attrs"]):
                srv = next((k for k in self.children[c["id"]] if k["kind"] == "SERVER"), None)
                out.append((c, srv))
        return out

    def observed_edges(self) -> Counter:
        edges: Counter = Counter()
        for d in self.deliveries:
            for p, _ in d["producers"]:
                edges[(p["svc"], d["svc"], "event", d["event"])] += 1
        for s in self.spans:
            if s["kind"] == "CLIENT" and (s["method"] or "rpc.system" in s["attrs"]):
                srv = next((k for k in self.children[s["id"]] if k["kind"] == "SERVER"), None)
                edges[(s["svc"], srv["svc"] if srv else s["peer"], "call", None)] += 1
        return edges


# ----------------------------------------------------------------------------- checks
def check_workflow(sc: Scenario, wf: dict, expected: int):
    svc, op = wf["entry"]["service"], wf["entry"]["operation"]
    roots = [s for s in sc.roots if s["svc"] == svc and s["kind"] == "SERVER" and s["name"] == op]
    return len(roots) == expected, f"{len(roots)} root SERVER spans (expected {expected})"


def check_edge(sc: Scenario, e: dict, observed: Counter):
    key = (e["source"], e["target"], e["via"], e.get("event"))
    n = observed.get(key, 0)
    how = ""
    if e["via"] == "event":
        ways = Counter(w for d in sc.deliveries if d["svc"] == e["target"] and d["event"] == e["event"]
                       for p, w in d["producers"] if p["svc"] == e["source"])
        how = f" ({dict(ways)})"
    return n > 0, f"{n} observed{how}"


def check_edges_complete(sc: Scenario, edges: list[dict], observed: Counter):
    known = {(e["source"], e["target"], e["via"], e.get("event")) for e in edges}
    extra = sorted(f"{k[0]}->{k[1]} {k[2]} {k[3] or ''}".strip() for k in observed if k not in known)
    return not extra, f"observed edges not in truth: {extra or 'none'}"


def check_well_formed(sc: Scenario):
    """Every parent is in the dump, in the same trace; a non-consumer child of the same service and version
    lies within its parent; every consumer span is tied to a producer span (parent, link or message id)."""
    missing = sum(1 for s in sc.spans if s["parent"] and s["parent"] not in sc.by_id)
    cross = sum(1 for s in sc.spans if s["parent"] in sc.by_id and sc.by_id[s["parent"]]["trace"] != s["trace"])
    outside = 0
    for s in sc.spans:
        p = sc.by_id.get(s["parent"]) if s["parent"] else None
        if p and (p["svc"], p["ver"]) == (s["svc"], s["ver"]) and s["kind"] != "CONSUMER":
            outside += not p["start"] <= s["start"] <= s["end"] <= p["end"]
    dangling = sum(1 for s in sc.spans for _, sid in s["links"] if sid not in sc.by_id)
    untied = sum(1 for d in sc.deliveries if not d["producers"])
    ways = Counter(w for d in sc.deliveries for _, w in d["producers"][:1])
    ok = not (missing or cross or outside or dangling or untied)
    return ok, (f"parents missing: {missing}; parent in another trace: {cross}; same-service children outside "
                f"their parent: {outside}; dangling links: {dangling}; consumer spans tied to their producer "
                f"by {dict(ways)}, untied: {untied}")


def clock_offsets(sc: Scenario) -> dict[str, float]:
    """Per service: median of (consumer/server start - the remote parent's start) minus the overall median:
    a host whose clock is off stands out by tens of ms."""
    lag: dict[str, list[int]] = defaultdict(list)
    for s in sc.spans:
        p = sc.by_id.get(s["parent"]) if s["parent"] else None
        if p and p["svc"] != s["svc"] and s["kind"] == "SERVER":
            lag[s["svc"]].append(s["start"] - p["start"])
    for d in sc.deliveries:
        for p, w in d["producers"][:1]:
            if w == "parent" and p["svc"] != d["svc"]:
                lag[d["svc"]].append(d["span"]["start"] - p["end"])
    return {svc: median(v) / 1e6 for svc, v in sorted(lag.items())}


def check_implicit_orchestrator(sc: Scenario, f: dict, positive: bool):
    svc = f["services"][0]
    mine = [d for d in sc.deliveries if d["svc"] == svc]
    inputs = Counter((d["event"], p["svc"]) for d in mine for p, _ in d["producers"][:1])
    producers = {p for _, p in inputs} - {svc}
    pubs = [p for p in sc.producers if p["svc"] == svc]
    relays = Counter()
    for p in pubs:
        h = sc.handler(p)
        if h is not None and h["kind"] == "CONSUMER":
            relays[(h["dest"], p["dest"])] += 1
    relayed = sum(relays.values())
    next_steps = Counter(d["svc"] for p in pubs for d in sc.consumed_from[p["id"]] if d["svc"] != svc)
    # a join: the publishing handler is the last of several deliveries to svc in the trace, the earlier ones
    # published nothing (the state of the others is kept in svc's own tables)
    joins, join_sizes, last_of = 0, Counter(), Counter()
    for p in pubs:
        h = sc.handler(p)
        if h is None or h["kind"] != "CONSUMER":
            continue
        earlier = [d for d in mine if d["span"]["trace"] == h["trace"] and d["span"]["start"] < h["start"]
                   and not any(q["kind"] == "PRODUCER" for q in sc.descendants(d["span"]))]
        earlier = [d for d in earlier if d["event"] != h["dest"]]
        if len(earlier) >= 1:
            joins += 1
            join_sizes[len(earlier) + 1] += 1
            last_of[h["dest"]] += 1
    own_tables = Counter(t for d in mine for s in sc.descendants(d["span"]) if s["sql"] for t in sc.tables(s)[0])
    sync_calls = sum(1 for d in mine for c, srv in sc.calls(d["span"]) if srv)
    txt = (f"{svc} consumes {dict(sorted(inputs.items()))} (producer services other than itself: "
           f"{sorted(producers)}); publishes {len(pubs)}, made inside one of its consumer handlers {relayed} "
           f"({dict(sorted(relays.items()))}); consumed next by {dict(next_steps) or 'nobody else'}; joins (a "
           f"publish from the last of several different deliveries in a trace) {joins}, by size "
           f"{dict(join_sizes)}, triggered by {dict(last_of)}; tables it writes while consuming "
           f"{dict(own_tables)}; synchronous calls to services while consuming: {sync_calls}")
    is_orch = (len(producers) >= ORCH_MIN_PRODUCERS and pubs and relayed == len(pubs) and len(next_steps) >= 2
               and joins > 0)
    return (bool(is_orch) if positive else not is_orch), txt


def instance_calls(sc: Scenario, svc: str) -> list[dict[str, set]]:
    """Per handling span (SERVER / CONSUMER) of svc: internal service called -> endpoints (the SERVER span names)."""
    out = []
    for h in sc.spans:
        if h["svc"] != svc or h["kind"] not in ("SERVER", "CONSUMER"):
            continue
        by: dict[str, set] = defaultdict(set)
        for c, srv in sc.calls(h):
            if srv is not None:
                by[srv["svc"]].add(srv["name"])
        out.append(by)
    return out


def check_god(sc: Scenario, f: dict, positive: bool):
    svc = f["services"][0]
    per = instance_calls(sc, svc)
    calling = [by for by in per if by]
    god = [by for by in calling if len(by) >= GOD_MIN_SERVICES
           and sum(len(v) for v in by.values()) >= GOD_MIN_ENDPOINTS_PER * len(by)]
    endpoints: dict[str, set] = defaultdict(set)
    for by in calling:
        for target, eps in by.items():
            endpoints[target] |= eps
    shape = Counter(tuple(sorted((t, len(e)) for t, e in by.items())) for by in calling)
    sync = 0
    for h in sc.spans:
        if h["svc"] == svc and h["kind"] in ("SERVER", "CONSUMER"):
            sync += sum(1 for c, srv in sc.calls(h) if srv and c["end"] <= h["end"] and c["parent"] == h["id"])
    txt = (f"{len(per)} handling spans of {svc}, {len(calling)} call internal services synchronously ({sync} "
           f"calls inside the caller's span); with >= {GOD_MIN_SERVICES} services and >= {GOD_MIN_ENDPOINTS_PER} "
           f"endpoints each on average: {pct(len(god), len(calling))}; endpoints per service "
           f"{ {t: len(e) for t, e in sorted(endpoints.items())} }; per-instance shapes (service, endpoints) "
           f"{dict(shape.most_common(3))}")
    share = len(god) / len(calling) if calling else 0
    return (share >= GOD_MIN_SHARE if positive else not god), txt


def check_event_cycle(sc: Scenario, f: dict, positive: bool):
    want = set(f["services"])
    recur: Counter = Counter()        # service set of the loop -> producer spans that repeat an event
    recur_events: Counter = Counter()
    traces: dict[frozenset, set] = defaultdict(set)
    depth: Counter = Counter()
    for p in sc.producers:
        chain = sc.ancestors(p)
        same = [i for i, a in enumerate(chain) if a["kind"] == "PRODUCER" and a["dest"] == p["dest"]]
        if not same:
            continue
        seg = [p, *chain[:same[0] + 1]]
        loop = frozenset(s["svc"] for s in seg if s["kind"] in ("PRODUCER", "CONSUMER"))
        recur[loop] += 1
        recur_events[p["dest"]] += 1
        traces[loop].add(p["trace"])
        depth[len(same) + 1] += 1
    # the service-level loop a -> b -> a, with or without an event that recurs
    svc_loops = 0
    for d in sc.deliveries:
        seq = [d["svc"]] + [s["svc"] for s in sc.ancestors(d["span"]) if s["kind"] == "CONSUMER"]
        if len(want) == 1:
            hit = len(seq) >= 2 and seq[0] == seq[1] == next(iter(want))
        else:
            hit = len(seq) >= 3 and seq[0] == seq[2] and {seq[0], seq[1]} == want
        svc_loops += hit
    hits = recur.get(frozenset(want), 0)
    txt = (f"producer spans repeating an event already on their causal chain, by the services of the loop: "
           f"{ {'+'.join(sorted(k)): v for k, v in recur.items()} or 'none'} (events {dict(recur_events) or '-'}; "
           f"traces with the {'+'.join(sorted(want))} loop: {len(traces.get(frozenset(want), ()))}; occurrences "
           f"of the event on one chain: {dict(sorted(depth.items()))}); deliveries closing the service loop "
           f"{' -> '.join(sorted(want))} -> back: {svc_loops}")
    ok = hits > 0 and set(recur) == {frozenset(want)} if positive else hits == 0
    return ok, txt


def payload_keys(span: dict) -> frozenset:
    return frozenset(k for k in span["attrs"] if not k.startswith(SEMCONV_PREFIXES))


def check_schema_drift(sc: Scenario, f: dict, positive: bool):
    svc, event = f["services"][0], f["event"]
    pubs = [p for p in sc.producers if p["svc"] == svc and p["dest"] == event]
    by_ver: dict[str, Counter] = defaultdict(Counter)
    raw_by_ver: dict[str, set] = defaultdict(set)
    values: dict[str, dict[str, set]] = defaultdict(lambda: defaultdict(set))
    for p in pubs:
        by_ver[p["ver"]][payload_keys(p)] += 1
        raw_by_ver[p["ver"]] |= set(p["attrs"])
        for k in payload_keys(p):
            if not k.endswith(".id"):
                values[k][p["ver"]].add(str(p["attrs"][k]))
    versions = sorted(by_ver)
    per_ver = {v: (set(next(iter(c))) if len(c) == 1 else None) for v, c in by_ver.items()}
    consistent = all(s is not None for s in per_ver.values())
    sets = {frozenset(s) for s in per_ver.values() if s is not None}
    consumers = Counter(d["svc"] for p in pubs for d in sc.consumed_from[p["id"]])
    txt = f"{len(pubs)} publishes of {event} by {svc}, versions { {v: sum(c.values()) for v, c in by_ver.items()} }; "
    if len(sets) > 1 and len(versions) == 2:
        a, b = (per_ver[v] for v in versions)
        txt += (f"payload keys only in {versions[0]}: {sorted(a - b)}, only in {versions[1]}: {sorted(b - a)}, "
                f"both: {sorted(a & b)}")
    else:
        txt += f"payload keys (all versions): {sorted(next(iter(sets))) if sets else '-'}"
        changed = {k: {v: sorted(s) for v, s in vs.items()} for k, vs in values.items()
                   if len({frozenset(s) for s in vs.values()}) > 1}
        txt += f"; values that differ between versions: {changed or 'none'}"
    if len(versions) == 2:
        a, b = (raw_by_ver[v] for v in versions)
        txt += f"; raw attribute keys only in {versions[0]}: {sorted(a - b)}, only in {versions[1]}: {sorted(b - a)}"
    txt += f"; consumed by {dict(consumers)}"
    ok = (len(versions) >= 2 and consistent and len(sets) > 1) if positive else (
        len(versions) >= 2 and consistent and len(sets) == 1)
    return ok, txt


def check_missing_compensation(sc: Scenario, f: dict, positive: bool):
    step, failing = f["services"]
    failed = []
    for inst in sc.instances["accepted"] + sc.instances["applications"] + sc.instances["collections"]:
        spans = sc.by_trace[inst["trace"]]
        bad = [s for s in spans if s["svc"] == failing and s["kind"] == "SERVER" and s["error"]]
        if bad:
            failed.append((inst, min(bad, key=lambda s: s["start"])))
    done_before = compensated = 0
    tables: Counter = Counter()
    undo_calls: Counter = Counter()
    for inst, bad in failed:
        spans = sc.by_trace[inst["trace"]]
        steps = [s for s in spans if s["svc"] == step and s["kind"] == "SERVER" and s["end"] <= bad["start"]]
        written = {t for s in steps for d in sc.descendants(s) if d["sql"] for t in sc.tables(d)[0]}
        if written:
            done_before += 1
            tables.update(written)
        later = [s for s in spans if s["svc"] == step and s["kind"] == "SERVER" and s["start"] >= bad["end"]]
        undone = {t for s in later for d in sc.descendants(s) if d["sql"] for t in UNDO_RE.findall(d["sql"])}
        for s in later:
            undo_calls[s["name"]] += 1
        compensated += bool(written & undone)
    ok_inst = [i for i in sc.instances["accepted"] if not any(
        s["svc"] == failing and s["error"] for s in sc.by_trace[i["trace"]])]
    anywhere = Counter(t for s in sc.spans if s["svc"] == step and s["sql"] for t in UNDO_RE.findall(s["sql"]))
    txt = (f"instances where {failing} failed (SERVER span ERROR): {len(failed)} of "
           f"{len(sc.instances['accepted'])} accepts ({len(ok_inst)} succeeded); {step} wrote before the failure "
           f"in {done_before}/{len(failed)} (tables {dict(tables)}); {step} called again after the failure "
           f"{dict(undo_calls) or 'never'}, undoing (UPDATE/DELETE) the written table in {compensated}/{len(failed)}; "
           f"UPDATE/DELETE by {step} anywhere in the dump: {dict(anywhere) or 'none'}")
    ok = (failed and done_before == len(failed) and compensated == 0) if positive else (
        failed and done_before == len(failed) and compensated == len(failed))
    return bool(ok), txt


def check_retry(sc: Scenario, f: dict, positive: bool):
    svc = f["services"][0]
    per_msg = Counter((d["event"], d["msg"]) for d in sc.deliveries if d["svc"] == svc)
    redelivered = sum(1 for n in per_msg.values() if n > 1)
    handlers = [h for h in sc.spans if h["svc"] == svc and h["kind"] in ("SERVER", "CONSUMER")]
    retried = polled = after_fail = after_ok = last_ok = 0
    attempts: Counter = Counter()
    statuses: Counter = Counter()
    for h in handlers:
        groups: dict[tuple, list[dict]] = defaultdict(list)
        for c, _ in sc.calls(h):
            groups[(c["method"] or c["name"], c["url"] or c["name"])].append(c)
        for calls in groups.values():
            if len(calls) < 2:
                continue
            fails = [c["error"] or (c["status"] or 0) >= 500 for c in calls]
            for prev in fails[:-1]:
                after_fail += prev
                after_ok += not prev
            statuses.update(c["status"] for c in calls)
            if any(fails[:-1]):
                retried += 1
                attempts[len(calls)] += 1
                last_ok += not fails[-1]
            else:
                polled += 1
    txt = (f"{len(per_msg)} messages consumed by {svc}, processed more than once: {redelivered}; "
           f"{len(handlers)} handling spans; repeated calls to the same method+URL: after a failed attempt "
           f"{after_fail}, after a successful one {after_ok}; handlers that retried {retried} (attempts "
           f"{dict(sorted(attempts.items()))}, last attempt succeeded {last_ok}/{retried}), that polled {polled}; "
           f"statuses of repeated calls {dict(statuses)}")
    ok = (retried > 0 and after_ok == 0 and last_ok == retried) if positive else (redelivered == 0 and after_fail == 0)
    return ok, txt


def check_dead_event(sc: Scenario, f: dict, positive: bool):
    producer, event = f["services"][0], f["event"]
    pubs = [p for p in sc.producers if p["svc"] == producer and p["dest"] == event]
    ways = Counter(f"{d['svc']}@{d['span']['ver']} by {w}" for p in pubs for d in sc.consumed_from[p["id"]]
                   for q, w in d["producers"] if q is p)
    consumed_each = sum(1 for p in pubs if sc.consumed_from[p["id"]])
    by_topic = Counter(d["svc"] for d in sc.deliveries if d["event"] == event)
    txt = (f"{len(pubs)} publishes of {event} by {producer} (versions {dict(Counter(p['ver'] for p in pubs))}); "
           f"deliveries tied to them {dict(ways) or 0}; consumer spans on {event}: {dict(by_topic) or 0}; "
           f"publishes consumed: {pct(consumed_each, len(pubs))}")
    ok = (pubs and not by_topic) if positive else (pubs and consumed_each == len(pubs))
    return bool(ok), txt


def check_orphan(sc: Scenario, f: dict, positive: bool):
    consumer, event = f["services"][0], f["event"]
    ds = [d for d in sc.deliveries if d["svc"] == consumer and d["event"] == event]
    tied = [d for d in ds if d["producers"]]
    ways = Counter(w for d in ds for _, w in d["producers"])
    roots = sum(1 for d in ds if not d["span"]["parent"])
    pubs = Counter(f"{p['svc']}@{p['ver']}" for p in sc.producers if p["dest"] == event)
    txt = (f"{len(ds)} {consumer} deliveries of {event} (versions {dict(Counter(d['span']['ver'] for d in ds))}), "
           f"{roots} of them trace roots; tied to a producer span {pct(len(tied), len(ds))} by {dict(ways) or 'none'}; "
           f"producer spans of {event}: {dict(pubs) or 'none'}")
    ok = (ds and not tied and not pubs) if positive else (ds and len(tied) == len(ds))
    return bool(ok), txt


def check_callback(sc: Scenario, f: dict, positive: bool):
    consumer, called = f["services"]
    event = f["event"]
    ds = [d for d in sc.deliveries if d["svc"] == consumer and d["event"] == event]
    with_cb = [d for d in ds if any(srv and srv["svc"] == called for _, srv in sc.calls(d["span"]))]
    producers = Counter(p["svc"] for d in ds for p, _ in d["producers"])
    routes = Counter(srv["name"] for d in with_cb for _, srv in sc.calls(d["span"]) if srv and srv["svc"] == called)
    sizes = [p["attrs"].get("messaging.message.body.size") or p["attrs"].get("messaging.message_payload_size_bytes")
             for d in ds for p, _ in d["producers"]]
    keys = Counter(k for d in ds for p, _ in d["producers"] for k in payload_keys(p))
    txt = (f"{pct(len(with_cb), len(ds))} {consumer} deliveries of {event} call {called} {dict(routes) or ''}; "
           f"producers of the event {dict(producers)}; its payload keys {dict(keys)}, "
           f"{min(sizes) if sizes else 0}-{max(sizes) if sizes else 0} B")
    is_cb = ds and len(with_cb) == len(ds) and called in producers
    return (bool(is_cb) if positive else not is_cb), txt


CHECKS = {
    "implicit_orchestrator": check_implicit_orchestrator,
    "god_coordinator": check_god,
    "event_cycle": check_event_cycle,
    "schema_drift": check_schema_drift,
    "missing_compensation": check_missing_compensation,
    "retry_loop": check_retry,
    "dead_event": check_dead_event,
    "orphan_event": check_orphan,
    "callback_coupling": check_callback,
}


def expected_counts(instances: int) -> dict:
    """generate.py's `counts`: the number of instances of each workflow for --instances N."""
    approved = round(instances * 0.7)
    return {"applications": instances, "accepted": round(approved * 0.75),
            "collections": max(3, round(instances * 25 / 160))}


def label(entry: dict) -> str:
    extra = entry.get("event") or entry.get("resource") or ""
    return f"{entry['kind']} [{', '.join(entry['services'])}]" + (f" {extra}" if extra else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dump", type=Path, default=HERE / "dump.otlp.jsonl.gz")
    ap.add_argument("--truth", type=Path, default=HERE / "truth.yaml")
    ap.add_argument("--instances", type=int, default=160, help="the --instances the dump was generated with")
    args = ap.parse_args(argv)
    truth = load_truth(args.truth)
    sc = Scenario(load_spans(args.dump))
    print(f"dump: {len(sc.spans)} spans in {len({s['trace'] for s in sc.spans})} traces; instances "
          f"{ {k: len(v) for k, v in sc.instances.items()} }")
    gens = defaultdict(set)
    for s in sc.spans:
        a = s["attrs"]
        gens[(s["svc"], s["ver"])].add("old" if {"db.statement", "http.method", "messaging.destination",
                                                 "net.peer.name"} & set(a) else
                                       "new" if {"db.query.text", "http.request.method", "server.address",
                                                 "messaging.destination.name"} & set(a) else "-")
    print("  semantic conventions by service@version: " + ", ".join(
        f"{svc}@{ver} {'/'.join(sorted(g - {'-'}))}" for (svc, ver), g in sorted(gens.items())))
    print("  median lag of a service's remote-parented spans (ms): " + ", ".join(
        f"{svc} {v:+.1f}" for svc, v in clock_offsets(sc).items()))
    rows = []
    observed = sc.observed_edges()
    want = expected_counts(args.instances)
    for wf in truth["workflows"]:
        key = next((k for k, v in ENTRIES.items()
                    if v == (wf["entry"]["service"], wf["entry"]["operation"])), None)
        expected = wf["instances"] if args.instances == 160 else want.get(key, -1)
        if args.instances == 160 and key and want[key] != wf["instances"]:
            expected = -1  # truth.yaml disagrees with the generator's formulas
        rows.append(("workflow", f"{wf['entry']['service']} {wf['entry']['operation']}",
                     *check_workflow(sc, wf, expected)))
    for e in truth["edges"]:
        rows.append(("edge", f"{e['source']} -> {e['target']} {e['via']} {e.get('event') or ''}".rstrip(),
                     *check_edge(sc, e, observed)))
    rows.append(("edge", "(edges complete)", *check_edges_complete(sc, truth["edges"], observed)))
    rows.append(("spans", "(well formed)", *check_well_formed(sc)))
    for section, positive in (("findings", True), ("must_not", False)):
        for f in truth[section]:
            fn = CHECKS.get(f["kind"])
            rows.append((section, label(f), *(fn(sc, f, positive) if fn else (False, "no check for this kind"))))
    width = max(len(r[1]) for r in rows)
    print(f"\n{'section':9s} | {'entry':{width}s} | ok  | evidence")
    print(f"{'-' * 9}-+-{'-' * width}-+-----+---------")
    for section, name, ok, txt in rows:
        print(f"{section:9s} | {name:{width}s} | {'yes' if ok else 'NO '} | {txt}")
    bad = [r for r in rows if not r[2]]
    print(f"\n{len(rows) - len(bad)}/{len(rows)} entries backed by the data")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
