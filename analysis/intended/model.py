"""The intended model every importer produces: declared service-level edges, orderings, owners.

Native documents declare per workflow; AsyncAPI documents declare per service and so globally
(`IntendedModel.global_edges`), because AsyncAPI has no notion of a workflow.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class IntendedError(ValueError):
    """An intended-workflow document is invalid; the message names file, path and expectation."""


@dataclass(frozen=True)
class DeclaredEdge:
    """producer -> consumer for an event, or caller -> callee for a call (event None)."""

    src: str
    dst: str
    via: str  # "event" | "call"
    event: str | None = None

    @property
    def key(self) -> tuple[str, str, str, str | None]:
        return (self.src, self.dst, self.via, self.event)


@dataclass
class DeclaredOrdering:
    """`after` must not start before `before` has finished (in every instance)."""

    before: str
    after: str
    event: str | None = None
    before_operation: str | None = None
    after_operation: str | None = None
    source: str = ""


@dataclass
class IntendedWorkflow:
    name: str
    source: str
    owner: str | None = None
    entry_service: str | None = None
    entry_operation: str | None = None
    edges: dict[tuple, DeclaredEdge] = field(default_factory=dict)
    call_operations: dict[tuple, list[str]] = field(default_factory=dict)  # (caller, callee) -> ops
    orderings: list[DeclaredOrdering] = field(default_factory=list)
    compensations: list[dict] = field(default_factory=list)
    events: set[str] = field(default_factory=set)
    services: set[str] = field(default_factory=set)

    def add_edge(self, edge: DeclaredEdge) -> None:
        self.edges.setdefault(edge.key, edge)
        self.services.update((edge.src, edge.dst))
        if edge.event:
            self.events.add(edge.event)


@dataclass
class IntendedModel:
    workflows: list[IntendedWorkflow] = field(default_factory=list)
    global_edges: dict[tuple, DeclaredEdge] = field(default_factory=dict)
    global_sources: dict[tuple, str] = field(default_factory=dict)  # edge key -> where declared
    global_events: set[str] = field(default_factory=set)  # every event an AsyncAPI doc mentions
    owners: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # files in scanned directories that are neither

    def all_edges(self) -> dict[tuple, DeclaredEdge]:
        edges = dict(self.global_edges)
        for wf in self.workflows:
            for k, e in wf.edges.items():
                edges.setdefault(k, e)
        return edges

    @property
    def declares_calls(self) -> bool:
        """Calls are compared only when the model says anything about calls at all."""
        return any(e.via == "call" for e in self.all_edges().values())

    def callers(self) -> set[str]:
        """Services for which some call is declared: their calls to external hosts are compared."""
        return {e.src for e in self.all_edges().values() if e.via == "call"}

    def orderings(self) -> list[tuple[IntendedWorkflow, DeclaredOrdering]]:
        return [(wf, o) for wf in self.workflows for o in wf.orderings]
