"""The dashboard's entry script when it must ask for the bearer token (`serve --bearer-token-file`
with the dashboard bound off loopback; see dashboard/server.py).

Until the browser session has typed the token, only this form runs: app.py, its pages and the
store are never reached. Then app.py runs as the entry script would.
"""

from __future__ import annotations

import hmac
import runpy

import streamlit as st

from choreoscope.dashboard.server import APP_SCRIPT, required_token

_SESSION_KEY = "choreoscope_token_ok"

token = required_token()
if token is not None and not st.session_state.get(_SESSION_KEY):
    st.set_page_config(page_title="choreoscope", page_icon=":material/lock:", layout="centered")
    st.markdown("### :material/lock: choreoscope")
    with st.form("token_gate"):
        entered = st.text_input("Token", type="password",
                                help="the content of the file given to `choreoscope serve --bearer-token-file`")
        submitted = st.form_submit_button("Open the dashboard")
    if submitted:
        if hmac.compare_digest(entered.strip().encode(), token.encode()):
            st.session_state[_SESSION_KEY] = True
            st.rerun()
        st.error("That is not the token.")
    st.stop()

runpy.run_path(APP_SCRIPT, run_name="__main__")
