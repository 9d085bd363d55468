"""Findings: every finding, filterable; each opens its evidence and example instances."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from choreoscope.dashboard import nav
from choreoscope.dashboard.app_pages.common import FINDINGS_PER_PAGE, show_finding, show_finding_page
from choreoscope.dashboard.store_access import query


def render() -> None:
    st.title("Findings")
    f = query("findings")
    if f.empty:
        st.success("No findings: nothing the detectors flag in these traces.")
        return
    wanted = st.query_params.get("finding")
    if wanted:
        one = f[f["finding_id"] == wanted]
        nav.link("findings", f"← all {len(f)} findings")
        if one.empty:
            st.warning("That finding is not in the latest analysis (it may have been resolved).")
        else:
            show_finding_page(one.iloc[0].to_dict())
        return
    wfs = query("workflows")
    names = dict(zip(wfs["workflow_id"], wfs["name"]))
    c = st.columns(4)
    kinds = c[0].multiselect("Kind", sorted(f["kind"].unique()), key="f_kind")
    sevs = c[1].multiselect("Severity", ["critical", "warning", "info"], key="f_sev",
                            format_func=str)
    services = c[2].multiselect("Service", sorted({s for ss in f["services"] for s in ss}), key="f_svc")
    wf_opts = sorted(w for w in f["workflow_id"].dropna().unique())
    wf_sel = c[3].multiselect("Workflow", wf_opts, key="f_wf", format_func=lambda w: names.get(w, w))
    sel = f
    if kinds:
        sel = sel[sel["kind"].isin(kinds)]
    if sevs:
        sel = sel[sel["severity"].isin(sevs)]
    if services:
        sel = sel[sel["services"].map(lambda s: bool(set(s) & set(services)))]
    if wf_sel:
        sel = sel[sel["workflow_id"].isin(wf_sel)]
    counts = sel["kind"].value_counts()
    st.caption(f"{len(sel)} of {len(f)} findings · " + " · ".join(f"{k}: {v}" for k, v in counts.items()))
    hints = sel["confidence"] < 0.5
    ordered = pd.concat([sel[~hints], sel[hints]])  # the findings first, then the hints
    start = 0
    if len(ordered) > FINDINGS_PER_PAGE:
        pages = (len(ordered) + FINDINGS_PER_PAGE - 1) // FINDINGS_PER_PAGE
        page = st.number_input(f"Page (of {pages}, {FINDINGS_PER_PAGE} findings each)", min_value=1, max_value=pages,
                               value=1, step=1, key="f_page")
        start = (int(page) - 1) * FINDINGS_PER_PAGE
    shown = ordered.iloc[start:start + FINDINGS_PER_PAGE]
    first_hint = len(sel) - int(hints.sum())
    for i, row in enumerate(shown.to_dict("records"), start=start):
        if i == first_hint:
            st.markdown(f"**Hints** (confidence below 0.5): {int(hints.sum())}")
        show_finding(row, key=f"f{i}")


if __name__ == "__main__":  # Streamlit runs each page file as a script
    render()
