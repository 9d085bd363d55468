"""AsyncAPI 3.0 documents from observed traffic, one per service: a catalog that starts from the truth.

Channels are the destinations a service sends to or receives from; operations are `send` /
`receive`; message payloads list the attributes producers put on their spans, except the
semantic-convention namespaces (messaging.*, http.*, db.*, …), which describe transport, not content.

Re-importing the documents (analysis.intended) declares exactly the observed service-level edges:
- events: when the observed producer -> consumer pairs of a destination are every sender times every
  receiver (the usual pub/sub case), the channel has one message named like the destination;
  otherwise each sender gets its own message ("<destination> from <sender>") and each receiver
  lists the messages it was seen to get, so the pairs stay exact.
- calls are outside AsyncAPI; they go into the root extension `x-choreoscope-calls`
  ([{callee, operation}]), which the importer reads. Calls to an unnamed peer are left out.
"""

from __future__ import annotations

import hashlib
import json
import re

import duckdb

from choreoscope.analysis.conformance import build_instance_edges
from choreoscope.collector.semconv import CONVENTION_PREFIXES

JSON_TYPES = {"VARCHAR": "string", "BIGINT": "integer", "UBIGINT": "integer", "DOUBLE": "number",
              "BOOLEAN": "boolean", "NULL": "null"}


def _key(name: str, taken: set[str]) -> str:
    """A component key from a destination: camelCase on separators, only [A-Za-z0-9_-]."""
    parts = [p for p in re.split(r"[^A-Za-z0-9]+", name) if p]
    key = (parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])) if parts else "channel"
    base, n = key, 2
    while key in taken:
        key, n = f"{base}{n}", n + 1
    taken.add(key)
    return key


def _payloads(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str], dict]:
    """(service, destination) -> JSON Schema of the non-convention attributes on its producer spans."""
    rows = con.execute("""
        WITH p AS (
            SELECT s.service, s.messaging_destination AS dest, sp.attributes
            FROM span_steps s JOIN spans sp ON sp.trace_id = s.trace_id AND sp.span_id = s.span_id
            WHERE s.role = 'producer' AND s.messaging_destination IS NOT NULL),
        k AS (SELECT service, dest, unnest(json_keys(attributes)) AS key, attributes FROM p)
        SELECT service, dest, key, list(DISTINCT json_type(attributes -> key) ORDER BY 1)
        FROM k GROUP BY ALL ORDER BY ALL""").fetchall()
    out: dict[tuple[str, str], dict] = {}
    for service, dest, key, types in rows:
        if key.startswith(CONVENTION_PREFIXES):
            continue
        kinds = sorted({JSON_TYPES.get(t, "string") for t in types if t})
        prop = {"type": kinds[0] if len(kinds) == 1 else kinds}
        out.setdefault((service, dest), {"type": "object", "properties": {}})["properties"][key] = prop
    return out


def build_documents(con: duckdb.DuckDBPyConnection, source: str = "") -> dict[str, dict]:
    """service -> AsyncAPI 3.0 document, from an analysed store (span_steps, causal_edges)."""
    build_instance_edges(con)
    services = [r[0] for r in con.execute(
        "SELECT DISTINCT service FROM span_steps WHERE service IS NOT NULL ORDER BY 1").fetchall()]
    senders: dict[str, set[str]] = {}
    receivers: dict[str, set[str]] = {}
    for svc, role, dest in con.execute(
        "SELECT DISTINCT service, role, messaging_destination FROM span_steps "
        "WHERE role IN ('producer', 'consumer') AND messaging_destination IS NOT NULL").fetchall():
        (senders if role == "producer" else receivers).setdefault(dest, set()).add(svc)
    pairs: dict[str, set[tuple[str, str]]] = {}
    calls: dict[str, dict[str, set[str]]] = {}
    for src, dst, via, event, op in con.execute(
        "SELECT DISTINCT src, dst, via, event, operation FROM conformance_instance_edges ORDER BY ALL"
    ).fetchall():
        if via == "event":
            pairs.setdefault(event, set()).add((src, dst))
            senders.setdefault(event, set()).add(src)
            receivers.setdefault(event, set()).add(dst)
        elif dst != "unknown peer":
            ops = calls.setdefault(src, {}).setdefault(dst, set())
            if op:
                ops.add(op)
    payloads = _payloads(con)

    docs = {s: {"asyncapi": "3.0.0",
                "info": {"title": s, "version": "observed",
                         "description": "Written by `choreoscope export asyncapi` from observed traffic"
                                        + (f" ({source})" if source else "") + "; review before adopting."},
                "channels": {}, "operations": {}} for s in services}
    keys: dict[str, set[str]] = {s: set() for s in services}
    for dest in sorted(set(senders) | set(receivers)):
        snd, rcv = senders.get(dest, set()), receivers.get(dest, set())
        observed = pairs.get(dest, set())
        full = observed == {(s, r) for s in snd for r in rcv}
        merged: dict = {"type": "object", "properties": {}}
        for s in sorted(snd):
            merged["properties"].update(payloads.get((s, dest), {}).get("properties", {}))
        messages = {dest: merged} if full else {dest: merged} | {
            f"{dest} from {s}": payloads.get((s, dest), {"type": "object"}) for s in sorted(snd)}
        for svc in sorted(snd | rcv):
            doc = docs.setdefault(svc, {"asyncapi": "3.0.0", "info": {"title": svc, "version": "observed"},
                                        "channels": {}, "operations": {}})
            ck = _key(dest, keys.setdefault(svc, set()))
            taken: set[str] = set()
            mkeys = {name: _key(name, taken) for name in messages}
            doc["channels"][ck] = {"address": dest, "messages": {
                mkeys[name]: {"name": name, "payload": payload} for name, payload in messages.items()}}
            for action, role_set in (("send", snd), ("receive", rcv)):
                if svc not in role_set:
                    continue
                if full:
                    names = [dest]
                elif action == "send":
                    names = [f"{dest} from {svc}"]
                else:
                    names = sorted(f"{dest} from {s}" for s, r in observed if r == svc) or [dest]
                op_key = _key(f"{action} {dest}", keys[svc])
                doc["operations"][op_key] = {
                    "action": action, "channel": {"$ref": f"#/channels/{ck}"},
                    "messages": [{"$ref": f"#/channels/{ck}/messages/{mkeys[n]}"} for n in names]}
    for svc, callees in calls.items():
        if svc in docs:
            docs[svc]["x-choreoscope-calls"] = [
                {"callee": callee, "operation": op} if op else {"callee": callee}
                for callee in sorted(callees) for op in (sorted(callees[callee]) or [None])]
    return docs


def document_filename(service: str, max_chars: int = 100) -> str:
    """A portable file name (without extension) for a service's document.

    Long names are cut and suffixed with a hash of the full name: file systems refuse names over
    255 bytes, and two long names sharing a prefix must not land in one file.
    """
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", service).strip("._") or "service"
    if len(name) > max_chars:
        digest = hashlib.sha1(service.encode("utf-8")).hexdigest()[:10]
        name = f"{name[:max_chars - 11]}-{digest}"
    return name


def dump_document(doc: dict) -> str:
    import yaml

    return yaml.safe_dump(json.loads(json.dumps(doc)), sort_keys=False, width=110, allow_unicode=True)
