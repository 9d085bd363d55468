"""Recompute, from the spans alone, the evidence behind every entry of truth.yaml (standard library only).

    python sample_traces/independent/race_8_of_200/inspect_scenario.py [--dump FILE] [--truth FILE]
                                                                       [--instances N]

Prints one row per workflow / edge / finding / must_not entry with the numbers that back it and exits
0 when every entry is backed by the data, 1 otherwise. `--instances N` says the dump was generated with
`generate.py --instances N` (the workflow counts of truth.yaml are then scaled: 200 bookings and 30
chargebacks at N = 200).

What the checks read (README.md, "What the spans carry"): CONSUMER spans `process <topic>` with
`messaging.destination.name`, `messaging.message.id`, `messaging.consumer.group.name`, whose parent is
the PRODUCER span `send <topic>` (or, for the batch consumer, span links to it); SERVER spans with
`http.route`; CLIENT spans with `http.request.method` and `server.address`; CLIENT database spans with
`db.system.name`, `db.namespace`, `server.address` and the statement in `db.query.text` - the table is
taken from the SQL text by a regular expression, and a table is the triple (server, database, table).
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
READ_RE = re.compile(r"\b(?:FROM|JOIN)\s+\"?(\w+)", re.IGNORECASE)
LOOKALIKE = ("notifier", "loyalty")  # the look-alike: always after, purely from hop latency
MAX_RACE_SHARE = 0.10  # "only a few percent of instances race": the planted share is 4 %


# ----------------------------------------------------------------------------- spans
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
                        spans.append({
                            "svc": res.get("service.name"),
                            "kind": s.get("kind", "").replace("SPAN_KIND_", ""),
                            "name": s.get("name", ""),
                            "trace": s["traceId"], "id": s["spanId"], "parent": s.get("parentSpanId") or None,
                            "start": int(s["startTimeUnixNano"]), "end": int(s["endTimeUnixNano"]),
                            "error": s.get("status", {}).get("code") == "STATUS_CODE_ERROR",
                            "exceptions": [e for e in s.get("events", []) if e.get("name") == "exception"],
                            "links": [(lk["traceId"], lk["spanId"]) for lk in s.get("links", [])],
                            "attrs": {a["key"]: attr_value(a["value"]) for a in s.get("attributes", [])},
                        })
    return spans


def ms(ns: float) -> str:
    return f"{ns / 1e6:.1f} ms"


def spread(values: list[int]) -> str:
    if not values:
        return "none"
    values = sorted(values)
    return f"{ms(values[0])} to {ms(values[-1])} (median {ms(values[len(values) // 2])})"


def pct(a: int, b: int) -> str:
    return f"{a}/{b} ({100 * a / b:.1f}%)" if b else f"{a}/0"


class Scenario:
    def __init__(self, spans: list[dict]):
        self.spans = spans
        self.by_id = {s["id"]: s for s in spans}
        self.children: dict[str, list[dict]] = defaultdict(list)
        for s in spans:
            if s["parent"]:
                self.children[s["parent"]].append(s)
        self.producers = [s for s in spans if s["kind"] == "PRODUCER"]
        # every consumer span with the producer spans it was caused by (parent, or links for batches)
        self.deliveries: list[dict] = []
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
            d = {"span": s, "svc": s["svc"], "event": s["attrs"].get("messaging.destination.name"),
                 "msg": s["attrs"].get("messaging.message.id"), "producers": prods}
            self.deliveries.append(d)
            for p, _ in prods:
                self.consumed_from[p["id"]].append(d)
        self.by_trace: dict[str, list[dict]] = defaultdict(list)  # trace -> deliveries in it or linked to it
        for d in self.deliveries:
            for t in {d["span"]["trace"], *(p["trace"] for p, _ in d["producers"])}:
                self.by_trace[t].append(d)
        self._access: dict | None = None
        self.roots = [s for s in spans if not s["parent"]]
        self.instances = sorted((s for s in self.roots if (s["svc"], s["kind"], s["name"]) ==
                                 ("booking-api", "SERVER", "POST /bookings")), key=lambda s: s["start"])

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
        out, p = [], span
        while p["parent"] and p["parent"] in self.by_id:
            p = self.by_id[p["parent"]]
            out.append(p)
        return out

    def hops(self, span: dict) -> int:
        """Event hops from the workflow's root to this consumer span: consumer spans on the parent chain."""
        if span["links"] and not span["parent"]:
            return 1
        return sum(1 for s in [span, *self.ancestors(span)] if s["kind"] == "CONSUMER")

    def chain(self, span: dict) -> list[str]:
        """The services on the way from the trace root to this consumer span: root, then every consumer."""
        path = list(reversed([span, *self.ancestors(span)]))
        return [path[0]["svc"]] + [s["svc"] for s in path[1:] if s["kind"] == "CONSUMER"]

    def cause_of(self, inst: dict, event: str = "booking.created") -> dict | None:
        for s in self.children[inst["id"]]:
            if s["kind"] == "PRODUCER" and s["attrs"].get("messaging.destination.name") == event:
                return s
        return None

    def deliveries_below(self, inst: dict, svc: str) -> list[dict]:
        """svc's consumer spans caused by this instance (any hop; links count), by start time."""
        out = [d for d in self.by_trace[inst["trace"]] if d["svc"] == svc]
        return sorted(out, key=lambda d: d["span"]["start"])

    # ----- databases
    @staticmethod
    def sql(span: dict) -> tuple[set, set]:
        text = span["attrs"].get("db.query.text") or ""
        writes = set(WRITE_RE.findall(text))
        reads = set(READ_RE.findall(text)) - writes
        return writes, reads

    @staticmethod
    def db_key(span: dict, table: str) -> tuple:
        return (span["attrs"].get("server.address"), span["attrs"].get("db.namespace"), table)

    def db_spans(self, span: dict) -> list[dict]:
        return sorted((s for s in self.descendants(span) if "db.system.name" in s["attrs"]), key=lambda s: s["start"])

    def table_access(self) -> dict[tuple, dict[str, Counter]]:
        """(server, database, table) -> service -> Counter(read=, write=)."""
        if self._access is not None:
            return self._access
        acc: dict[tuple, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
        for s in self.spans:
            if "db.system.name" not in s["attrs"]:
                continue
            w, r = self.sql(s)
            for t in w:
                acc[self.db_key(s, t)][s["svc"]]["write"] += 1
            for t in r:
                acc[self.db_key(s, t)][s["svc"]]["read"] += 1
        self._access = acc
        return acc

    def writes_of(self, svc: str) -> set[tuple]:
        return {k for k, by in self.table_access().items() if by.get(svc, {}).get("write")}

    def reads_of(self, svc: str) -> set[tuple]:
        return {k for k, by in self.table_access().items() if by.get(svc, {}).get("read")}

    # ----- calls
    def calls(self, span: dict) -> list[tuple[dict, dict | None]]:
        """(CLIENT http span, the SERVER span it reached or None) below span, same service."""
        out = []
        for c in self.descendants(span):
            if c["kind"] == "CLIENT" and "http.request.method" in c["attrs"]:
                srv = next((k for k in self.children[c["id"]] if k["kind"] == "SERVER"), None)
                out.append((c, srv))
        return out

    def observed_edges(self) -> Counter:
        edges: Counter = Counter()
        for d in self.deliveries:
            for p, _ in d["producers"]:
                edges[(p["svc"], d["svc"], "event", d["event"])] += 1
        for s in self.spans:
            if s["kind"] == "CLIENT" and "http.request.method" in s["attrs"]:
                srv = next((k for k in self.children[s["id"]] if k["kind"] == "SERVER"), None)
                target = srv["svc"] if srv else s["attrs"].get("server.address")
                edges[(s["svc"], target, "call", None)] += 1
        return edges


# ----------------------------------------------------------------------------- checks
def check_workflow(sc: Scenario, wf: dict, expected: int):
    svc, op = wf["entry"]["service"], wf["entry"]["operation"]
    roots = [s for s in sc.roots if s["svc"] == svc and (
        s["name"] == op if s["kind"] == "SERVER" else
        s["kind"] == "CONSUMER" and not s["links"] and s["attrs"].get("messaging.destination.name") == op)]
    return len(roots) == expected, f"{len(roots)} root spans (expected {expected})"


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
    """Every parent is in the dump, in the same trace; a child of the same service lies within its parent."""
    missing = sum(1 for s in sc.spans if s["parent"] and s["parent"] not in sc.by_id)
    cross_trace = sum(1 for s in sc.spans if s["parent"] in sc.by_id and sc.by_id[s["parent"]]["trace"] != s["trace"])
    outside = sum(1 for s in sc.spans if s["parent"] in sc.by_id and sc.by_id[s["parent"]]["svc"] == s["svc"]
                  and not sc.by_id[s["parent"]]["start"] <= s["start"] <= s["end"] <= sc.by_id[s["parent"]]["end"])
    dangling_links = sum(1 for s in sc.spans for _, sid in s["links"] if sid not in sc.by_id)
    ok = not (missing or cross_trace or outside or dangling_links)
    return ok, (f"parents missing: {missing}; parent in another trace: {cross_trace}; same-service children outside "
                f"their parent's time: {outside}; links to spans not in the dump: {dangling_links}")


def pair_instances(sc: Scenario, a: str, b: str) -> list[tuple[dict, list[dict], list[dict]]]:
    out = []
    for inst in sc.instances:
        da, db_ = sc.deliveries_below(inst, a), sc.deliveries_below(inst, b)
        if da and db_:
            out.append((inst, da, db_))
    return out


def failure_writers(sc: Scenario, inst: dict, d: dict) -> set[str]:
    """Services whose write, in the same instance, of a table this failed attempt read ended after the read began."""
    out = set()
    for r in sc.db_spans(d["span"]):
        keys = {sc.db_key(r, t) for t in sc.sql(r)[1]}
        for other in sc.by_trace[inst["trace"]]:
            if other["svc"] == d["svc"]:
                continue
            for w in sc.db_spans(other["span"]):
                if {sc.db_key(w, t) for t in sc.sql(w)[0]} & keys and w["end"] > r["start"]:
                    out.add(other["svc"])
    return out


def check_implicit_ordering(sc: Scenario, f: dict, positive: bool):
    earlier, later = f["services"]
    pairs = pair_instances(sc, earlier, later)
    n = len(pairs)
    shared = sc.writes_of(earlier) & sc.reads_of(later)
    later_fail = sum(1 for _, _, dl in pairs for d in dl if d["span"]["error"])
    blamed = Counter(w for inst, _, dl in pairs for d in dl if d["span"]["error"] for w in failure_writers(sc, inst, d))
    unexplained = sum(1 for inst, _, dl in pairs for d in dl if d["span"]["error"]
                      and not failure_writers(sc, inst, d) - {earlier})
    redelivered = sum(1 for _, _, dl in pairs if len(dl) > len({d["msg"] for d in dl}))
    after = sum(1 for _, da, dl in pairs if dl[0]["span"]["start"] >= max(d["span"]["end"] for d in da))
    causal = sum(1 for _, da, dl in pairs
                 if any(x["span"]["id"] in {a["id"] for a in sc.ancestors(y["span"])} for x in da for y in dl))
    calls_to_earlier = sum(1 for _, _, dl in pairs for d in dl
                           for _, srv in sc.calls(d["span"]) if srv and srv["svc"] == earlier)
    if not positive:
        gaps = [dl[0]["span"]["start"] - max(d["span"]["end"] for d in da) for _, da, dl in pairs]
        hop_e = Counter(sc.hops(d["span"]) for _, da, _ in pairs for d in da[:1])
        hop_l = Counter(sc.hops(d["span"]) for _, _, dl in pairs for d in dl[:1])
        chains = Counter(" -> ".join(sc.chain(dl[0]["span"])) for _, _, dl in pairs)
        txt = (f"{later} starts after {earlier} ends in {pct(after, n)} (min gap {ms(min(gaps))}); event hops "
               f"below the cause: {earlier} {dict(hop_e)}, {later} {dict(hop_l)}; {later}'s chain "
               f"{dict(chains)}; causal path {earlier} -> {later} in {causal}; tables {earlier} writes and "
               f"{later} reads: {sorted(shared) or 'none'}; calls {later} -> {earlier}: {calls_to_earlier}; "
               f"{later} consumer spans with ERROR: {later_fail} (read a table before its writer's write ended: "
               f"{dict(blamed) or 'none'}; not explained by a writer other than {earlier}: {unexplained}); "
               f"instances with a redelivery to {later}: {redelivered}")
        independent = (not shared and calls_to_earlier == 0 and unexplained == 0
                       and redelivered <= later_fail and earlier not in blamed)
        ok = n > 0 and (causal == n or independent)  # explicit (an event chain) or no channel from earlier
        if (earlier, later) == LOOKALIKE:  # the look-alike must really look like an ordering
            ok = ok and after == n and min(hop_l) > max(hop_e) and causal == 0
        return ok, txt
    # positive: the later consumer's first read of the earlier one's table before the write ended = a race;
    # the consequence of every race is a failed attempt and a redelivery of the same message
    race = race_fail = race_redelivered = race_final_ok = calm_clean = 0
    margins: list[int] = []  # first read start - write end, per instance
    for _, da, dl in pairs:
        writes = [s for d in da for s in sc.db_spans(d["span"])
                  if {sc.db_key(s, t) for t in sc.sql(s)[0]} & shared]
        if not writes:
            continue
        w_end = max(s["end"] for s in writes)
        first_reads = [s for s in sc.db_spans(dl[0]["span"]) if {sc.db_key(s, t) for t in sc.sql(s)[1]} & shared]
        if first_reads:
            margins.append(first_reads[0]["start"] - w_end)
        if first_reads and first_reads[0]["start"] < w_end:
            race += 1
            first = dl[0]["span"]
            race_fail += first["error"] and bool(first["exceptions"])
            same = all(d["msg"] == dl[0]["msg"] and d["span"]["parent"] == first["parent"] for d in dl)
            race_redelivered += len(dl) > 1 and same
            last_reads = [s for s in sc.db_spans(dl[-1]["span"])
                          if {sc.db_key(s, t) for t in sc.sql(s)[1]} & shared]
            race_final_ok += (not dl[-1]["span"]["error"]) and bool(last_reads) and last_reads[0]["start"] >= w_end
        else:
            calm_clean += len(dl) == 1 and not dl[0]["span"]["error"]
    calm = n - race
    exc_types = Counter(e_attr["value"].get("stringValue") for _, _, dl in pairs for d in dl
                        for e in d["span"]["exceptions"] for e_attr in e.get("attributes", [])
                        if e_attr["key"] == "exception.type")
    ok = (n == len(sc.instances) > 0 and bool(shared) and 0 < race <= MAX_RACE_SHARE * n and race_fail == race
          and race_redelivered == race and race_final_ok == race and calm_clean == calm and causal == 0)
    return ok, (f"shared tables {sorted(shared)}; {later}'s first read started before {earlier}'s write "
                f"ended in {pct(race, n)} instances; of those: first attempt ERROR with exception event "
                f"{race_fail}/{race} {dict(exc_types)}, redelivered (same message id and parent) "
                f"{race_redelivered}/{race}, last attempt read after the write and succeeded "
                f"{race_final_ok}/{race}; the other {calm}: one clean delivery in {calm_clean}/{calm}; read minus "
                f"write end: races {spread([m for m in margins if m < 0])}, others "
                f"{spread([m for m in margins if m >= 0])}; "
                f"{later} started after {earlier} ended in {pct(after, n)}; causal path between them in {causal}")


def check_shared_data(sc: Scenario, f: dict, positive: bool):
    a, b = f["services"]
    table = f["resource"]
    acc = {k: by for k, by in sc.table_access().items() if k[2] == table}
    who = "; ".join(f"{k[1]}@{k[0]}: " + ", ".join(f"{svc} {dict(c)}" for svc, c in sorted(by.items()))
                    for k, by in sorted(acc.items())) or "nobody"
    both = [k for k, by in acc.items() if a in by and b in by]
    if positive:
        ok = any(acc[k][a].get("write") and acc[k][b].get("read") for k in both)
    else:
        ok = not both
    return ok, f"SQL naming `{table}` by (database@server): {who}; the same table used by both: {len(both)}"


def check_callback(sc: Scenario, f: dict, positive: bool):
    consumer, called = f["services"]
    event = f["event"]
    ds = [d for d in sc.deliveries if d["svc"] == consumer and d["event"] == event]
    with_cb = [d for d in ds if any(srv and srv["svc"] == called for _, srv in sc.calls(d["span"]))]
    producers = Counter(p["svc"] for d in ds for p, _ in d["producers"])
    routes = Counter(srv["name"] for d in with_cb for _, srv in sc.calls(d["span"]) if srv and srv["svc"] == called)
    hosts = Counter(c["attrs"].get("server.address") for d in ds for c, _ in sc.calls(d["span"]))
    sizes = defaultdict(list)
    for p in sc.producers:
        sizes[p["attrs"].get("messaging.destination.name")].append(p["attrs"].get("messaging.message.body.size", 0))
    size = {ev: f"{min(v)}-{max(v)} B" for ev, v in sorted(sizes.items())}
    txt = (f"{pct(len(with_cb), len(ds))} {consumer} deliveries of {event} (producers {dict(producers)}) call "
           f"{called} {dict(routes) or ''}; hosts {consumer} calls while handling it: {dict(hosts) or 'none'}")
    if positive:
        txt += f"; message body sizes by topic: {size}"
        ok = len(ds) > 0 and len(with_cb) == len(ds) and called in producers
    else:
        ok = len(ds) > 0 and not with_cb
    return ok, txt


def check_retry(sc: Scenario, f: dict, positive: bool):
    svc = f["services"][0]
    per_msg: dict[tuple, list[dict]] = defaultdict(list)
    for d in sc.deliveries:
        if d["svc"] != svc:
            continue
        if d["msg"] is not None:
            per_msg[(d["event"], d["msg"])].append(d)
        for p, how in d["producers"]:
            if how == "link":  # a batch: each linked message counts as one delivery of it
                per_msg[(d["event"], p["attrs"].get("messaging.message.id"))].append(d)
    multi = {k: v for k, v in per_msg.items() if len(v) > 1}
    hist = Counter(len(v) for v in per_msg.values())
    same = all(len({(d["span"]["parent"], d["span"]["attrs"].get("messaging.kafka.offset")) for d in v}) == 1
               for v in multi.values())
    first_failed = sum(1 for v in multi.values() if v[0]["span"]["error"] and v[0]["span"]["exceptions"])
    errors = sum(1 for v in per_msg.values() for d in v if d["span"]["error"])
    txt = (f"{pct(len(multi), len(per_msg))} messages processed by {svc} more than once (deliveries per message: "
           f"{dict(sorted(hist.items()))}); redeliveries share parent producer span and offset: {same}; "
           f"first attempt ERROR with exception: {first_failed}/{len(multi)}; ERROR spans: {errors}")
    ok = (len(multi) > 0 and same and first_failed == len(multi)) if positive else (len(per_msg) > 0 and not multi)
    return ok, txt


def check_dead_event(sc: Scenario, f: dict, positive: bool):
    producer, event = f["services"][0], f["event"]
    pubs = [p for p in sc.producers if p["svc"] == producer and p["attrs"].get("messaging.destination.name") == event]
    below = Counter(d["svc"] for p in pubs for d in sc.consumed_from[p["id"]])
    by_topic = Counter(d["svc"] for d in sc.deliveries if d["event"] == event)
    ids = {p["attrs"].get("messaging.message.id") for p in pubs}
    by_id = sum(1 for d in sc.deliveries if d["msg"] in ids)
    consumed_each = sum(1 for p in pubs if sc.consumed_from[p["id"]])
    txt = (f"{len(pubs)} publishes of {event} by {producer}; deliveries below them: {dict(below) or 0}; consumer "
           f"spans on topic {event}: {dict(by_topic) or 0}; carrying their message ids: {by_id}; "
           f"publishes consumed: {pct(consumed_each, len(pubs))}")
    ok = (len(pubs) > 0 and not below and not by_topic and by_id == 0) if positive else (
        len(pubs) > 0 and consumed_each == len(pubs))
    return ok, txt


def check_orphan(sc: Scenario, f: dict, positive: bool):
    consumer, event = f["services"][0], f["event"]
    ds = [d for d in sc.deliveries if d["svc"] == consumer and d["event"] == event]
    with_prod = [d for d in ds if d["producers"]]
    ways = Counter(w for d in ds for _, w in d["producers"])
    pubs = sum(1 for p in sc.producers if p["attrs"].get("messaging.destination.name") == event)
    txt = (f"{pct(len(with_prod), len(ds))} {consumer} deliveries of {event} have a producer span as parent or "
           f"link ({dict(ways) or 'none'}); producer spans of {event} anywhere: {pubs}")
    ok = (len(ds) > 0 and not with_prod and pubs == 0) if positive else (len(ds) > 0 and len(with_prod) == len(ds))
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dump", type=Path, default=HERE / "dump.otlp.jsonl.gz")
    ap.add_argument("--truth", type=Path, default=HERE / "truth.yaml")
    ap.add_argument("--instances", type=int, default=200, help="the --instances the dump was generated with")
    args = ap.parse_args(argv)
    truth = load_truth(args.truth)
    sc = Scenario(load_spans(args.dump))
    kinds = Counter((s["svc"], s["kind"], s["name"]) for s in sc.spans)
    print(f"dump: {len(sc.spans)} spans in {len({s['trace'] for s in sc.spans})} traces, services "
          f"{sorted({s['svc'] for s in sc.spans})}, {len(sc.instances)} POST /bookings instances")
    for (svc, kind, name), n in sorted(kinds.items()):
        print(f"  {n:5d}  {svc:15s} {kind:9s} {name}")
    rows = []
    observed = sc.observed_edges()
    for wf in truth["workflows"]:
        expected = max(1, round(wf["instances"] * args.instances / 200))
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
