"""Recompute, from the spans alone, the evidence behind every entry of truth.yaml (standard library only).

    python inspect_capture.py [--capture capture.otlp.jsonl.gz] [--truth truth.yaml] [-v]

Prints one row per truth entry (findings, must_not, edges) with the numbers that back it; exit 0 when every
entry is backed by the data, 1 otherwise (also when truth.yaml holds an entry this inspector has no check for).

Joining instances. With RawMessageDelivery off (order-events) nothing in the spans joins a consumer to its
producer: no link, no parent, and the SQS MessageId differs from the SNS MessageId (which no span records).
The inspector therefore pairs each consumer's first handling of a message with the latest `order-events send`
span that started before it (orders are 1.2 s apart; the pairing is checked to be 1:1 and lag-bounded). The
k-th POST /orders creates order id k (fresh AUTOINCREMENT table), which shipping's callback URL
`GET /orders/<k>` confirms. For payment-events (raw delivery) the process span's link is used directly.
"""

from __future__ import annotations

import argparse
import bisect
import gzip
import json
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
# subscriptions, by construction (regenerate.py SUBSCRIPTIONS): topic -> [(queue, consumer service, raw)]
SUBSCRIBED = {"order-events": [("inventory-q", "inventory", False), ("shipping-q", "shipping", False),
                               ("loyalty-q", "loyalty", False)],
              "payment-events": [("email-q", "notifier", True)]}
QUEUE_SERVICE = {q: svc for subs in SUBSCRIBED.values() for q, svc, _ in subs}
MAX_LAG_S = 0.6          # a consumer's first receive of an order's message follows the publish by less than this
VISIBILITY_S = 1.0       # shipping-q VisibilityTimeout


# ----------------------------------------------------------------------------- loading
def _value(v: dict):
    if not v:
        return None
    (kind, val), = v.items()
    if kind == "intValue":
        return int(val)
    if kind == "arrayValue":
        return [_value(x) for x in val.get("values", [])]
    return val


def load_spans(path: Path) -> list[dict]:
    spans = []
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            doc = json.loads(line)
            for rs in doc.get("resourceSpans", []):
                res = {a["key"]: _value(a["value"]) for a in rs.get("resource", {}).get("attributes", [])}
                for ss in rs.get("scopeSpans", []):
                    scope = ss.get("scope", {}).get("name", "")
                    for s in ss.get("spans", []):
                        spans.append({
                            "svc": res.get("service.name"), "scope": scope, "name": s["name"], "kind": s.get("kind"),
                            "trace": s["traceId"], "id": s["spanId"], "parent": s.get("parentSpanId") or None,
                            "start": int(s["startTimeUnixNano"]) / 1e9, "end": int(s["endTimeUnixNano"]) / 1e9,
                            "attrs": {a["key"]: _value(a["value"]) for a in s.get("attributes", [])},
                            "links": [(l["traceId"], l["spanId"]) for l in s.get("links", [])],
                            "status": (s.get("status") or {}).get("code"),
                        })
    return spans


def parse_truth(path: Path) -> dict[str, list[dict]]:
    """The flow-style subset truth.yaml uses: section headers and `  - {k: v, k: [a, b], why: free text}`."""
    sections: dict[str, list[dict]] = defaultdict(list)
    current = None
    for raw in path.read_text().splitlines():
        line = raw.split(" #")[0].rstrip() if "why:" not in raw else raw.rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = re.match(r"^(\w+):\s*(.*)$", line)
        if m:
            current = m.group(1)
            continue
        m = re.match(r"^\s+-\s+\{(.*)\}\s*(#.*)?$", line)
        if m and current:
            sections[current].append(_flow_map(m.group(1)))
    return sections


def _flow_map(text: str) -> dict:
    out: dict = {}
    why = None
    if "why:" in text:
        text, why = text.split("why:", 1)
        why = why.strip()
        text = text.rstrip().rstrip(",")
    depth, token, parts = 0, "", []
    for ch in text:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(token)
            token = ""
        else:
            token += ch
    if token.strip():
        parts.append(token)
    for part in parts:
        key, _, val = part.partition(":")
        val = val.strip()
        if val.startswith("["):
            val = [x.strip() for x in val.strip("[]").split(",") if x.strip()]
        elif val.startswith("{"):
            val = _flow_map(val[1:-1])
        out[key.strip()] = val
    if why is not None:
        out["why"] = why
    return out


