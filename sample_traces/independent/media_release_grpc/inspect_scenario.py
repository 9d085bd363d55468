"""Recompute, from the spans alone, the evidence behind every entry of truth.yaml (standard library only).

    python sample_traces/independent/media_release_grpc/inspect_scenario.py [--dump FILE] [--truth FILE]
                                                                           [--instances N]

Prints one row per workflow / edge / finding / must_not entry with the numbers that back it and exits
0 when every entry is backed by the data, 1 otherwise. `--instances N` says the dump was generated with
`generate.py --instances N` (the workflow counts of truth.yaml, given for N = 160, are then scaled).

What the checks read (README.md, "What the spans carry"): gRPC CLIENT/SERVER spans with `rpc.system`,
`rpc.service`, `rpc.method`, `rpc.grpc.status_code` and `message` events on streams; HTTP spans with
`http.request.method` / `http.route` / `url.full` / `server.address`; Kafka PRODUCER / CONSUMER spans with
`messaging.destination.name` and `messaging.message.id` (parent, or span links for the batch consumer);
database CLIENT spans with `db.namespace`, `server.address` and the SQL in `db.query.text` - the table is
taken from the SQL text by a regular expression, and a table is the triple (server, database, table).
A call reaches its callee through the SERVER span that is its child; an HTTP call without trace context
is tied to a root SERVER span of the same path that starts within the call (by time, reported as such).
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # truth_reader.py, beside the scenarios
from truth_reader import attr_value, load_truth

BASE = 160  # the --instances the truth's workflow counts are given for
WRITE_RE = re.compile(r"^\s*(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+\"?(\w+)", re.IGNORECASE)
READ_RE = re.compile(r"\b(?:FROM|JOIN)\s+\"?(\w+)", re.IGNORECASE)
GOD_METHODS = 5        # "five or more distinct operations of one callee"
GRPC_UNAVAILABLE = 14


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
                            "svc": res.get("service.name"), "version": res.get("service.version"),
                            "kind": s.get("kind", "").replace("SPAN_KIND_", ""),
                            "name": s.get("name", ""),
                            "trace": s["traceId"], "id": s["spanId"], "parent": s.get("parentSpanId") or None,
                            "start": int(s["startTimeUnixNano"]), "end": int(s["endTimeUnixNano"]),
                            "error": s.get("status", {}).get("code") == "STATUS_CODE_ERROR",
                            "events": [{"name": e.get("name")} for e in s.get("events", [])],
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



def is_call(s: dict) -> bool:
    return s["kind"] == "CLIENT" and ("rpc.system" in s["attrs"] or "http.request.method" in s["attrs"])


def call_key(s: dict) -> str:
    """What makes two client spans the same call: the RPC, the HTTP method and URL, or the SQL text."""
    a = s["attrs"]
    if "rpc.system" in a:
        return f"rpc {a.get('rpc.service')}/{a.get('rpc.method')}"
    if "http.request.method" in a:
        return f"http {a['http.request.method']} {a.get('url.full')}"
    return f"sql {a.get('db.query.text')}"


class Scenario:
    def __init__(self, spans: list[dict]):
        self.spans = spans
        self.by_id = {s["id"]: s for s in spans}
        self.children: dict[str, list[dict]] = defaultdict(list)
        for s in spans:
            if s["parent"]:
                self.children[s["parent"]].append(s)
        self.roots = [s for s in spans if not s["parent"]]
        self.producers = [s for s in spans if s["kind"] == "PRODUCER"]
        self.deliveries: list[dict] = []
        self.consumed_from: dict[str, list[dict]] = defaultdict(list)
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
        self._access: dict | None = None
        self._reached: dict[str, tuple[dict | None, str]] = {}
        root_servers = defaultdict(list)
        for s in self.roots:
            if s["kind"] == "SERVER" and "url.path" in s["attrs"]:
                root_servers[s["attrs"]["url.path"]].append(s)
        for s in spans:
            if not is_call(s):
                continue
            srv = next((k for k in self.children[s["id"]] if k["kind"] == "SERVER"), None)
            if srv is not None:
                self._reached[s["id"]] = (srv, "parent")
                continue
            path = urlsplit(s["attrs"].get("url.full") or "").path
            timed = [r for r in root_servers.get(path, []) if s["start"] <= r["start"] <= r["end"] <= s["end"]]
            self._reached[s["id"]] = (timed[0], "time") if len(timed) == 1 else (None, "external")

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

    def reached(self, call: dict) -> tuple[dict | None, str]:
        return self._reached.get(call["id"], (None, "external"))

    def calls(self, span: dict) -> list[tuple[dict, dict | None]]:
        """(CLIENT call span, the SERVER span it reached or None) below span, same service, by start."""
        out = [(c, self.reached(c)[0]) for c in self.descendants(span) if is_call(c)]
        return sorted(out, key=lambda cs: cs[0]["start"])

    def callee(self, call: dict) -> str:
        srv, _ = self.reached(call)
        return srv["svc"] if srv else call["attrs"].get("server.address")

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

    def table_access(self) -> dict[tuple, dict[str, Counter]]:
        """(server, database, table) -> service -> Counter(read=, write=)."""
        if self._access is not None:
            return self._access
        acc: dict[tuple, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
        for s in self.spans:
            if "db.query.text" not in s["attrs"]:
                continue
            w, r = self.sql(s)
            for t in w:
                acc[self.db_key(s, t)][s["svc"]]["write"] += 1
            for t in r:
                acc[self.db_key(s, t)][s["svc"]]["read"] += 1
        self._access = acc
        return acc

    def observed_edges(self) -> Counter:
        edges: Counter = Counter()
        for d in self.deliveries:
            for p, _ in d["producers"]:
                edges[(p["svc"], d["svc"], "event", d["event"])] += 1
        for s in self.spans:
            if is_call(s):
                edges[(s["svc"], self.callee(s), "call", None)] += 1
        return edges


# ----------------------------------------------------------------------------- checks
def check_workflow(sc: Scenario, wf: dict, expected: int):
    svc, op = wf["entry"]["service"], wf["entry"]["operation"]
    roots = [s for s in sc.roots if s["svc"] == svc and s["name"] == op and s["kind"] in ("SERVER", "INTERNAL", "CLIENT")]
    kinds = dict(Counter(s["kind"] for s in roots))
    return len(roots) == expected, f"{len(roots)} root spans {kinds} (expected {expected})"


def check_edge(sc: Scenario, e: dict, observed: Counter):
    key = (e["source"], e["target"], e["via"], e.get("event"))
    n = observed.get(key, 0)
    if e["via"] == "event":
        ways = Counter(w for d in sc.deliveries if d["svc"] == e["target"] and d["event"] == e["event"]
                       for p, w in d["producers"] if p["svc"] == e["source"])
    else:
        ways = Counter(sc.reached(s)[1] for s in sc.spans if is_call(s) and s["svc"] == e["source"]
                       and sc.callee(s) == e["target"])
    methods = sorted({s["attrs"].get("rpc.method") or s["name"] for s in sc.spans if is_call(s)
                      and s["svc"] == e["source"] and sc.callee(s) == e["target"]}) if e["via"] == "call" else []
    ok = n > 0 and (not e.get("external") or set(ways) == {"external"})
    return ok, f"{n} observed ({dict(ways)})" + (f" {methods}" if methods else "")


def check_edges_complete(sc: Scenario, edges: list[dict], observed: Counter):
    known = {(e["source"], e["target"], e["via"], e.get("event")) for e in edges}
    extra = sorted(f"{k[0]}->{k[1]} {k[2]} {k[3] or ''}".strip() for k in observed if k not in known)
    return not extra, f"observed edges not in truth: {extra or 'none'}"


def check_well_formed(sc: Scenario):
    missing = sum(1 for s in sc.spans if s["parent"] and s["parent"] not in sc.by_id)
    cross_trace = sum(1 for s in sc.spans if s["parent"] in sc.by_id and sc.by_id[s["parent"]]["trace"] != s["trace"])
    outside = sum(1 for s in sc.spans if s["parent"] in sc.by_id and sc.by_id[s["parent"]]["kind"] != "PRODUCER"
                  and not sc.by_id[s["parent"]]["start"] <= s["start"] <= s["end"] <= sc.by_id[s["parent"]]["end"])
    dangling_links = sum(1 for s in sc.spans for _, sid in s["links"] if sid not in sc.by_id)
    ok = not (missing or cross_trace or outside or dangling_links)
    return ok, (f"parents missing: {missing}; parent in another trace: {cross_trace}; children (but a "
                f"producer's deliveries) outside their parent's time: {outside}; links to spans not in the dump: {dangling_links}")


def check_god(sc: Scenario, f: dict, positive: bool):
    coord, callee = f["services"]
    calls = [s for s in sc.spans if is_call(s) and s["svc"] == coord and sc.callee(s) == callee]
    methods = Counter(s["attrs"].get("rpc.method") or s["name"] for s in calls)
    per_handler = Counter(len({c["attrs"].get("rpc.method") for c in calls if c["parent"] == p})
                          for p in {c["parent"] for c in calls})
    txt = (f"{coord} -> {callee}: {len(calls)} calls, {len(methods)} distinct operations {dict(sorted(methods.items()))}; "
           f"distinct operations per calling span: {dict(sorted(per_handler.items()))}")
    ok = len(methods) >= GOD_METHODS if positive else (len(calls) > 0 and len(methods) < GOD_METHODS)
    return ok, txt


def saga_runs(sc: Scenario, coord: str) -> list[dict]:
    """Each SERVER span of coord that made calls: its calls in order, the failed step (an ERROR call not
    followed by a successful call of the same operation), the services called OK before it and after it."""
    runs = []
    for s in sc.spans:
        if s["svc"] != coord or s["kind"] != "SERVER":
            continue
        calls = [c for c, _ in sc.calls(s)]
        if not calls:
            continue
        failed = None
        for i, c in enumerate(calls):
            if c["error"] and not any(call_key(d) == call_key(c) and not d["error"] for d in calls[i + 1:]):
                failed = i
                break
        run = {"span": s, "calls": calls, "failed": failed}
        if failed is not None:
            run["before"] = {sc.callee(c) for c in calls[:failed] if not c["error"]}
            run["after"] = [(sc.callee(c), c["attrs"].get("rpc.method") or c["name"]) for c in calls[failed + 1:]]
            run["failed_step"] = (sc.callee(calls[failed]), calls[failed]["attrs"].get("rpc.method"))
            run["undone"] = run["before"] - {svc for svc, _ in run["after"]}
        runs.append(run)
    return runs


def check_compensation(sc: Scenario, f: dict, positive: bool):
    coord = f["services"][0]
    runs = saga_runs(sc, coord)
    failed = [r for r in runs if r["failed"] is not None]
    steps = Counter(r["failed_step"] for r in failed)
    after = Counter(m for r in failed for m in r["after"])
    left = Counter(svc for r in failed for svc in r["undone"])
    partly = sum(1 for r in failed if r["undone"] and len(r["before"] - r["undone"]) > 0)
    txt = (f"{len(failed)} of {len(runs)} {coord} runs had a failed step {dict(steps)}; calls after it "
           f"{dict(after) or 'none'}; earlier steps never undone: {dict(left) or 'none'} "
           f"(runs that undid some earlier step but not another: {partly})")
    ok = (len(failed) > 0 and partly > 0) if positive else (len(failed) > 0 and not left)
    return ok, txt


def check_callback(sc: Scenario, f: dict, positive: bool):
    consumer, called = f["services"]
    event = f["event"]
    ds = [d for d in sc.deliveries if d["svc"] == consumer and d["event"] == event]
    with_cb = [d for d in ds if any(srv and srv["svc"] == called for _, srv in sc.calls(d["span"]))]
    producers = Counter(p["svc"] for d in ds for p, _ in d["producers"])
    ops = Counter(srv["name"] for d in with_cb for _, srv in sc.calls(d["span"]) if srv and srv["svc"] == called)
    hosts = Counter(sc.callee(c) for d in ds for c, _ in sc.calls(d["span"]))
    sizes = sorted({p["attrs"].get("messaging.message.body.size") for p in sc.producers
                    if p["attrs"].get("messaging.destination.name") == event})
    txt = (f"{pct(len(with_cb), len(ds))} {consumer} deliveries of {event} (producers {dict(producers)}) call "
           f"{called} {dict(ops) or ''}; services it calls while handling it: {dict(hosts) or 'none'}; "
           f"body sizes {sizes} B")
    ok = (len(ds) > 0 and len(with_cb) == len(ds) and called in producers) if positive else (len(ds) > 0 and not with_cb)
    return ok, txt


def check_shared_data(sc: Scenario, f: dict, positive: bool):
    a, b = f["services"]
    table = f["resource"]
    acc = {k: by for k, by in sc.table_access().items() if k[2] == table}
    who = "; ".join(f"{k[1]}@{k[0]}: " + ", ".join(f"{svc} {dict(c)}" for svc, c in sorted(by.items()))
                    for k, by in sorted(acc.items())) or "nobody"
    both = [k for k, by in acc.items() if a in by and b in by]
    ok = any(acc[k][a].get("write") and acc[k][b].get("read") for k in both) if positive else (len(acc) > 0 and not both)
    return ok, f"SQL naming `{table}` by (database@server): {who}; the same table used by both: {len(both)}"


def repeat_groups(sc: Scenario, svc: str) -> list[list[dict]]:
    """svc's CLIENT spans (calls and SQL) grouped by calling span and what they call, groups of 2+ by start."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for s in sc.spans:
        if s["svc"] == svc and s["kind"] == "CLIENT" and s["parent"]:
            groups[(s["parent"], call_key(s))].append(s)
    return [sorted(g, key=lambda s: s["start"]) for g in groups.values() if len(g) > 1]


