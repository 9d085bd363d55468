"""Intended workflows: what the teams declared, read from AsyncAPI 3.0 / 2.x documents and
choreoscope's own YAML (docs/intended-format.md), into one `IntendedModel`.

    model = load_intended(["asyncapi/", "intended.yaml"])
"""

from __future__ import annotations

from pathlib import Path

from choreoscope.analysis.intended.asyncapi import add_declarations, is_asyncapi, parse_asyncapi
from choreoscope.analysis.intended.mapping import is_mapping_file, parse_mapping
from choreoscope.analysis.intended.model import (
    DeclaredEdge,
    DeclaredOrdering,
    IntendedError,
    IntendedModel,
    IntendedWorkflow,
)
from choreoscope.analysis.intended.native import is_native, load_native
from choreoscope.analysis.intended.source import read_document

__all__ = ["DeclaredEdge", "DeclaredOrdering", "IntendedError", "IntendedModel", "IntendedWorkflow",
           "load_intended"]

SUFFIXES = (".yaml", ".yml", ".json")


def _expand(paths: list[str]) -> list[tuple[str, bool]]:
    """(file, given explicitly) for every path; directories are scanned recursively, sorted."""
    files: list[tuple[str, bool]] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            files += [(str(f), False) for f in sorted(path.rglob("*"))
                      if f.is_file() and f.suffix.lower() in SUFFIXES]
        elif path.is_file():
            files.append((str(path), True))
        else:
            raise IntendedError(f"{p}: no such file or directory (--intended expects AsyncAPI or "
                                "choreoscope intended-workflow documents, or directories of them)")
    return files


def load_intended(paths: list[str] | str) -> IntendedModel:
    """Read every document under `paths` into one model; raise IntendedError on the first invalid one.

    Files found by scanning a directory that are neither AsyncAPI nor choreoscope documents are
    skipped (listed in `model.skipped`); a file named explicitly must be one of them.
    """
    if isinstance(paths, str):
        paths = [paths]
    files = _expand(paths)
    model = IntendedModel()
    mapping: dict[str, str] = {}
    docs = []
    for f, explicit in files:
        if is_mapping_file(f):
            mapping.update(parse_mapping(read_document(f)))
            model.files.append(f)
            continue
        doc = read_document(f)
        if is_asyncapi(doc.data) or is_native(doc.data):
            docs.append(doc)
        elif explicit:
            raise IntendedError(f"{f}: neither an AsyncAPI document (no `asyncapi` key) nor a choreoscope "
                                "intended-workflow document (no `workflows` key); see docs/intended-format.md")
        else:
            model.skipped.append(f)
    if not docs and not model.files:
        # An empty or mistyped directory would otherwise declare nothing, so every observed edge
        # would come back as undeclared drift.
        skipped = f" ({len(model.skipped)} other file(s) skipped: {', '.join(model.skipped[:3])})" if model.skipped else ""
        raise IntendedError(f"{', '.join(paths)}: no AsyncAPI or choreoscope intended-workflow documents found "
                            f"(*{', *'.join(sorted(SUFFIXES))}, searched recursively){skipped}")
    decls = []
    seen_services: dict[str, str] = {}
    for doc in docs:
        try:
            _add_document(doc, model, mapping, decls, seen_services)
        except RecursionError:
            # a YAML alias that contains itself (`&a [*a]`) makes a cyclic value
            raise IntendedError(f"{doc.path}: refers to itself (a YAML alias inside its own anchor) or "
                                "is nested too deeply; write the value out") from None
    add_declarations(model, decls)
    names = [w.name for w in model.workflows]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise IntendedError(f"workflow name(s) declared in more than one document: {', '.join(dupes)}")
    return model


def _add_document(doc, model: IntendedModel, mapping: dict[str, str], decls: list,
                  seen_services: dict[str, str]) -> None:
    model.files.append(doc.path)
    if is_asyncapi(doc.data):
        decl = parse_asyncapi(doc, mapping)
        if decl.service in seen_services:
            raise IntendedError(f"{doc.path}: describes service {decl.service!r} which "
                                f"{seen_services[decl.service]} already describes; one AsyncAPI "
                                "document per service (rename with a choreoscope-mapping.yaml)")
        seen_services[decl.service] = doc.path
        decls.append(decl)
    else:
        load_native(doc, model)
