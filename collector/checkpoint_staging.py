"""Where the receiver commits while its store checkpoints: a staging database beside the store.

A CHECKPOINT holds the store's spans table: an INSERT into it waits until the checkpoint ends
(0.4-0.8 s every ~100k spans on this 2-core machine), and every export in flight waited with it,
which set serve's p99 export latency (issue #12). A database attached beside the store is not
held by the store's checkpoint: 36 commits of 1,000 rows went into one during a 0.2 s CHECKPOINT
of a 143 MB WAL, the slowest in 28 ms. So the writer runs the store's CHECKPOINT on a thread of
its own (collector/ingest.py) and meanwhile commits each group here, `<store>.staging`: committed
to its own WAL, so as durable as a commit into the store, and acknowledged the same way.

Once the checkpoint is over the writer moves the staged groups into the store, one between each
new group, so no export waits for all of them (in SQL, as the writer's plain insert; with
`store.insert_arrow`'s duplicate check when a span was stored meanwhile, a retry). The staging
tables are emptied once all are moved: a separate transaction (DuckDB writes one database per
transaction), so a crash before it leaves groups that the next move finds stored and skips. A
staging database that still holds groups when the store is next opened for writing (the receiver
was killed mid-way) is moved in then (`move_left_behind`, called by store.connect), before
anything else reads the store. An empty one is detached and deleted when the receiver stops.
"""

from __future__ import annotations

import collections
import os
import sys

import duckdb

from choreoscope.collector import store

ALIAS = "choreoscope_staging"
GROUP_COLUMN = "staged_group"


def staging_path(store_path: str) -> str:
    return store_path + ".staging"


class Staging:
    """The staging database of one store, attached to the writer's connection."""

    def __init__(self, cur: duckdb.DuckDBPyConnection, store_path: str):
        self.path = staging_path(store_path)
        quoted = self.path.replace("'", "''")
        cur.execute(f"ATTACH '{quoted}' AS {ALIAS}")
        group = [(GROUP_COLUMN, "BIGINT")]
        cur.execute(store.table_ddl(f"{ALIAS}.spans", store.SPAN_COLUMNS + group, None))
        cur.execute(store.table_ddl(f"{ALIAS}.span_links", store.LINK_COLUMNS + group, None))
        left = [g for (g,) in cur.execute(
            f"SELECT DISTINCT {GROUP_COLUMN} FROM {ALIAS}.spans ORDER BY 1").fetchall()]
        self.groups: collections.deque[int] = collections.deque(left)  # staged, not moved yet
        self._next = (left[-1] + 1) if left else 0

    def commit(self, cur: duckdb.DuckDBPyConnection, spans, links) -> None:
        """Stage one group (Arrow tables of the store's columns) in one transaction."""
        group = self._next
        _staged_spans = spans  # read by name below (DuckDB's replacement scan)
        _staged_links = links
        with store.transaction(cur):
            cur.execute(f"INSERT INTO {ALIAS}.spans SELECT *, {group} FROM _staged_spans").fetchall()
            if links is not None and links.num_rows:
                cur.execute(f"INSERT INTO {ALIAS}.span_links SELECT *, {group} FROM _staged_links").fetchall()
        self._next += 1
        self.groups.append(group)

    def move_one(self, cur: duckdb.DuckDBPyConnection) -> tuple[int, int]:
        """Move the oldest staged group into the store: (spans in it, spans the store took; the
        rest were stored already). The staging tables are emptied once the last group is moved."""
        group = self.groups[0]
        cols, lcols = ", ".join(store.SPAN_COLUMN_NAMES), ", ".join(store.LINK_COLUMN_NAMES)
        spans = f"(SELECT {cols} FROM {ALIAS}.spans WHERE {GROUP_COLUMN} = {group})"
        links = f"(SELECT {lcols} FROM {ALIAS}.span_links WHERE {GROUP_COLUMN} = {group})"
        try:  # most groups hold no span stored meanwhile: the plain insert, in SQL, as the writer's
            with store.transaction(cur):
                cur.execute(f"INSERT INTO span_keys SELECT {store.SPAN_KEY_SQL} FROM {spans}")
                n = added = store.scalar(cur, f"INSERT INTO spans ({cols}) SELECT * FROM {spans}")
                cur.execute(f"INSERT INTO span_links ({lcols}) SELECT * FROM {links}")
        except duckdb.ConstraintException:  # a retry reached the store meanwhile: the checked insert
            span_rows, link_rows = cur.sql(spans).to_arrow_table(), cur.sql(links).to_arrow_table()
            n = span_rows.num_rows
            with store.transaction(cur):
                added = store.insert_arrow(cur, span_rows, link_rows if link_rows.num_rows else None)
        self.groups.popleft()
        if not self.groups:
            with store.transaction(cur):
                for table in ("spans", "span_links"):
                    cur.execute(f"DELETE FROM {ALIAS}.{table}")
            try:  # its WAL holds only what was moved out: start it afresh
                cur.execute(f"CHECKPOINT {ALIAS}")
            except duckdb.Error:
                pass  # another transaction is open: the WAL waits for the next time it empties
        return n, added

    def close(self, cur: duckdb.DuckDBPyConnection) -> None:
        """Detach; an empty staging database is deleted (one with groups is moved in at the next start)."""
        cur.execute(f"DETACH {ALIAS}")
        if not self.groups:
            for path in (self.path, self.path + ".wal"):
                try:
                    os.remove(path)
                except FileNotFoundError:
                    pass


def move_left_behind(con: duckdb.DuckDBPyConnection, store_path: str) -> int:
    """Move the groups a killed receiver left staged into the store just opened for writing (said
    on stderr); returns the spans it took. No staging database beside the store: nothing to do."""
    if not os.path.exists(staging_path(store_path)):
        return 0
    cur = con.cursor()
    try:
        staging = Staging(cur, store_path)
        if staging.groups:
            print(f"choreoscope: moving {len(staging.groups)} group(s) of acknowledged spans left in "
                  f"{staging.path} by a receiver that did not stop cleanly into the store",
                  file=sys.stderr, flush=True)
        taken = 0
        while staging.groups:
            taken += staging.move_one(cur)[1]
        staging.close(cur)
        return taken
    finally:
        cur.close()