def check_retry(sc: Scenario, f: dict, positive: bool):
    svc = f["services"][0]
    groups = repeat_groups(sc, svc)
    retried = [g for g in groups if any(s["error"] for s in g[:-1])]
    attempts = Counter(len(g) for g in retried)
    last_ok = sum(1 for g in retried if not g[-1]["error"])
    unavailable = sum(1 for g in retried for s in g[:-1] if s["attrs"].get("rpc.grpc.status_code") == GRPC_UNAVAILABLE)
    failed_attempts = sum(1 for g in retried for s in g[:-1])
    sequential = all(x["end"] <= y["start"] for g in retried for x, y in itertools.pairwise(g))
    what = Counter(call_key(g[0]) for g in retried)
    calm_repeats = Counter(call_key(g[0]) for g in groups if g not in retried)
    per_msg = Counter((d["event"], d["msg"]) for d in sc.deliveries if d["svc"] == svc and d["msg"])
    redelivered = sum(1 for n in per_msg.values() if n > 1)
    streams = [len([e for e in s.get("events", []) if e.get("name") == "message"]) for s in sc.spans
               if s["svc"] == svc and "rpc.system" in s["attrs"] and s.get("events")]
    errors = sum(1 for s in sc.spans if s["svc"] == svc and s["error"])
    txt = (f"{svc}: call sites that repeated a call after an ERROR {len(retried)} {dict(what) or ''} (attempts "
           f"{dict(sorted(attempts.items()))}, last attempt OK {last_ok}/{len(retried)}, failed attempts UNAVAILABLE "
           f"{unavailable}/{failed_attempts}, sequential {sequential}); repeats with no error before them "
           f"{dict(calm_repeats) or 'none'}; messages redelivered {redelivered}; stream messages per RPC span "
           f"{(min(streams), max(streams)) if streams else 'none'}; ERROR spans {errors}")
    if positive:
        ok = len(retried) > 0 and last_ok == len(retried) and unavailable == failed_attempts and sequential
    else:
        ok = not retried and not redelivered and any(s["svc"] == svc for s in sc.spans)
    return ok, txt


