"""Services: per service its roles, fan-in / fan-out, and the workflows it takes part in."""

from __future__ import annotations

import streamlit as st

from choreoscope.dashboard.app_pages.common import FINDINGS_PER_PAGE, show_finding
from choreoscope.dashboard.intended_owners import owners
from choreoscope.dashboard.store_access import context, query

COORDINATOR_KINDS = ("implicit_orchestrator", "god_coordinator")


def render() -> None:
    st.title("Services")
    svc = query("service_table")
    if svc.empty:
        st.info("No services yet.")
        return
    f = query("findings")
    wfs = query("workflows")
    owner_of, _ = owners(context().intended_paths)
    orchestrators = set(wfs.loc[wfs["pattern"].isin(["orchestration", "hybrid"]), "entry_service"])
    score: dict[str, float] = {}
    for r in f[f["kind"].isin(COORDINATOR_KINDS)].itertuples():
        if r.services:
            score[r.services[0]] = max(score.get(r.services[0], 0.0), float(r.confidence))
    svc = svc.copy()

    def roles(r) -> str:
        out = []
        if r["virtual"]:
            out.append("uninstrumented peer")
        if r["entry"]:
            out.append("entry")
        if r["service"] in orchestrators and r["calls_out"] >= 2:
            out.append("orchestrator")
        if score.get(r["service"], 0) >= 0.5:
            out.append("coordinator")
        if r["fan_out"] == 0 and r["fan_in"] > 0:
            out.append("sink")
        return ", ".join(out)

    svc["roles"] = svc.apply(roles, axis=1)
    svc["coordinator_score"] = svc["service"].map(lambda s: score.get(s))
    svc["owner"] = svc["service"].map(lambda s: owner_of.get(s, ""))
    st.dataframe(
        svc[["service", "roles", "owner", "spans", "errors", "fan_in", "fan_out", "coordinator_score",
             "workflow_count"]],
        hide_index=True, width="stretch",
        column_config={"coordinator_score": st.column_config.ProgressColumn(
            "coordinator score", min_value=0.0, max_value=1.0, format="%.2f"),
            "workflow_count": "workflows"})
    service = st.selectbox("Service details", list(svc["service"]), key="service_pick")
    row = svc.set_index("service").loc[service]
    names = dict(zip(wfs["workflow_id"], wfs["name"]))
    st.markdown(f"**{service}** — {row['roles'] or 'participant'} · fan-in {row['fan_in']} · "
                f"fan-out {row['fan_out']}")
    st.markdown("Workflows: " + ", ".join(names.get(w, w) for w in row["workflows"]))
    st.dataframe(query("service_edges", service), hide_index=True, width="stretch")
    mine = f[f["services"].map(lambda s: service in s)]
    st.subheader(f"Findings naming {service} ({len(mine)})")
    for i, r in enumerate(mine.head(FINDINGS_PER_PAGE).to_dict("records")):
        show_finding(r, key=f"s{i}")
    if len(mine) > FINDINGS_PER_PAGE:
        st.caption(f"The first {FINDINGS_PER_PAGE}; the Findings page lists all {len(mine)} (filter by Service).")


if __name__ == "__main__":  # Streamlit runs each page file as a script
    render()
