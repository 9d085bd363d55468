"""Recompute, from the spans alone, the evidence behind every entry of truth.yaml (standard library only).

    python sample_traces/independent/claims_rebalance/inspect_scenario.py [--dump FILE] [--truth FILE]
                                                                          [--instances N]

Prints one row per workflow / edge / finding / must_not entry with the numbers that back it and exits 0
when every entry is backed by the data, 1 otherwise. `--instances N` says the dump was generated with
`generate.py --instances N` (the workflow counts of truth.yaml are then scaled from N = 200).

What the checks read (README.md, "What the spans carry"): both semantic-convention generations
(`messaging.destination` / `messaging.destination.name`, `messaging.message_id` / `messaging.message.id`,
`db.statement` / `db.query.text`, `db.name` / `db.namespace`, `net.peer.name` / `server.address`); a
consumer span's producer is its parent; a call is a CLIENT span with a SERVER child; tables come from the
SQL text by regular expression, a table being (server, database, table); replicas are told apart by
`service.instance.id`, versions by `service.version`. Clock skew is estimated per service instance from
its calls (the median of client midpoint minus server midpoint) and subtracted before any timing check.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import statistics
import sys
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # truth_reader.py, beside the scenarios
from truth_reader import attr_value, load_truth

WRITE_RE = re.compile(r"^\s*(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+\"?(\w+)", re.IGNORECASE)
READ_RE = re.compile(r"\b(?:FROM|JOIN)\s+\"?(\w+)", re.IGNORECASE)
MAX_RACE_SHARE = 0.15  # "a few percent race": the planted share is 8 %
GOD_MIN_OPERATIONS = 5  # the corpus convention: five or more distinct operations of one callee
PAYLOAD_PREFIX = "claims."  # the application's own attribute namespace (event payload)


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
                        attrs = {a["key"]: attr_value(a["value"]) for a in s.get("attributes", [])}
                        spans.append({
                            "svc": res.get("service.name"), "ver": res.get("service.version"),
                            "inst": res.get("service.instance.id"),
                            "kind": s.get("kind", "").replace("SPAN_KIND_", ""), "name": s.get("name", ""),
                            "trace": s["traceId"], "id": s["spanId"], "parent": s.get("parentSpanId") or None,
                            "start": int(s["startTimeUnixNano"]), "end": int(s["endTimeUnixNano"]),
                            "error": s.get("status", {}).get("code") == "STATUS_CODE_ERROR",
                            "exceptions": [e for e in s.get("events", []) if e.get("name") == "exception"],
                            "links": [(lk["traceId"], lk["spanId"]) for lk in s.get("links", [])],
                            "attrs": attrs,
                            # both semantic-convention generations, read into one set of names
                            "topic": attrs.get("messaging.destination.name", attrs.get("messaging.destination")),
                            "msg": attrs.get("messaging.message.id", attrs.get("messaging.message_id")),
                            "sql": attrs.get("db.query.text", attrs.get("db.statement")),
                            "db": (attrs.get("server.address", attrs.get("net.peer.name")),
                                   attrs.get("db.namespace", attrs.get("db.name"))),
                        })
    return spans


def ms(ns: float) -> str:
    return f"{ns / 1e6:.1f} ms"


def spread(values: list[float]) -> str:
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
        self.roots = [s for s in spans if not s["parent"]]
        self.producers = [s for s in spans if s["kind"] == "PRODUCER"]
        self.deliveries = [s for s in spans if s["kind"] == "CONSUMER"]
        self.consumed_from: dict[str, list[dict]] = defaultdict(list)
        for d in self.deliveries:
            p = self.by_id.get(d["parent"])
            d["producer"] = p if p is not None and p["kind"] == "PRODUCER" else None
            if d["producer"]:
                self.consumed_from[p["id"]].append(d)
        self.skew = self._skews()
        for s in spans:
            d = self.skew.get((s["svc"], s["inst"]), 0)
            s["t0"], s["t1"] = s["start"] - d, s["end"] - d

    def _skews(self) -> dict[tuple, float]:
        """(service, instance) -> how far its clock runs ahead: median(client midpoint - server midpoint)."""
        gaps: dict[tuple, list[float]] = defaultdict(list)
        for c in self.spans:
            if c["kind"] != "CLIENT":
                continue
            for srv in self.children[c["id"]]:
                if srv["kind"] == "SERVER" and srv["svc"] != c["svc"]:
                    gaps[(c["svc"], c["inst"])].append((c["start"] + c["end"]) / 2 - (srv["start"] + srv["end"]) / 2)
        return {k: statistics.median(v) for k, v in gaps.items()}

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

    @staticmethod
    def tables(span: dict) -> tuple[set, set]:
        text = span["sql"] or ""
        writes = {(*span["db"], t) for t in WRITE_RE.findall(text)}
        reads = {(*span["db"], t) for t in READ_RE.findall(text)} - writes
        return writes, reads

    def db_spans(self, span: dict) -> list[dict]:
        return sorted((s for s in self.descendants(span) if s["sql"]), key=lambda s: s["t0"])

    def access(self, svc: str) -> tuple[set, set]:
        w, r = set(), set()
        for s in self.spans:
            if s["svc"] == svc and s["sql"]:
                sw, sr = self.tables(s)
                w |= sw
                r |= sr
        return w, r

    def observed_edges(self) -> Counter:
        edges: Counter = Counter()
        for d in self.deliveries:
            if d["producer"]:
                edges[(d["producer"]["svc"], d["svc"], "event", d["topic"])] += 1
        for s in self.spans:
            if s["kind"] == "CLIENT" and "http.request.method" in s["attrs"]:
                srv = next((k for k in self.children[s["id"]] if k["kind"] == "SERVER"), None)
                edges[(s["svc"], srv["svc"] if srv else s["attrs"].get("server.address"), "call", None)] += 1
        return edges

    def same_message(self, svc: str, event: str | None = None) -> dict[str, list[dict]]:
        """svc's deliveries grouped by message id (several = the same message consumed again)."""
        out: dict[str, list[dict]] = defaultdict(list)
        for d in self.deliveries:
            if d["svc"] == svc and (event is None or d["topic"] == event):
                out[d["msg"]].append(d)
        for v in out.values():
            v.sort(key=lambda d: d["t0"])
        return out


