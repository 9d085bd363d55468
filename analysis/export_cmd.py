"""`choreoscope export asyncapi INPUT... --out DIR`: one AsyncAPI 3.0 document per observed service.
`choreoscope export ocel INPUT... --out FILE.json`: the stitched instances as an OCEL 2.0 event log.
`choreoscope export parquet INPUT... --out DIR`: the spans and links as Parquet, partitioned by day."""

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


def export_ocel(inputs: list[str], db: str, out_file: str) -> dict:
    """Analyse the inputs and write their OCEL 2.0 JSON log to `out_file`; returns the log."""
    import json

    from choreoscope.analysis.ocel_export import build_ocel

    out = Path(out_file)
    if out.is_dir():
        raise OSError(f"--out {out_file} is a directory; export ocel writes one JSON file")
    opened = open_inputs(inputs, db)
    try:
        warn_load_errors(opened)
        run_pipeline(opened.con)
        doc = build_ocel(opened.con)
    finally:
        opened.con.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return doc


def export_parquet_store(inputs: list[str], db: str, out_dir: str) -> dict:
    """Write the spans and links of the inputs under `out_dir`, partitioned by day (no analysis)."""
    from choreoscope.analysis.parquet_export import export_parquet

    opened = open_inputs(inputs, db)
    try:
        warn_load_errors(opened)
        return export_parquet(opened.con, out_dir)
    finally:
        opened.con.close()


def _run_parquet(args) -> int:
    from choreoscope.analysis.parquet_export import ExportError

    try:
        counts = export_parquet_store(args.inputs, args.db, args.out)
    except (InputError, StoreError, ExportError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {counts['spans']} span(s) and {counts['span_links']} link(s), {counts['days']} day(s), "
          f"to {args.out}/spans and {args.out}/span_links", file=sys.stderr)
    return 0


def run(args) -> int:
    if args.what == "parquet":
        return _run_parquet(args)
    if args.what not in ("asyncapi", "ocel"):
        print(f"error: cannot export {args.what!r}", file=sys.stderr)
        return 2
    try:
        if args.what == "ocel":
            doc = export_ocel(args.inputs, args.db, args.out)
        else:
            written = export_asyncapi(args.inputs, args.db, args.out)
    except (InputError, StoreError, AnalysisError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.what == "ocel":
        print(f"wrote an OCEL 2.0 log of {len(doc['events'])} event(s) and {len(doc['objects'])} object(s) "
              f"to {args.out}", file=sys.stderr)
    else:
        print(f"wrote {len(written)} AsyncAPI 3.0 document(s) to {args.out}", file=sys.stderr)
    return 0