def runs_of(sc: Scenario, svc: str) -> list[dict]:
    """The spans where svc starts handling something: its SERVER / CONSUMER spans and its root spans."""
    return sorted((s for s in sc.spans if s["svc"] == svc and (s["kind"] in ("SERVER", "CONSUMER") or not s["parent"])),
                  key=lambda s: s["start"])


def check_implicit_ordering(sc: Scenario, f: dict, positive: bool):
    a, b = f["services"]
    ra, rb = runs_of(sc, a), runs_of(sc, b)
    first_a: dict[str, dict] = {}
    first_b: dict[str, dict] = {}
    for s in ra:
        first_a.setdefault(s["trace"], s)
    for s in rb:
        first_b.setdefault(s["trace"], s)
    pairs = [(x, first_b[t]) for t, x in first_a.items() if t in first_b]  # a's first run, b's first run
    paired_by = "trace"
    if not pairs:  # different traces (scheduled jobs): each a-run with the next b-run that starts after it
        paired_by = "time"
        pairs = [(x, nxt[0]) for x in ra if (nxt := [y for y in rb if y["start"] >= x["start"]])]
    after = sum(1 for x, y in pairs if y["start"] >= x["end"])
    gaps = sorted(y["start"] - x["end"] for x, y in pairs)
    acc = sc.table_access()
    data = [k for k, by in acc.items() if by.get(a, {}).get("write") and by.get(b, {}).get("read")]
    events_a = {p["attrs"].get("messaging.destination.name") for p in sc.producers if p["svc"] == a}
    events_b = {d["event"] for d in sc.deliveries if d["svc"] == b}
    shared_events = sorted(events_a & events_b) + ([f["event"]] if f.get("event") else [])
    # explicit sequencing: the same calling span called a, then (after a's answer) b
    explicit = 0
    for x, y in pairs:
        cx, cy = sc.by_id.get(x["parent"] or ""), sc.by_id.get(y["parent"] or "")
        if cx and cy and cx["parent"] and cx["parent"] == cy["parent"] and cx["end"] <= cy["start"]:
            explicit += 1
    txt = (f"{b} starts after {a} ends in {pct(after, len(pairs))} (paired by {paired_by}; gap "
           f"{spread(gaps)}); tables {a} writes and {b} reads: {data or 'none'}; events between them: "
           f"{shared_events or 'none'}; pairs called in sequence by the same span: {explicit}")
    dependent = bool(data or shared_events)
    ok = (dependent and explicit < len(pairs)) if positive else (len(pairs) > 0 and (not dependent or explicit == len(pairs)))
    return ok, txt