# ----------------------------------------------------------------------------- checks
def check_workflow(sc: Scenario, wf: dict, expected: int):
    svc, op = wf["entry"]["service"], wf["entry"]["operation"]
    roots = [s for s in sc.roots if s["svc"] == svc and s["kind"] == "SERVER" and s["name"] == op]
    return len(roots) == expected, f"{len(roots)} root spans (expected {expected})"


def check_edge(sc: Scenario, e: dict, observed: Counter):
    n = observed.get((e["source"], e["target"], e["via"], e.get("event")), 0)
    return n > 0, f"{n} observed"


def check_edges_complete(sc: Scenario, edges: list[dict], observed: Counter):
    known = {(e["source"], e["target"], e["via"], e.get("event")) for e in edges}
    extra = sorted(f"{k[0]}->{k[1]} {k[2]} {k[3] or ''}".strip() for k in observed if k not in known)
    return not extra, f"observed edges not in truth: {extra or 'none'}"


def check_well_formed(sc: Scenario):
    missing = sum(1 for s in sc.spans if s["parent"] and s["parent"] not in sc.by_id)
    outside = sum(1 for s in sc.spans if s["parent"] in sc.by_id and sc.by_id[s["parent"]]["svc"] == s["svc"]
                  and not sc.by_id[s["parent"]]["start"] <= s["start"] <= s["end"] <= sc.by_id[s["parent"]]["end"])
    ids = len(sc.by_id) == len(sc.spans)
    return not missing and not outside and ids, (f"parents missing: {missing}; same-service children outside their "
                                                  f"parent: {outside}; span ids unique: {ids}")


