"""Small display helpers shared by pages."""

from __future__ import annotations

import pandas as pd
import streamlit as st

SEVERITY_ICON = {"critical": ":red[:material/error:]", "warning": ":orange[:material/warning:]",
                 "info": ":blue[:material/info:]"}


def short(text: str, n: int = 60) -> str:
    text = str(text)
    return text if len(text) <= n else text[: n - 1] + "…"


def pick(label: str, options: list[str], param: str, format_func=str, key: str | None = None) -> str | None:
    """A selectbox whose choice follows (and sets) the query parameter `param`, so pages link
    to each other and a URL reopens the same view."""
    if not options:
        return None
    wanted = st.query_params.get(param)
    index = options.index(wanted) if wanted in options else 0
    choice = st.selectbox(label, options, index=index, format_func=format_func, key=key or f"pick_{param}")
    if choice != wanted:
        st.query_params[param] = choice
    return choice


def finding_title(row) -> str:
    where = " → ".join(row["services"])
    about = [v for v in (row.get("event"), row.get("resource")) if isinstance(v, str) and v]
    extra = "".join(f" · {v}" for v in about)
    return f"{SEVERITY_ICON.get(row['severity'], '')} {row['kind']} — {where}{extra} ({row['confidence']:.2f})"


def show_finding(row, key: str) -> None:
    """A finding as an expander: summary, recommendation, evidence, example instances."""
    from choreoscope.dashboard import nav
    from choreoscope.dashboard.store_access import query

    with st.expander(finding_title(row)):
        st.markdown(f"**{row['summary']}**")
        if row.get("recommendation"):
            st.markdown(f"*Recommendation:* {row['recommendation']}")
        meta = {k: row[k] for k in ("kind", "severity", "confidence", "event", "resource", "workflow_id")
                if row.get(k) is not None and not (isinstance(row[k], float) and pd.isna(row[k]))}
        st.caption(" · ".join(f"{k}: {v}" for k, v in meta.items()))
        if row["evidence"]:
            st.json(row["evidence"], expanded=False)
        if row["trace_ids"]:
            inst = query("instances_of_traces", list(row["trace_ids"]))
            st.markdown(f"Example instances ({len(inst)}):")
            for r in inst.head(5).itertuples():
                nav.link("instance", f"instance {r.instance_id[:12]} · {r.spans} spans · "
                         f"{r.errors} errors · {r.duration_ms:.0f} ms", instance=r.instance_id)
