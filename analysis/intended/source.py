"""Read a YAML/JSON document and keep its node tree, so an error can name the line of a path."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from choreoscope.analysis.intended.model import IntendedError


def format_path(path) -> str:
    """('workflows', 0, 'events', 2, 'consumers') -> 'workflows[0].events[2].consumers'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(document root)"


@dataclass
class Document:
    path: str
    data: object
    root: yaml.Node | None

    def line(self, path) -> int | None:
        """1-based line of the deepest node found along `path` (None for an empty document)."""
        node, line = self.root, None
        for part in path:
            if node is None:
                break
            line = node.start_mark.line + 1
            if isinstance(node, yaml.MappingNode):
                node = next((v for k, v in node.value if getattr(k, "value", None) == str(part)), None)
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                node = node.value[part]
            else:
                node = None
        if node is not None:
            line = node.start_mark.line + 1
        return line

    def error(self, path, expected: str) -> IntendedError:
        line = self.line(path)
        where = f"{self.path}:{line}" if line else self.path
        return IntendedError(f"{where}: {format_path(path)}: {expected}")


def read_document(path: str | Path) -> Document:
    path = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise IntendedError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise IntendedError(f"{path}: not UTF-8 text (byte {exc.start}); expected a YAML or JSON "
                            "document") from exc
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else path
        raise IntendedError(f"{where}: not valid YAML/JSON: {getattr(exc, 'problem', exc)}") from exc
    except RecursionError:
        # PyYAML's scanner, parser and composer recurse once per nesting level
        raise IntendedError(f"{path}: nested too deeply to read (hundreds of levels of lists or "
                            "mappings); an intended-workflow document needs a few") from None
    return Document(path, data, root)