def check_skew(sc: Scenario):
    big = {f"{k[0]}@{k[1][:8]}": round(v / 1e6) for k, v in sorted(sc.skew.items()) if abs(v) > 50e6}
    bad_srv = sum(1 for c in sc.spans if c["kind"] == "CLIENT" for srv in sc.children[c["id"]]
                  if srv["kind"] == "SERVER" and srv["start"] < c["start"])
    after = sum(1 for c in sc.spans if c["kind"] == "CLIENT" for srv in sc.children[c["id"]]
                if srv["kind"] == "SERVER" and not c["t0"] <= srv["t0"] <= srv["t1"] <= c["t1"])
    return bool(big) and after == 0, (f"instances with |skew| > 50 ms (ms ahead): {big or 'none'}; raw server spans "
                                      f"starting before their client: {bad_srv}; after correction outside the client: "
                                      f"{after}")


def pairs(sc: Scenario, a: str, b: str, event: str) -> list[tuple[list[dict], list[dict]]]:
    """For each producer span of event consumed by both: (a's deliveries, b's deliveries), by corrected start."""
    out = []
    for p in sc.producers:
        if p["topic"] != event:
            continue
        da = sorted((d for d in sc.consumed_from[p["id"]] if d["svc"] == a), key=lambda d: d["t0"])
        db_ = sorted((d for d in sc.consumed_from[p["id"]] if d["svc"] == b), key=lambda d: d["t0"])
        if da and db_:
            out.append((da, db_))
    return out


def check_implicit_ordering(sc: Scenario, f: dict, positive: bool):
    a, b, event = f["services"][0], f["services"][1], f["event"]
    inst = pairs(sc, a, b, event)
    a_w, _ = sc.access(a)
    _, b_r = sc.access(b)
    shared = a_w & b_r
    raw_after = sum(1 for da, db_ in inst if db_[0]["start"] >= max(d["end"] for d in da))
    fixed_after = sum(1 for da, db_ in inst if db_[0]["t0"] >= max(d["t1"] for d in da))
    head = (f"{len(inst)} instances; {b} starts after {a} ends: raw {pct(raw_after, len(inst))}, skew-corrected "
            f"{pct(fixed_after, len(inst))}; tables {a} writes and {b} reads: {sorted(t[2] for t in shared) or 'none'}")
    if not positive:
        return bool(inst) and not shared, head
    if not shared:
        return False, head
    races = raw_races = consequences = clean_others = 0
    gaps = []
    for da, db_ in inst:
        writes = [s for d in da for s in sc.db_spans(d) if sc.tables(s)[0] & shared]
        if not writes:
            continue
        w_end, w_end_raw = min(s["t1"] for s in writes), min(s["end"] for s in writes)
        reads = [s for s in sc.db_spans(db_[0]) if sc.tables(s)[1] & shared]
        if not reads:
            continue
        gaps.append(reads[0]["t0"] - w_end)
        raw_races += reads[0]["start"] < w_end_raw
        if reads[0]["t0"] < w_end:
            races += 1
            last = db_[-1]
            last_read = [s for s in sc.db_spans(last) if sc.tables(s)[1] & shared]
            ok = (len(db_) >= 2 and all(d["error"] and d["exceptions"] for d in db_[:-1]) and not last["error"]
                  and len({d["msg"] for d in db_}) == 1 and last_read and last_read[0]["t0"] >= w_end)
            consequences += bool(ok)
        else:
            clean_others += len(db_) == 1 and not db_[0]["error"]
    txt = (f"{head}; {b}'s first read before {a}'s write ended: skew-corrected {pct(races, len(inst))}, raw "
           f"{pct(raw_races, len(inst))}; racing instances failed (ERROR + exception), redelivered with the same message "
           f"id until a read after the write succeeded: {consequences}/{races}; others one clean delivery: "
           f"{clean_others}/{len(inst) - races}; corrected read minus write end: {spread(gaps)}")
    ok = (0 < races <= MAX_RACE_SHARE * len(inst) and consequences == races and raw_races == 0
          and clean_others == len(inst) - races)
    return ok, txt


