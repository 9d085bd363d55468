"""Load: upload trace dumps (and intended documents) and analyse them — into the live store when
serving, else into a temporary store that the dashboard then shows."""

from __future__ import annotations

import tempfile
from pathlib import Path

import streamlit as st

from choreoscope.analysis.pipeline import AnalysisError, run_pipeline_atomically
from choreoscope.collector import store
from choreoscope.collector.loaders import load_paths
from choreoscope.dashboard.context_registry import DashboardContext, register
from choreoscope.dashboard.store_access import context

_UPLOAD_DIR = Path(tempfile.mkdtemp(prefix="choreoscope-upload-"))


def _save(files, sub: str) -> list[str]:
    folder = _UPLOAD_DIR / sub
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for f in files:
        path = folder / Path(f.name).name
        path.write_bytes(f.getvalue())
        paths.append(str(path))
    return paths


def load_and_analyse(ctx: DashboardContext, dumps: list[str], intended: list[str]) -> tuple[DashboardContext, list[str]]:
    """Load `dumps` and re-run the analysis; returns the context now shown and the messages."""
    messages: list[str] = []
    if ctx.live or not ctx.read_only:
        target = ctx
    else:
        path = str(_UPLOAD_DIR / f"store-{ctx.loads + 1}.duckdb")
        target = DashboardContext(con=store.connect(path), db_path=path, read_only=False,
                                  intended_paths=list(ctx.intended_paths), loads=ctx.loads)
        messages.append(f"The store {ctx.db_path} is open read-only: loaded into a temporary store {path}.")
    target.intended_paths = list(dict.fromkeys(target.intended_paths + intended))
    with target.lock:
        cur = target.cursor()
        try:
            result = load_paths(cur, dumps)
        finally:
            cur.close()
        messages.append(f"{result.spans_loaded:,} spans loaded, {result.duplicates_skipped:,} duplicates "
                        f"skipped, {result.spans_rejected:,} rejected.")
        messages += result.errors[:20]
        if target.loop is not None:
            target.loop.intended_paths = target.intended_paths
            target.loop.run_once(force=True)
            if target.loop.status.last_error:
                messages.append(f"analysis failed: {target.loop.status.last_error}")
        else:
            cur = target.cursor()
            try:
                run_pipeline_atomically(cur, target.intended_paths)
            except AnalysisError as exc:
                messages.append(str(exc))
            finally:
                cur.close()
        target.loads += 1
    return target, messages


def render() -> None:
    ctx = context()
    st.title("Load")
    where = ("the live store " + ctx.db_path if ctx.live or not ctx.read_only
             else "a temporary store (the opened store is read-only)")
    st.caption(f"Upload trace dumps — OTLP JSON/protobuf, Jaeger JSON, Zipkin v2, `.gz` too — and "
               f"optionally intended-workflow documents (YAML/AsyncAPI). They are loaded into {where} "
               "and analysed.")
    dumps = st.file_uploader("Trace dumps", accept_multiple_files=True, key="up_dumps")
    intended = st.file_uploader("Intended workflows (optional)", type=["yaml", "yml", "json"],
                                accept_multiple_files=True, key="up_intended")
    if st.button("Load and analyse", type="primary", disabled=not dumps, key="load_go"):
        batch = f"batch-{ctx.loads + 1}"
        with st.spinner("Loading and analysing…"):
            target, messages = load_and_analyse(ctx, _save(dumps, batch), _save(intended or [], batch + "-intended"))
        if target is not ctx:
            register(target)
        for m in messages:
            st.write(m)
        st.success("Done. Open the Overview or Workflow page.")
    if ctx.intended_paths:
        st.caption("Intended documents in use: " + ", ".join(ctx.intended_paths))


if __name__ == "__main__":  # Streamlit runs each page file as a script
    render()
