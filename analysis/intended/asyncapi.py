"""AsyncAPI 3.0 and 2.x documents, one per service (the application the document describes).

The service is `info.title`, unless a mapping file renames it (see mapping.py) or the document
sets `info.x-choreoscope-service`. Channel address (3.0; the channel key when the address is
missing or null) or channel name (2.x) = the event name we observe as messaging destination.

Who sends and who receives:
- 3.0: `operations.*.action` is `send` or `receive`, `channel` is a `$ref` to one of `channels`.
- 2.x: the verbs are from the *client's* point of view: an application that RECEIVES messages
  declares `publish` (clients may publish to it), one that SENDS declares `subscribe` (clients may
  subscribe to what it emits). Ignoring this inversion swaps every producer and consumer.

Declared event edges are sender x receiver per address, across all documents. When operations
name their messages (3.0 `messages`, 2.x `message`/`oneOf`), a sender and a receiver pair only if
they share a message name; an operation that names none takes every message of the channel.

Calls are outside AsyncAPI; documents may declare them in the extension
`x-choreoscope-calls: [{callee: NAME, operation: OP}]` at the root (`choreoscope export asyncapi`
writes it), so that a catalog of AsyncAPI documents can also state the synchronous calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from choreoscope.analysis.intended.model import DeclaredEdge, IntendedModel
from choreoscope.analysis.intended.source import Document

ANY = None  # an operation that names no message takes them all


@dataclass
class ServiceDeclaration:
    service: str
    path: str
    sends: dict[str, set[str] | None] = field(default_factory=dict)      # address -> message names
    receives: dict[str, set[str] | None] = field(default_factory=dict)
    calls: list[tuple[str, str | None]] = field(default_factory=list)    # (callee, operation)


def is_asyncapi(data: object) -> bool:
    return isinstance(data, dict) and "asyncapi" in data


def _merge(target: dict, address: str, names: set[str] | None) -> None:
    if names is ANY or (address in target and target[address] is ANY):
        target[address] = ANY  # (also when first seen: `set() | ANY` would raise TypeError)
    else:
        target[address] = (target.get(address) or set()) | names


class _Resolver:
    def __init__(self, doc: Document):
        self.doc = doc

    def resolve(self, value, path: list):
        """Follow local `$ref`s ('#/a/b'); returns (object, path of the object in the document)."""
        seen = 0
        while isinstance(value, dict) and "$ref" in value:
            ref = value["$ref"]
            if not isinstance(ref, str) or not ref.startswith("#/"):
                raise self.doc.error(path + ["$ref"], f"only local references ('#/...') are supported, got {ref!r}")
            target, tpath = self.doc.data, []
            for part in ref[2:].split("/"):
                part = part.replace("~1", "/").replace("~0", "~")
                if not isinstance(target, dict) or part not in target:
                    raise self.doc.error(path + ["$ref"], f"reference {ref!r} does not resolve in this document")
                target, tpath = target[part], tpath + [part]
            value, path = target, tpath
            seen += 1
            if seen > 20:
                raise self.doc.error(path, "reference cycle")
        return value, path


def _message_name(msg) -> str | None:
    if isinstance(msg, dict):
        return msg.get("name") or msg.get("messageId")
    return None


def _service_name(doc: Document, mapping: dict[str, str]) -> str:
    info = doc.data.get("info")
    if not isinstance(info, dict):
        raise doc.error(["info"], "expected an `info` object with a `title` (the service name)")
    if isinstance(info.get("x-choreoscope-service"), str):
        return info["x-choreoscope-service"]
    title = info.get("title")
    if not isinstance(title, str) or not title:
        raise doc.error(["info", "title"], "expected the service name as a non-empty string")
    return mapping.get(title, title)


def _calls(doc: Document, decl: ServiceDeclaration) -> None:
    calls = doc.data.get("x-choreoscope-calls")
    if calls is None:
        return
    if not isinstance(calls, list):
        raise doc.error(["x-choreoscope-calls"], "expected a list of {callee, operation}")
    for i, c in enumerate(calls):
        if not isinstance(c, dict) or not isinstance(c.get("callee"), str) or not c["callee"]:
            raise doc.error(["x-choreoscope-calls", i], "expected {callee: <service or host>, operation: <optional>}")
        op = c.get("operation")
        if op is not None and not isinstance(op, str):
            raise doc.error(["x-choreoscope-calls", i, "operation"], "expected a string")
        decl.calls.append((c["callee"], op))


def _parse_v3(doc: Document, decl: ServiceDeclaration) -> None:
    r = _Resolver(doc)
    channels = doc.data.get("channels") or {}
    operations = doc.data.get("operations") or {}
    for key, where in ((channels, "channels"), (operations, "operations")):
        if not isinstance(key, dict):
            raise doc.error([where], "expected a mapping of names to objects")
    for name, raw in operations.items():
        opath = ["operations", name]
        op, opath = r.resolve(raw, opath)
        if not isinstance(op, dict):
            raise doc.error(opath, "expected an operation object")
        action = op.get("action")
        if action not in ("send", "receive"):
            raise doc.error(opath + ["action"], f"expected 'send' or 'receive', got {action!r}")
        if not isinstance(op.get("channel"), dict):
            raise doc.error(opath + ["channel"], "expected {$ref: '#/channels/<name>'}")
        channel, cpath = r.resolve(op["channel"], opath + ["channel"])
        if not isinstance(channel, dict):
            raise doc.error(cpath, "expected a channel object")
        address = channel.get("address") or cpath[-1]
        if not isinstance(address, str):
            raise doc.error(cpath + ["address"], f"expected a string address, got {address!r}")
        msgs = op.get("messages")
        if msgs in (None, []):
            names = ANY
        elif not isinstance(msgs, list):
            raise doc.error(opath + ["messages"], "expected a list of $ref to the channel's messages")
        else:
            names = _message_names(r, msgs, opath + ["messages"])
        _merge(decl.sends if action == "send" else decl.receives, address, names)


def _message_names(r: _Resolver, messages: list, path: list) -> set[str] | None:
    """The names of the listed messages, or ANY when one has no name (then any message matches)."""
    names: set[str] = set()
    for i, m in enumerate(messages):
        msg, _ = r.resolve(m, path + [i])
        name = _message_name(msg)
        if name is None:
            return ANY
        if not isinstance(name, str):
            raise r.doc.error(path + [i, "name"], f"expected the message name as a string, got {name!r}")
        names.add(name)
    return names


def _parse_v2(doc: Document, decl: ServiceDeclaration) -> None:
    r = _Resolver(doc)
    channels = doc.data.get("channels") or {}
    if not isinstance(channels, dict):
        raise doc.error(["channels"], "expected a mapping of channel names to channel items")
    for address, raw in channels.items():
        cpath = ["channels", address]
        item, cpath = r.resolve(raw, cpath)
        if not isinstance(item, dict):
            raise doc.error(cpath, "expected a channel item")
        # 2.x: `publish` = what clients publish to this application = it RECEIVES; `subscribe` = it SENDS.
        for verb, target in (("publish", decl.receives), ("subscribe", decl.sends)):
            if verb not in item:
                continue
            op, opath = r.resolve(item[verb], cpath + [verb])
            if not isinstance(op, dict):
                raise doc.error(opath, "expected an operation object")
            msg = op.get("message")
            if msg is None:
                names = ANY
            else:
                msg, mpath = r.resolve(msg, opath + ["message"])
                options = msg.get("oneOf") if isinstance(msg, dict) and "oneOf" in msg else [msg]
                if not isinstance(options, list):
                    raise doc.error(mpath + ["oneOf"], "expected a list of messages")
                names = _message_names(r, options, mpath + ["oneOf"])
            _merge(target, str(address), names)


def parse_asyncapi(doc: Document, mapping: dict[str, str]) -> ServiceDeclaration:
    version = str(doc.data.get("asyncapi"))
    decl = ServiceDeclaration(_service_name(doc, mapping), doc.path)
    if version.startswith("3."):
        _parse_v3(doc, decl)
    elif version.startswith("2."):
        _parse_v2(doc, decl)
    else:
        raise doc.error(["asyncapi"], f"expected AsyncAPI version 2.x or 3.x, got {version!r}")
    _calls(doc, decl)
    return decl


def _pairs(a: set[str] | None, b: set[str] | None) -> bool:
    return a is ANY or b is ANY or bool(a & b)


def add_declarations(model: IntendedModel, decls: list[ServiceDeclaration]) -> None:
    """Pair senders with receivers per address across all documents; add the edges to `model`."""
    by_address: dict[str, tuple[list, list]] = {}
    for d in decls:
        for address, names in d.sends.items():
            by_address.setdefault(address, ([], []))[0].append((d, names))
        for address, names in d.receives.items():
            by_address.setdefault(address, ([], []))[1].append((d, names))
        for callee, _op in d.calls:
            edge = DeclaredEdge(d.service, callee, "call")
            model.global_edges.setdefault(edge.key, edge)
            model.global_sources.setdefault(edge.key, d.path)
    for address, (senders, receivers) in sorted(by_address.items()):
        model.global_events.add(address)
        for s, s_names in senders:
            for c, c_names in receivers:
                if _pairs(s_names, c_names):
                    edge = DeclaredEdge(s.service, c.service, "event", address)
                    model.global_edges.setdefault(edge.key, edge)
                    model.global_sources.setdefault(edge.key, f"{s.path} + {c.path}")