def check_shared(sc: Scenario, f: dict, positive: bool):
    w, r, table = f["services"][0], f["services"][1], f["resource"]
    ww, _ = sc.access(w)
    _, rr = sc.access(r)
    wk, rk = {t for t in ww if t[2] == table}, {t for t in rr if t[2] == table}
    n_w = sum(1 for s in sc.spans if s["svc"] == w and s["sql"] and sc.tables(s)[0] & wk)
    n_r = sum(1 for s in sc.spans if s["svc"] == r and s["sql"] and sc.tables(s)[1] & rk)
    txt = f"{w} writes {table} at {sorted(wk) or 'nowhere'} ({n_w}); {r} reads it at {sorted(rk) or 'nowhere'} ({n_r})"
    ok = bool(wk & rk)
    return ok if positive else not ok, txt


def check_retry(sc: Scenario, f: dict, positive: bool):
    svc = f["services"][0]
    groups = sc.same_message(svc)
    again = {m: ds for m, ds in groups.items() if len(ds) > 1}
    sizes = Counter(len(ds) for ds in groups.values())
    failed_first = sum(1 for ds in again.values() if all(d["error"] and d["exceptions"] for d in ds[:-1]))
    ok_last = sum(1 for ds in again.values() if not ds[-1]["error"])
    all_ok = sum(1 for ds in again.values() if not any(d["error"] for d in ds))
    replicas = sum(1 for ds in again.values() if len({d["inst"] for d in ds}) == len(ds))
    same_parent = sum(1 for ds in again.values() if len({d["parent"] for d in ds}) == 1)
    txt = (f"{len(groups)} messages, deliveries per message {dict(sorted(sizes.items()))}; consumed again: "
           f"{len(again)} (same producer parent {same_parent}); all earlier attempts failed: {failed_first}; last "
           f"succeeded: {ok_last}; every attempt succeeded: {all_ok}; each attempt on another replica: {replicas}")
    if positive:
        ok = bool(again) and failed_first == len(again) and max(sizes) >= 3
    else:
        ok = bool(groups) and failed_first == 0 and all_ok == len(again)
    return ok, txt


def check_missing_compensation(sc: Scenario, f: dict, positive: bool):
    undone, failed = f["services"]
    fails = [p for p in sc.producers if p["svc"] == failed and p["topic"].endswith(".failed")]
    did = comp = 0
    for p in fails:
        spans = [s for s in sc.spans if s["trace"] == p["trace"] and s["svc"] == undone]
        wrote = {t for s in spans if s["sql"] and s["t1"] <= p["t0"] for t in sc.tables(s)[0]}
        did += bool(wrote)
        later = [s for s in spans if s["t0"] >= p["t0"] and s["sql"] and
                 re.match(r"\s*(UPDATE|DELETE)", s["sql"], re.IGNORECASE) and sc.tables(s)[0] & wrote]
        comp += bool(later)
    subscribed = sorted({d["topic"] for d in sc.deliveries if d["svc"] == undone and d["topic"].endswith(".failed")})
    txt = (f"{len(fails)} failure events from {failed} ({sorted({p['topic'] for p in fails})}); {undone} had written "
           f"before the failure in {did}; undid it (UPDATE/DELETE of that table) after the failure in {comp}; "
           f"{undone} consumes failure events: {subscribed or 'none'}")
    if positive:
        return bool(fails) and did == len(fails) and comp == 0 and not subscribed, txt
    return bool(fails) and did == len(fails) and comp == len(fails), txt


def check_orchestrator(sc: Scenario, f: dict, positive: bool):
    svc = f["services"][0]
    ds = [d for d in sc.deliveries if d["svc"] == svc and d["producer"]]
    inputs = {(d["topic"], d["producer"]["svc"]) for d in ds}
    pubs = [p for p in sc.producers if p["svc"] == svc]
    txt = (f"consumes {len(inputs)} events from {len({i[1] for i in inputs})} services "
           f"({sorted(i[0] for i in inputs)}); publishes {len(pubs)} ({sorted({p['topic'] for p in pubs}) or 'nothing'})")
    if not positive:
        return len(inputs) < 3 or not pubs, txt
    by_trace: dict[str, list[dict]] = defaultdict(list)
    for d in ds:
        by_trace[d["trace"]].append(d)
    ones = after_all = 0
    for tr, group in by_trace.items():
        out = [p for p in pubs if p["trace"] == tr]
        if len(out) != 1:
            continue
        ones += 1
        firsts = {}
        for d in sorted(group, key=lambda d: d["t0"]):
            firsts.setdefault(d["topic"], d)
        holder = sc.by_id[out[0]["parent"]]
        after_all += len(firsts) == 3 and holder is max(firsts.values(), key=lambda d: d["t0"])
    txt += (f"; instances: {len(by_trace)}, exactly one publish in {ones}, made while handling the last of its three "
            f"inputs to arrive in {after_all}")
    return len({i[1] for i in inputs}) >= 3 and ones == after_all == len(by_trace), txt


