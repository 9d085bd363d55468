"""What every independent scenario's inspector reads the same way, standard library only: the flow
subset of YAML that truth.yaml is written in, and an OTLP JSON AnyValue. The inspectors import it
from beside their folders (they run as scripts: `python .../inspect_scenario.py`); nothing of
choreoscope is imported, so the evidence stays recomputed without it."""

from __future__ import annotations

import re
from pathlib import Path


def _scalar(text: str):
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if text in ("true", "false"):
        return text == "true"
    return text


def _split_top(body: str) -> list[str]:
    parts, depth, cur, quote = [], 0, "", None
    for ch in body:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        cur += ch
    if cur.strip():
        parts.append(cur)
    return parts


def parse_flow(text: str):
    """`{k: v, k: [a, b], k: {..}, why: "quoted"}` -> dict (the subset truth.yaml uses)."""
    text = text.strip()
    if text.startswith("{"):
        out = {}
        for part in _split_top(text[1:-1]):
            key, _, value = part.partition(":")
            out[key.strip()] = parse_flow(value)
        return out
    if text.startswith("["):
        return [parse_flow(p) for p in _split_top(text[1:-1])]
    return _scalar(text)


def load_truth(path: Path) -> dict:
    truth: dict = {"workflows": [], "edges": [], "findings": [], "must_not": []}
    section = None
    for raw in path.read_text().splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        if not raw.startswith(" "):
            key, _, value = raw.partition(":")
            section = key if key in truth else None
            if key == "scenario":
                truth["scenario"] = value.strip()
            continue
        line = re.sub(r"\}\s+#.*$", "}", raw.strip())
        if section and line.startswith("- {"):
            truth[section].append(parse_flow(line[2:]))
    return truth


def attr_value(v: dict):
    """An OTLP JSON AnyValue: its scalar, an intValue as int, anything else as it is."""
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in v:
            return v[key]
    if "intValue" in v:
        return int(v["intValue"])
    return v
