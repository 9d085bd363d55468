"""`choreoscope export asyncapi INPUT... --out DIR`: one AsyncAPI 3.0 document per observed service."""

from __future__ import annotations

import sys
from pathlib import Path

from choreoscope.analysis.asyncapi_export import build_documents, document_filename, dump_document
from choreoscope.analysis.open_inputs import InputError, open_inputs, warn_load_errors
from choreoscope.analysis.pipeline import AnalysisError, run_pipeline
from choreoscope.collector.store import StoreError


def export_asyncapi(inputs: list[str], db: str, out_dir: str) -> list[Path]:
    """Analyse the inputs and write <out_dir>/<service>.yaml; returns the paths written."""
    opened = open_inputs(inputs, db)
    try:
        warn_load_errors(opened)
        run_pipeline(opened.con)
        docs = build_documents(opened.con, opened.description)
    finally:
        opened.con.close()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written, used = [], set()
    for service, doc in sorted(docs.items()):
        name = document_filename(service)
        while name.lower() in used:  # services differing only by case or punctuation
            name += "_"
        used.add(name.lower())
        path = out / f"{name}.yaml"
        path.write_text(dump_document(doc), encoding="utf-8")
        written.append(path)
    return written


def run(args) -> int:
    if args.what != "asyncapi":
        print(f"error: cannot export {args.what!r}", file=sys.stderr)
        return 2
    try:
        written = export_asyncapi(args.inputs, args.db, args.out)
    except (InputError, StoreError, AnalysisError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} AsyncAPI 3.0 document(s) to {args.out}", file=sys.stderr)
    return 0
