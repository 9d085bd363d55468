"""choreoscope's own intended-workflow YAML (docs/intended-format.md, intended_schema.json).

Workflows declare events (producers x consumers = event edges), calls (caller -> callee),
orderings (before/after, optionally about one event) and compensations; `services` gives owners.
"""

from __future__ import annotations

import json
from importlib import resources

from choreoscope.analysis.intended.model import (
    DeclaredEdge,
    DeclaredOrdering,
    IntendedModel,
    IntendedWorkflow,
)
from choreoscope.analysis.intended.source import Document


def intended_schema() -> dict:
    return json.loads(resources.files("choreoscope.analysis.intended").joinpath("intended_schema.json").read_text())


NATIVE_KEYS = {"version", "description", "workflows", "services"}


def is_native(data: object) -> bool:
    """Has `workflows` and either `version` or only our top-level keys (other YAML with a
    `workflows` key, such as a scenario's truth.yaml, is not ours)."""
    if not isinstance(data, dict) or "workflows" not in data or "asyncapi" in data:
        return False
    return "version" in data or all(k in NATIVE_KEYS or str(k).startswith("x-") for k in data)


def _describe(error) -> str:
    """A jsonschema error as 'what was expected'."""
    v = error.validator
    if v == "required":
        return error.message.replace("is a required property", "is required here")
    if v == "additionalProperties":
        return (f"unknown key {_extra_keys(error)[0]!r} (allowed: "
                f"{', '.join(sorted(error.schema.get('properties', {})))}, x-*)")
    if v == "type":
        return f"expected {error.validator_value}, got {type(error.instance).__name__} {error.instance!r}"
    if v == "oneOf":
        return f"expected a service name or {{service, operation}}, got {error.instance!r}"
    return error.message


def _extra_keys(error) -> list[str]:
    allowed = error.schema.get("properties", {})
    return [k for k in error.instance if k not in allowed and not str(k).startswith("x-")] or ["?"]


def _non_string_key(node, path: list) -> list | None:
    """The path of the first mapping key that is not a string (YAML allows `null:` or `1:`; the
    schema's key patterns cannot be applied to them), or None."""
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str):
                return [*path, key]
            found = _non_string_key(value, [*path, key])
            if found is not None:
                return found
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found = _non_string_key(value, [*path, i])
            if found is not None:
                return found
    return None


def validate_native(doc: Document) -> None:
    import jsonschema

    bad_key = _non_string_key(doc.data, [])
    if bad_key is not None:
        raise doc.error(bad_key[:-1], f"the key {bad_key[-1]!r} is not a name: keys must be text "
                                      "(quote it if it is meant literally)")
    validator = jsonschema.Draft202012Validator(intended_schema())
    errors = sorted(validator.iter_errors(doc.data), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    if errors:
        first = errors[0]
        # the deepest, most specific error of a oneOf/anyOf is the useful one
        best = jsonschema.exceptions.best_match([first]) if first.context else first
        path = list(best.absolute_path)
        if best.validator == "additionalProperties":
            path.append(_extra_keys(best)[0])
        raise doc.error(path, _describe(best)
                        + (f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""))


def _step(value) -> tuple[str, str | None]:
    return (value, None) if isinstance(value, str) else (value["service"], value.get("operation"))


def load_native(doc: Document, model: IntendedModel) -> None:
    """Validate `doc` and add its workflows and owners to `model`."""
    validate_native(doc)
    data = doc.data
    names = set()
    for i, w in enumerate(data.get("workflows") or []):
        if w["name"] in names:
            raise doc.error(["workflows", i, "name"], f"workflow name {w['name']!r} is used twice; names must be unique")
        names.add(w["name"])
        entry = w.get("entry") or {}
        wf = IntendedWorkflow(name=w["name"], source=f"{doc.path}: workflows[{i}]", owner=w.get("owner"),
                              entry_service=entry.get("service"), entry_operation=entry.get("operation"))
        for ev in w.get("events") or []:
            wf.events.add(ev["name"])
            wf.services.update(ev.get("producers") or [])
            wf.services.update(ev.get("consumers") or [])
            for p in ev.get("producers") or []:
                for c in ev.get("consumers") or []:
                    wf.add_edge(DeclaredEdge(p, c, "event", ev["name"]))
        for call in w.get("calls") or []:
            wf.add_edge(DeclaredEdge(call["caller"], call["callee"], "call"))
            ops = wf.call_operations.setdefault((call["caller"], call["callee"]), [])
            if call.get("operation") and call["operation"] not in ops:
                ops.append(call["operation"])
        for j, o in enumerate(w.get("orderings") or []):
            (before, before_op), (after, after_op) = _step(o["before"]), _step(o["after"])
            if before == after and before_op == after_op:
                raise doc.error(["workflows", i, "orderings", j], "before and after name the same step")
            wf.orderings.append(DeclaredOrdering(before, after, o.get("event"), before_op, after_op,
                                                 source=f"{doc.path}: workflows[{i}].orderings[{j}]"))
        for c in w.get("compensations") or []:
            (s, s_op), (cs, cs_op) = _step(c["step"]), _step(c["compensated_by"])
            wf.compensations.append({"step": {"service": s, "operation": s_op},
                                     "compensated_by": {"service": cs, "operation": cs_op}})
        if entry.get("service"):
            wf.services.add(entry["service"])
        model.workflows.append(wf)
    for svc, info in (data.get("services") or {}).items():
        if info.get("owner"):
            model.owners[svc] = info["owner"]