# ----------------------------------------------------------------------------- facts
class Facts:
    def __init__(self, spans: list[dict]):
        self.spans = spans
        self.by_id = {s["id"]: s for s in spans}
        self.children = defaultdict(list)
        for s in spans:
            if s["parent"]:
                self.children[s["parent"]].append(s)
        self.publishes = {t: sorted((s for s in spans if s["svc"] == "orders-api" and s["kind"] == "SPAN_KIND_PRODUCER"
                                     and s["name"] == f"{t} send"), key=lambda s: s["start"])
                          for t in ("order-events", "payment-events", "order-audit")}
        self.n = len(self.publishes["order-events"])
        self.pub_starts = [s["start"] for s in self.publishes["order-events"]]

    def of(self, svc, name=None, kind=None):
        return [s for s in self.spans if s["svc"] == svc and (name is None or s["name"] == name)
                and (kind is None or s["kind"] == kind)]

    def sql(self, svc, prefix):
        return sorted((s for s in self.of(svc, kind="SPAN_KIND_CLIENT")
                       if str(s["attrs"].get("db.statement", "")).startswith(prefix)), key=lambda s: s["start"])

    def instance_of(self, t: float) -> tuple[int | None, float]:
        """1-based order id of the latest order-events publish started before t, and the lag."""
        i = bisect.bisect_right(self.pub_starts, t) - 1
        if i < 0:
            return None, float("inf")
        return i + 1, t - self.pub_starts[i]

    def pair_by_time(self, spans: list[dict], at: str = "start") -> tuple[dict[int, dict], float, int]:
        """first span per instance, by its `at` time; returns (instance -> span, max lag, spans that collide)."""
        out, max_lag, collisions = {}, 0.0, 0
        for s in sorted(spans, key=lambda s: s[at]):
            k, lag = self.instance_of(s[at])
            if k is None:
                collisions += 1
                continue
            if k in out:
                collisions += 1
                continue
            out[k] = s
            max_lag = max(max_lag, lag)
        return out, max_lag, collisions

    def received_ids(self, svc: str) -> Counter:
        """SQS MessageIds as botocore's SQS.ReceiveMessage spans record them (first message of each batch;
        MaxNumberOfMessages=1 here)."""
        return Counter(s["attrs"]["messaging.message.id"] for s in self.of(svc, "SQS.ReceiveMessage")
                       if s["attrs"].get("messaging.message.id"))

    def shipping_attempts(self) -> dict[int, list[dict]]:
        """order id -> attempts [{get, select, parent}] from the callback URL; an attempt's process span may be
        missing from the capture (a not-deleted message's boto3sqs process span is never ended)."""
        attempts = defaultdict(list)
        selects = {s["parent"]: s for s in self.sql("shipping", "SELECT status FROM reservations")}
        for g in self.of("shipping", "GET", "SPAN_KIND_CLIENT"):
            m = re.search(r"/orders/(\d+)$", str(g["attrs"].get("http.url") or g["attrs"].get("url.full") or ""))
            if not m:
                continue
            attempts[int(m.group(1))].append({"get": g, "select": selects.get(g["parent"]), "parent": g["parent"]})
        for v in attempts.values():
            v.sort(key=lambda a: a["get"]["start"])
        return attempts


# ----------------------------------------------------------------------------- checks
def check_implicit_ordering(f: Facts, e: dict, truth: bool):
    a, b = e["services"]
    inv_w = f.pair_by_time(f.sql("inventory", "INSERT INTO reservations"))[0]
    loy_w = f.pair_by_time(f.sql("loyalty", "INSERT INTO points"))[0]
    att = f.shipping_attempts()
    if truth:   # [inventory, shipping]
        race = ok_first = retried_after_race = clean = started_before = 0
        later_ok = 0
        for k in range(1, f.n + 1):
            w, tries = inv_w.get(k), att.get(k, [])
            if not w or not tries or not tries[0]["select"]:
                continue
            proc_start = tries[0]["get"]["start"]
            if proc_start < w["end"]:
                started_before += 1
            if tries[0]["select"]["start"] < w["end"]:
                race += 1
                if len(tries) >= 2:
                    retried_after_race += 1
                if tries[-1]["select"] and tries[-1]["select"]["start"] > w["end"]:
                    later_ok += 1
            else:
                ok_first += 1
                if len(tries) == 1:
                    clean += 1
        ok = race > 0 and retried_after_race == race and later_ok == race and clean == ok_first \
            and 0 < race < f.n
        return ok, (f"{race}/{f.n} instances: shipping read reservations before inventory's INSERT ended -> all "
                    f"{retried_after_race} redelivered, final attempt after the write in {later_ok}; {ok_first} "
                    f"with inventory first: {clean} single attempts; shipping's callback started before inventory "
                    f"finished in {started_before}/{f.n}")
    if {a, b} == {"inventory", "loyalty"}:
        inv_first = sum(1 for k in inv_w if k in loy_w and inv_w[k]["end"] < loy_w[k]["end"])
        loy_first = sum(1 for k in inv_w if k in loy_w and loy_w[k]["end"] < inv_w[k]["end"])
        once = all(c == 1 for c in f.received_ids("inventory").values()) and \
            all(c == 1 for c in f.received_ids("loyalty").values())
        ok = inv_first > 0 and loy_first > 0 and once
        return ok, (f"inventory's write first in {inv_first}, loyalty's first in {loy_first}; each message "
                    f"received once by both: {once}")
    if (a, b) == ("loyalty", "shipping"):
        done_before = failed_anyway = 0
        for k, tries in att.items():
            if k in loy_w and tries[0]["select"] and loy_w[k]["end"] < tries[0]["select"]["start"]:
                done_before += 1
                if len(tries) > 1:
                    failed_anyway += 1
        reads_points = [s for s in f.of("shipping") if "points" in str(s["attrs"].get("db.statement", ""))]
        ok = failed_anyway > 0 and not reads_points
        return ok, (f"loyalty finished before shipping's first read in {done_before}/{f.n}, yet shipping was "
                    f"redelivered in {failed_anyway} of those; shipping SQL touching points: {len(reads_points)}")
    return None, "no check"


