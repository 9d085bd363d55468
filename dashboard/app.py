"""choreoscope dashboard: the entry script Streamlit runs (in-process, see dashboard/server.py).

Pages live in dashboard/app_pages/, one file each (run as a script, `render()` inside); they read the materialised
analysis tables through dashboard.store_access.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from choreoscope.dashboard import nav
from choreoscope.dashboard.store_access import context, fresh

PAGES_DIR = Path(__file__).resolve().parent / "app_pages"

st.set_page_config(page_title="choreoscope", page_icon=":material/hub:", layout="wide")

PAGE_SPECS = [
    ("overview", "Overview", ":material/dashboard:"),
    ("system_map", "System map", ":material/lan:"),
    ("workflow", "Workflow", ":material/account_tree:"),
    ("instance", "Instance", ":material/timeline:"),
    ("findings", "Findings", ":material/warning:"),
    ("events", "Event catalog", ":material/mail:"),
    ("services", "Services", ":material/dns:"),
    ("load", "Load", ":material/upload:"),
]
for key, title, icon in PAGE_SPECS:
    nav.PAGES[key] = st.Page(str(PAGES_DIR / f"{key}.py"), title=title, icon=icon, url_path=key,
                             default=key == "overview")

ctx = context()
with st.sidebar:
    st.markdown("### :material/hub: choreoscope")
    st.caption(("live · " if ctx.live else "offline · read-only · " if ctx.read_only else "") + ctx.db_path)

page = st.navigation(list(nav.PAGES.values()))
if page.title != "Load" and not fresh("has_analysis"):
    if fresh("summary")["spans"] == 0:
        st.info("No spans yet. Send OTLP to the receiver, or upload trace dumps on the **Load** page.")
    else:
        st.info("Spans are stored but not analysed yet" + (" — the analysis loop will run shortly."
                if ctx.live else "."))
    if page.title != "Overview":
        st.stop()
page.run()
