"""Where the tests find the repository and the shared real dumps: always relative to this file,
so the tests behave the same in any checkout (`../shared/` beside the repository)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REAL_TRACES = SHARED / "real_traces"
