"""The stages as a graph (from the tables they declare they read and write), run side by side.

A stage can start once every stage that writes a table it reads has finished. On a small store
DuckDB runs each statement on one core (it splits a scan by row groups of 122,880 rows, and an
in-memory table keeps that size), so independent stages (deliveries, data access and handling
beside span edges, workflows and orderings) each on a cursor of their own use the second core.
On a large store every statement has both cores already and stages side by side only compete for
memory. Measured on this 2-core machine, `bench/analyze.py` end to end from its dumps, the
analysis's seconds, alternating, two runs each: 100k spans 2.78-2.97 one at a time, 2.40-2.48 side
by side; 300k 5.29-5.68 against 5.01-5.37 (the peak RSS 1.15 GB against 1.25); a scheduler of the
same kind run over the 1M-span store: 17.0-17.9 against 17.7-18.1. Hence SIDE_BY_SIDE_ROW_GROUPS.

Each cursor is a connection of its own: its TEMP tables (a stage's scratch) are its own, and it
sees what other cursors committed. So stages run side by side only outside a transaction
(`run_pipeline_atomically` runs them one at a time on its one cursor).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import duckdb

from choreoscope.collector import store

# DuckDB's rows per row group, the unit it parallelises a scan by.
ROW_GROUP_ROWS = 122_880
# Stages run side by side while the spans fill fewer than this many row groups per thread: there
# a statement leaves threads idle (see the module docstring: 1M spans on 2 threads gained nothing).
SIDE_BY_SIDE_ROW_GROUPS = 2


def workers_for(con: duckdb.DuckDBPyConnection, spans: int) -> int:
    """How many stages to run at once over a store of `spans` spans: 1, or DuckDB's threads."""
    threads = int(store.scalar(con, "SELECT current_setting('threads')"))
    return threads if threads > 1 and spans < SIDE_BY_SIDE_ROW_GROUPS * threads * ROW_GROUP_ROWS else 1


def dependencies(stages: Sequence) -> dict[str, set[str]]:
    """Stage name -> the names of the stages (among `stages`) writing a table it reads."""
    owner = {t: s.name for s in stages for t in s.writes}
    return {s.name: {owner[t] for t in s.reads if t in owner and owner[t] != s.name} for s in stages}


class StageGraphRun:
    """Run `stages` in dependency order on `workers` threads, each with a cursor of `con` (with one
    worker: in this thread on `con` itself, in the stages' order, as the pipeline always did).

    `run(cursor, stage, others)` runs one stage; `others()` is, when it asks after the stage ran,
    every table another stage may have written meanwhile (their declared writes, and the tables
    `note_dropped` was told of). It returns False when the stage failed: the stages not yet started
    are then skipped. An exception it raises stops the run and is raised here once the running stages end.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, stages: Sequence, workers: int,
                 run: Callable[[duckdb.DuckDBPyConnection, object, Callable[[], set[str]]], bool]):
        self.con, self.stages, self.workers, self.run = con, list(stages), workers, run
        self.deps = dependencies(self.stages)
        self.done: set[str] = set()
        self.running: dict[str, set[str]] = {}  # stage -> tables others wrote or dropped meanwhile
        self.failed = False
        self.raised: BaseException | None = None
        self.skipped: list[str] = []
        self.lock = threading.Condition()

    def note_dropped(self, tables: set[str]) -> None:
        """Tables dropped outside the stages (released intermediates), for the running stages' checks."""
        with self.lock:
            for seen in self.running.values():
                seen |= tables

    def go(self) -> list[str]:
        """Run; returns the names of the stages skipped after a failure, in order."""
        if self.workers <= 1:
            for stage in self.stages:
                if self.failed:
                    self.skipped.append(stage.name)
                    continue
                ok = self.run(self.con, stage, lambda: set())
                self.failed = self.failed or not ok
            return self.skipped
        threads = [threading.Thread(target=self._work, name=f"choreoscope-stages-{i}", daemon=True)
                   for i in range(self.workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if self.raised is not None:
            raise self.raised
        return [s.name for s in self.stages if s.name in self.skipped]

    def _next(self):
        """The first stage (in order) whose inputs are done; None once none is left to start."""
        with self.lock:
            while True:
                left = [s for s in self.stages if s.name not in self.done and s.name not in self.running
                        and s.name not in self.skipped]
                if self.failed or self.raised is not None:
                    self.skipped.extend(s.name for s in left)
                    left = []
                if not left:
                    return None
                ready = next((s for s in left if self.deps[s.name] <= self.done), None)
                if ready is None and not self.running:  # nothing will finish to free one: go in order
                    ready = left[0]
                if ready is not None:
                    for seen in self.running.values():  # each sees the other's writes
                        seen |= set(ready.writes)
                    self.running[ready.name] = {t for s in self.stages if s.name in self.running for t in s.writes}
                    return ready
                self.lock.wait()

    def _seen(self, name: str) -> set[str]:
        with self.lock:
            return set(self.running.get(name, ()))

    def _work(self) -> None:
        cur = self.con.cursor()
        try:
            while (stage := self._next()) is not None:
                try:
                    ok = self.run(cur, stage, lambda name=stage.name: self._seen(name))
                except BaseException as exc:  # noqa: BLE001 - raised again by go()
                    ok = False
                    with self.lock:
                        self.raised = self.raised or exc
                with self.lock:
                    del self.running[stage.name]
                    self.done.add(stage.name)
                    self.failed = self.failed or not ok
                    self.lock.notify_all()
        finally:
            cur.close()
