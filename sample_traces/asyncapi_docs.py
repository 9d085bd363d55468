"""Write one AsyncAPI document per service from a scenario's intended.yaml.

    python -m choreoscope.sample_traces.asyncapi_docs [--scenario NAME]...

The documents say exactly what intended.yaml says about events (same deviations from reality);
message payloads list the custom attributes the producer puts on its spans (newest version).
Most are AsyncAPI 3.0; the services in `ASYNCAPI_2` use 2.6, with 2.x's inverted verbs: an
application that *receives* a message declares `publish`, one that *sends* declares `subscribe`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml
from opentelemetry.trace import SpanKind

from choreoscope.collector import semconv as sc
from choreoscope.sample_traces.generate import generate_spans, scenario_dir

ASYNCAPI_SCENARIOS = ("ecommerce", "event_router", "hybrid_billing")
ASYNCAPI_2 = {
    "ecommerce": {"inventory-service", "notification-service"},
    "event_router": {"ocr-service", "archive-service"},
    "hybrid_billing": {"ledger-service", "crm-service"},
}
_CONVENTION_PREFIXES = ("messaging.", "db.", "http.", "url.", "server.", "net.")
_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _key(event: str) -> str:
    """An AsyncAPI 3 component key for an event name (3.0 keys allow no dots)."""
    head, *rest = event.split(".")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def payload_schemas(scenario: str) -> dict[str, dict]:
    """JSON Schema per event: the non-convention attributes its producers set (latest version wins)."""
    schemas: dict[str, tuple[str, dict]] = {}
    for span in generate_spans(scenario, instances=4 * 10):
        if span.kind != SpanKind.PRODUCER:
            continue
        event = sc.first(span.attributes, sc.MESSAGING_DESTINATION)
        version = span.resource.attributes.get(sc.SERVICE_VERSION, "")
        props = {k: {"type": _JSON_TYPES.get(type(v), "string")}
                 for k, v in span.attributes.items() if not k.startswith(_CONVENTION_PREFIXES)}
        if event not in schemas or version >= schemas[event][0]:
            schemas[event] = (version, props)
    return {e: {"type": "object", "properties": dict(sorted(p.items()))} for e, (_, p) in schemas.items()}


def service_roles(intended: dict) -> dict[str, dict[str, list[str]]]:
    """service -> {"send": [events], "receive": [events]} from every workflow's `events`."""
    roles: dict[str, dict[str, list[str]]] = {}
    for wf in intended.get("workflows", []):
        for ev in wf.get("events", []):
            for who, action in (("producers", "send"), ("consumers", "receive")):
                for svc in ev.get(who, []):
                    lst = roles.setdefault(svc, {"send": [], "receive": []})[action]
                    if ev["name"] not in lst:
                        lst.append(ev["name"])
    return roles


def asyncapi_3(service: str, version: str, roles: dict, schemas: dict) -> dict:
    channels, operations = {}, {}
    for action in ("send", "receive"):
        for event in roles[action]:
            key = _key(event)
            message = {"name": event, "payload": schemas.get(event, {"type": "object"})}
            channels.setdefault(key, {"address": event, "messages": {key: message}})
            operations[f"{action}{key[:1].upper()}{key[1:]}"] = {
                "action": action,
                "channel": {"$ref": f"#/channels/{key}"},
                "messages": [{"$ref": f"#/channels/{key}/messages/{key}"}],
            }
    return {"asyncapi": "3.0.0", "info": {"title": service, "version": version},
            "channels": channels, "operations": operations}


def asyncapi_2(service: str, version: str, roles: dict, schemas: dict) -> dict:
    channels: dict[str, dict] = {}
    # 2.x verbs are from the client's point of view: we receive = `publish`, we send = `subscribe`.
    for action, verb in (("receive", "publish"), ("send", "subscribe")):
        for event in roles[action]:
            channels.setdefault(event, {})[verb] = {
                "operationId": f"{'on' if verb == 'publish' else 'emit'}{_key(event)[:1].upper()}{_key(event)[1:]}",
                "message": {"name": event, "payload": schemas.get(event, {"type": "object"})},
            }
    return {"asyncapi": "2.6.0", "info": {"title": service, "version": version}, "channels": channels}


def write_asyncapi(scenario: str) -> list[Path]:
    """(Re)write sample_traces/scenarios/<scenario>/asyncapi/<service>.yaml; returns the paths."""
    base = scenario_dir(scenario)
    intended = yaml.safe_load((base / "intended.yaml").read_text())
    schemas = payload_schemas(scenario)
    out_dir = base / "asyncapi"
    out_dir.mkdir(exist_ok=True)
    paths = []
    for service, roles in sorted(service_roles(intended).items()):
        version = "1.0.0"
        build = asyncapi_2 if service in ASYNCAPI_2.get(scenario, ()) else asyncapi_3
        doc = build(service, version, roles, schemas)
        path = out_dir / f"{service}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False, width=110))
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m choreoscope.sample_traces.asyncapi_docs")
    parser.add_argument("--scenario", action="append", choices=ASYNCAPI_SCENARIOS)
    args = parser.parse_args(argv)
    for scenario in args.scenario or ASYNCAPI_SCENARIOS:
        for path in write_asyncapi(scenario):
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