def check_schema_drift(sc: Scenario, f: dict, positive: bool):
    svc, event = f["services"][0], f["event"]
    by_ver: dict[str, list[dict]] = defaultdict(list)
    for p in sc.producers:
        if p["svc"] == svc and p["topic"] == event:
            by_ver[p["ver"]].append(p)
    keys = {v: Counter(frozenset(k for k in p["attrs"] if k.startswith(PAYLOAD_PREFIX)) for p in ps)
            for v, ps in by_ver.items()}
    constant = all(len(c) == 1 for c in keys.values())
    sets = {v: next(iter(c)) for v, c in keys.items() if c}
    everywhere = frozenset.intersection(*sets.values()) if sets else frozenset()
    only = {v: sorted(s - everywhere) for v, s in sets.items()}
    raw = {v: len({frozenset(p["attrs"]) for p in ps}) for v, ps in by_ver.items()}
    spans = {v: (min(p["start"] for p in ps), max(p["start"] for p in ps)) for v, ps in by_ver.items()}
    overlap = len(spans) >= 2 and max(s[0] for s in spans.values()) < min(s[1] for s in spans.values())
    values = {v: sorted({str(p["attrs"][k]) for p in ps for k in p["attrs"] if k.startswith(PAYLOAD_PREFIX)
                         and not k.endswith(".id") and not k.endswith("_cents")}) for v, ps in by_ver.items()}
    txt = (f"publishes by version { {v: len(ps) for v, ps in sorted(by_ver.items())} }; payload key set constant "
           f"per version: {constant}; keys only in one version: {only}; both versions publishing at once: {overlap}; "
           f"payload values {values}; distinct raw key sets per version {raw}")
    if positive:
        return len(by_ver) >= 2 and constant and any(only.values()) and overlap, txt
    return len(by_ver) >= 2 and constant and not any(only.values()), txt


def check_god(sc: Scenario, f: dict, positive: bool):
    coord, callee = f["services"]
    ops: Counter = Counter()
    per_callee: dict[str, set] = defaultdict(set)
    for c in sc.spans:
        if c["svc"] != coord or c["kind"] != "CLIENT":
            continue
        for srv in sc.children[c["id"]]:
            if srv["kind"] == "SERVER":
                per_callee[srv["svc"]].add(srv["name"])
                if srv["svc"] == callee:
                    ops[srv["name"]] += 1
    txt = (f"{coord} calls {len(ops)} distinct operations of {callee} ({sorted(ops)}); operations per callee: "
           f"{ {k: len(v) for k, v in sorted(per_callee.items())} or 'none'}")
    return (len(ops) >= GOD_MIN_OPERATIONS) == positive, txt


CHECKS = {
    "implicit_ordering": check_implicit_ordering,
    "shared_data_coupling": check_shared,
    "retry_loop": check_retry,
    "missing_compensation": check_missing_compensation,
    "implicit_orchestrator": check_orchestrator,
    "schema_drift": check_schema_drift,
    "god_coordinator": check_god,
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
    print(f"dump: {len(sc.spans)} spans in {len({s['trace'] for s in sc.spans})} traces, "
          f"{len({(s['svc'], s['ver'], s['inst']) for s in sc.spans})} service/version/instance resources")
    for (svc, kind, name), n in sorted(kinds.items()):
        print(f"  {n:5d}  {svc:17s} {kind:9s} {name}")
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
    rows.append(("spans", "(clock skew)", *check_skew(sc)))
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
