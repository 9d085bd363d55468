"""The app script's access to the store: the registered live context, or a read-only file.

`query(name, *args)` runs `dashboard.data.<name>` on a fresh cursor and caches the result keyed on
the data version (analysis run, loads), so pages never recompute per click.
"""

from __future__ import annotations

import os

import streamlit as st

from choreoscope.collector import store
from choreoscope.dashboard import data
from choreoscope.dashboard.context_registry import DashboardContext, current, register

DB_ENV = "CHOREOSCOPE_DB"


@st.cache_resource(show_spinner=False)
def _open_read_only(path: str) -> DashboardContext:
    return DashboardContext(con=store.connect(path, read_only=True), db_path=path, read_only=True)


def context() -> DashboardContext:
    """The registered context; else the store named by $CHOREOSCOPE_DB, opened read-only."""
    ctx = current()
    if ctx is None:
        path = os.environ.get(DB_ENV)
        if not path:
            st.error("No store to show. Start the dashboard with `choreoscope dashboard DB` "
                     "or `choreoscope serve`.")
            st.stop()
        ctx = _open_read_only(path)
        register(ctx)
    return ctx


@st.cache_data(show_spinner=False, max_entries=512)
def _cached(version: tuple, name: str, args: tuple):
    cur = current().cursor()
    try:
        return getattr(data, name)(cur, *args)
    finally:
        cur.close()


def query(name: str, *args):
    """`dashboard.data.<name>(cursor, *args)`, cached per data version."""
    ctx = context()
    return _cached(ctx.data_version(), name, tuple(tuple(a) if isinstance(a, list) else a for a in args))


def fresh(name: str, *args):
    """Uncached, for what changes every second (live counters)."""
    cur = context().cursor()
    try:
        return getattr(data, name)(cur, *args)
    finally:
        cur.close()