def check_dead_event(sc: Scenario, f: dict, positive: bool):
    producer, event = f["services"][0], f["event"]
    pubs = [p for p in sc.producers if p["svc"] == producer and p["attrs"].get("messaging.destination.name") == event]
    below = Counter(d["svc"] for p in pubs for d in sc.consumed_from[p["id"]])
    ways = Counter(w for p in pubs for d in sc.consumed_from[p["id"]] for q, w in d["producers"] if q is p)
    versions = Counter(p["version"] for p in pubs)
    consumed_each = sum(1 for p in pubs if sc.consumed_from[p["id"]])
    txt = (f"{len(pubs)} publishes of {event} by {producer} (versions {dict(versions)}); deliveries of them: "
           f"{dict(below) or 0} ({dict(ways)}); publishes consumed: {pct(consumed_each, len(pubs))}")
    ok = (len(pubs) > 0 and not below) if positive else (len(pubs) > 0 and consumed_each == len(pubs))
    return ok, txt


def check_orphan(sc: Scenario, f: dict, positive: bool):
    consumer, event = f["services"][0], f["event"]
    ds = [d for d in sc.deliveries if d["svc"] == consumer and d["event"] == event]
    with_prod = [d for d in ds if d["producers"]]
    ways = Counter(w for d in ds for _, w in d["producers"])
    roots = sum(1 for d in ds if not d["span"]["parent"])
    txt = (f"{pct(len(with_prod), len(ds))} {consumer} deliveries of {event} have a producer span as parent or "
           f"link ({dict(ways) or 'none'}); root spans among them: {roots}")
    ok = (len(ds) > 0 and not with_prod) if positive else (len(ds) > 0 and len(with_prod) == len(ds))
    return ok, txt


CHECKS = {
    "god_coordinator": check_god,
    "missing_compensation": check_compensation,
    "callback_coupling": check_callback,
    "shared_data_coupling": check_shared_data,
    "retry_loop": check_retry,
    "implicit_ordering": check_implicit_ordering,
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
    ap.add_argument("--instances", type=int, default=BASE, help="the --instances the dump was generated with")
    args = ap.parse_args(argv)
    truth = load_truth(args.truth)
    sc = Scenario(load_spans(args.dump))
    kinds = Counter((s["svc"], s["kind"], s["name"]) for s in sc.spans)
    print(f"dump: {len(sc.spans)} spans in {len({s['trace'] for s in sc.spans})} traces, "
          f"{len({(s['svc'], s['version']) for s in sc.spans})} service versions of {len({s['svc'] for s in sc.spans})} services")
    for (svc, kind, name), n in sorted(kinds.items()):
        print(f"  {n:5d}  {svc:20s} {kind:9s} {name}")
    rows = []
    observed = sc.observed_edges()
    for wf in truth["workflows"]:
        expected = max(1, round(wf["instances"] * args.instances / BASE))
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
