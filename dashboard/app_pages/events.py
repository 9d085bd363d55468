"""Event catalog: per event its producers, consumers, owners, volume, consumer lag, attribute sets
by producer version, and the flags the detectors raised (dead, orphan, drift)."""

from __future__ import annotations

import streamlit as st

from choreoscope.dashboard.intended_owners import owners
from choreoscope.dashboard.store_access import context, query

FLAG_KINDS = {"dead_event": "dead", "orphan_event": "orphan", "schema_drift": "drift",
              "event_cycle": "cycle", "implicit_ordering": "implicit order",
              "callback_coupling": "callback"}


def render() -> None:
    st.title("Event catalog")
    cat = query("event_catalog")
    if cat.empty:
        st.info("No messaging spans (producer/consumer with a destination) in this store.")
        return
    f = query("findings")
    owner_of, errors = owners(context().intended_paths)
    for e in errors:
        st.warning(e)
    flags: dict[str, list[str]] = {}
    for r in f.itertuples():
        if r.event and r.kind in FLAG_KINDS:
            flags.setdefault(r.event, [])
            if FLAG_KINDS[r.kind] not in flags[r.event]:
                flags[r.event].append(FLAG_KINDS[r.kind])
    cat = cat.copy()
    cat["producers"] = cat["producers"].map(lambda x: list(x) if x is not None else [])
    cat["consumers"] = cat["consumers"].map(lambda x: list(x) if x is not None else [])
    cat["owners"] = cat["producers"].map(lambda ps: sorted({owner_of[p] for p in ps if p in owner_of}))
    cat["flags"] = cat["event"].map(lambda e: " ".join(flags.get(e, [])))
    st.caption(f"{len(cat)} events · flags from findings: "
               + " · ".join(f"{v}: {k}" for k, v in FLAG_KINDS.items()))
    st.dataframe(
        cat[["event", "flags", "produced", "consumed", "lag_p50_ms", "lag_p95_ms", "producers", "consumers",
             "owners"]],
        hide_index=True, width="stretch",
        column_config={"lag_p50_ms": st.column_config.NumberColumn("lag p50 (ms)", format="%.1f"),
                       "lag_p95_ms": st.column_config.NumberColumn("lag p95 (ms)", format="%.1f"),
                       "produced": "produced", "consumed": "consumed"},
    )
    _clock_note(cat)
    event = st.selectbox("Event details", list(cat["event"]), key="event_pick")
    attrs = query("event_attribute_sets", event)
    st.markdown(f"**Attribute sets of `{event}` by producer version**")
    if attrs.empty:
        st.caption("No producer span seen: the event is consumed, never produced here.")
    else:
        st.dataframe(attrs, hide_index=True, width="stretch")
    for r in f[f["event"] == event].to_dict("records"):
        st.markdown(f"- {FLAG_KINDS.get(r['kind'], r['kind'])}: {r['summary']}")


def _clock_note(cat) -> None:
    """Say on which clocks lag is measured, which services' clocks were corrected, and where a
    consumer still starts before its producer (a clock the analysis could not correct)."""
    fixed = query("clock_corrections")
    line = ("Lag: consumer start − producer start over the causal event edges, on skew-corrected clocks. ")
    if fixed.empty:
        line += "No service's clock needed a correction."
    else:
        line += "Clocks corrected: " + ", ".join(f"{r.service} {r.offset_ms:+,.1f} ms" for r in fixed.itertuples()) + "."
    st.caption(line)
    early = cat[cat["lag_p50_ms"] < 0]
    if not early.empty:
        st.warning("Consumers still start before their producer on " + ", ".join(
            f"`{r.event}` (p50 {r.lag_p50_ms:,.1f} ms)" for r in early.itertuples())
            + ": a clock the analysis could not correct (or a producer span that starts after the send).")


if __name__ == "__main__":  # Streamlit runs each page file as a script
    render()
