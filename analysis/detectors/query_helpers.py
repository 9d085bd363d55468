"""Small helpers the detectors share: query rows as dicts, workflow entries, ratios.

Everything per span stays in SQL; Python only sees aggregated rows (tens to hundreds).
"""

from __future__ import annotations

import duckdb


def rows(con: duckdb.DuckDBPyConnection, sql: str, params: list | None = None) -> list[dict]:
    """The result of `sql` as a list of dicts (fully fetched, so the connection is free again)."""
    result = con.execute(sql, params or [])
    names = [d[0] for d in result.description]
    return [dict(zip(names, row)) for row in result.fetchall()]


def workflow_entries(con: duckdb.DuckDBPyConnection) -> dict[str, dict]:
    """workflow_id -> {name, entry_service, entry_operation, pattern, instances}."""
    return {
        r["workflow_id"]: r
        for r in rows(con, "SELECT workflow_id, name, entry_service, entry_operation, pattern, instances "
                           "FROM workflows JOIN workflow_patterns USING (workflow_id)")
    }


def ratio(part: float, whole: float) -> float:
    return float(part) / float(whole) if whole else 0.0
