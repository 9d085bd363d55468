"""The app's pages by key, so one page can link to another with query parameters."""

from __future__ import annotations

import streamlit as st

PAGES: dict[str, st.Page] = {}


def link(key: str, label: str, **params: str) -> None:
    st.page_link(PAGES[key], label=label, query_params=params or None)


def go(key: str, **params: str) -> None:
    st.switch_page(PAGES[key], query_params=params or None)