def check_shared(f: Facts, e: dict, truth: bool):
    table = e["resource"]
    writers, readers = set(), set()
    for s in f.spans:
        st = str(s["attrs"].get("db.statement", ""))
        if not re.search(rf"\b{re.escape(table)}\b", st):
            continue
        verb = st.split()[0].upper()
        (writers if verb in ("INSERT", "UPDATE", "DELETE") else readers).add(s["svc"])
    w, r = e["services"]
    if truth:
        ok = writers == {w} and readers == {r}
    else:
        ok = not (w in writers | readers and r in writers | readers)
    return ok, f"table {table}: writers {sorted(writers)}, readers {sorted(readers)}"


def check_callback(f: Facts, e: dict, truth: bool):
    consumer, called = e["services"]
    clients = [s for s in f.of(consumer, kind="SPAN_KIND_CLIENT") if s["scope"].endswith("requests")]
    served = [c for c in clients if any(ch["svc"] == called and ch["kind"] == "SPAN_KIND_SERVER"
                                        for ch in f.children[c["id"]])]
    att = f.shipping_attempts()
    under_process = 0
    for c in clients:
        p = f.by_id.get(c["parent"])
        if p is None or p["name"] == "shipping-q process":   # missing = the never-ended process span
            under_process += 1
    agree = sum(1 for k, tries in att.items() if f.instance_of(tries[0]["get"]["start"])[0] == k)
    ok = len(served) == len(clients) > 0 and len(att) == f.n and under_process == len(clients) and agree == f.n
    return ok, (f"{len(clients)} GET /orders/<id> client spans in {consumer}, {len(served)} with a {called} server "
                f"child; {len(att)}/{f.n} orders called back (URL id = time-paired publish in {agree}); all inside "
                f"message handling: {under_process == len(clients)}")


def check_retry(f: Facts, e: dict, truth: bool):
    svc = e["services"][0]
    ids = f.received_ids(svc)
    again = {m: c for m, c in ids.items() if c > 1}
    polls = len(f.of(svc, kind="SPAN_KIND_CONSUMER")) - len([s for s in f.of(svc) if s["name"].endswith(" process")])
    if truth:
        gaps = []
        rec = sorted((s for s in f.of(svc, "SQS.ReceiveMessage") if s["attrs"].get("messaging.message.id") in again),
                     key=lambda s: s["start"])
        last = {}
        for s in rec:
            m = s["attrs"]["messaging.message.id"]
            if m in last:
                gaps.append(s["end"] - last[m])
            last[m] = s["end"]
        ok = len(again) > 0 and all(g >= VISIBILITY_S * 0.9 for g in gaps)
        gap_txt = f"{min(gaps):.2f}-{max(gaps):.2f}s" if gaps else "-"
        return ok, (f"{len(again)} SQS MessageIds received more than once (max {max(again.values(), default=0)}x) "
                    f"of {len(ids)}; gap between receives {gap_txt} (visibility timeout {VISIBILITY_S:.0f}s)")
    ok = not again and len(ids) > 0
    return ok, f"{len(ids)} messages each received once ({len(again)} redelivered); {polls} receive spans (polls)"


