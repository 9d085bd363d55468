"""Service owners from the intended-workflow documents (analysis.intended), for the Event
catalog and Services pages. A document that fails to load is reported, not fatal."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=16)
def _owners(paths: tuple[str, ...]) -> tuple[dict[str, str], tuple[str, ...]]:
    if not paths:
        return {}, ()
    try:
        from choreoscope.analysis.intended import load_intended

        model = load_intended(list(paths))
    except Exception as exc:  # noqa: BLE001 - shown on the page; the rest of the page still works
        return {}, (f"intended documents: {exc}",)
    return dict(model.owners), ()


def owners(paths: list[str]) -> tuple[dict[str, str], list[str]]:
    """(service -> owner, errors) declared by the documents at `paths`."""
    found, errors = _owners(tuple(paths))
    return found, list(errors)