def queue_evidence(f: Facts, topic: str, queue: str, svc: str, raw: bool) -> tuple[bool, str]:
    """Does every publish to `topic` reach `svc` through `queue`? raw delivery: by link; else paired by time."""
    pubs = f.publishes.get(topic, [])
    pub_ids = {(s["trace"], s["id"]) for s in pubs}
    procs = f.of(svc, f"{queue} process")
    n_link = sum(1 for p in procs if any(l in pub_ids for l in p["links"]))
    if raw:
        return n_link == len(pubs) > 0, f"{queue}: {n_link}/{len(pubs)} process spans link to a '{topic} send' span"
    # first handling of each message: botocore's SQS.ReceiveMessage span carrying a MessageId (the process span
    # of a not-deleted attempt is never exported)
    firsts, seen = [], set()
    for r in sorted(f.of(svc, "SQS.ReceiveMessage"), key=lambda s: s["start"]):
        m = r["attrs"].get("messaging.message.id")
        if m and m not in seen:
            seen.add(m)
            firsts.append(r)
    paired, lag, collisions = f.pair_by_time(firsts, at="end")   # a long poll returns when the message arrives
    ok = len(paired) == len(pubs) > 0 and collisions == 0 and lag < MAX_LAG_S
    return ok, (f"{queue}: {len(paired)}/{len(pubs)} messages paired 1:1 by time (max lag {lag * 1000:.0f} ms, "
                f"{n_link} links)")


def check_dead(f: Facts, e: dict, truth: bool):
    topic = e["event"]
    pubs = f.publishes.get(topic, [])
    pub_ids = {(s["trace"], s["id"]) for s in pubs}
    if truth:
        linked = [s for s in f.spans if any(l in pub_ids for l in s["links"])]
        mentions = [s for s in f.spans if s["svc"] != "orders-api" and topic in json.dumps(s["attrs"])]
        ok = len(pubs) == f.n and not linked and not mentions and topic not in SUBSCRIBED
        return ok, (f"{len(pubs)} '{topic} send' spans; subscriptions: none; consumer spans linked: {len(linked)}, "
                    f"mentioning it: {len(mentions)}")
    results = [queue_evidence(f, topic, q, svc, raw) for q, svc, raw in SUBSCRIBED.get(topic, [])]
    ok = bool(results) and all(r[0] for r in results)
    return ok, f"{len(pubs)} publishes; " + "; ".join(r[1] for r in results)


def check_orphan(f: Facts, e: dict, truth: bool):
    svc = e["services"][0]
    for topic, subs in SUBSCRIBED.items():
        for queue, s, raw in subs:
            if s == svc and e["event"] in (queue, topic):
                ok, txt = queue_evidence(f, topic, queue, svc, raw)
                return ok, f"producer = orders-api '{topic} send'; {txt}"
    return None, "no check"


def check_edge(f: Facts, e: dict):
    if e["via"] == "call":
        n = sum(1 for s in f.of(e["source"], kind="SPAN_KIND_CLIENT")
                for ch in f.children[s["id"]] if ch["svc"] == e["target"] and ch["kind"] == "SPAN_KIND_SERVER")
        return n > 0, f"{n} client->server parent/child pairs"
    for queue, svc, raw in SUBSCRIBED.get(e["event"], []):
        if svc == e["target"]:
            return queue_evidence(f, e["event"], queue, svc, raw)
    return False, "not subscribed"


CHECKS = {"implicit_ordering": check_implicit_ordering, "shared_data_coupling": check_shared,
          "callback_coupling": check_callback, "retry_loop": check_retry, "dead_event": check_dead,
          "orphan_event": check_orphan}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--capture", type=Path, default=HERE / "capture.otlp.jsonl.gz")
    ap.add_argument("--truth", type=Path, default=HERE / "truth.yaml")
    args = ap.parse_args(argv)
    f = Facts(load_spans(args.capture))
    truth = parse_truth(args.truth)
    rows, bad = [], 0
    expected_n = int(truth["workflows"][0]["instances"]) if truth.get("workflows") else f.n
    ok = f.n == expected_n
    rows.append(("workflow", f"orders-api POST /orders x{expected_n}", ok,
                 f"{len(f.of('orders-api', 'POST /orders'))} POST /orders server spans, {f.n} order-events publishes"))
    for section, is_truth in (("findings", True), ("must_not", False)):
        for e in truth.get(section, []):
            fn = CHECKS.get(e["kind"])
            res, txt = fn(f, e, is_truth) if fn else (None, "no check")
            label = f"{e['kind']} {e['services']} {e.get('event') or e.get('resource') or ''}".strip()
            rows.append((section, label, res, txt))
    for e in truth.get("edges", []):
        res, txt = check_edge(f, e)
        rows.append(("edge", f"{e['source']} -> {e['target']} {e['via']} {e.get('event', '')}".strip(), res, txt))
    w = max(len(r[1]) for r in rows)
    for section, label, res, txt in rows:
        mark = "ok " if res else ("???" if res is None else "BAD")
        bad += res is not True
        print(f"{mark} {section:9} {label:<{w}}  {txt}")
    print(f"\n{len(f.spans)} spans, {f.n} instances; {len(rows) - bad}/{len(rows)} entries backed by the data")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
