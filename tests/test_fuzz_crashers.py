"""Every input a fuzzer ever crashed stays a regression test: tests/fuzz_crashers/<target>/* are
replayed through the same target (fuzz/targets.py), which must now handle each as its contract
says (a 400-class refusal, a reported load error, an IntendedError)."""

from __future__ import annotations

import pytest

from fuzz import targets as T

CASES = [(name, path) for name in T.TARGETS for path in T.crashers(name)]


def test_crashers_are_kept_per_target():
    # the folder exists and names only known targets (a typo would silently skip its inputs)
    assert T.CRASHERS.is_dir()
    assert {p.name for p in T.CRASHERS.iterdir() if p.is_dir()} <= set(T.TARGETS)
    assert CASES


def _open_fix(target: str, path) -> str | None:
    try:
        T.TARGETS[target](path.read_bytes())
    except Exception as exc:  # noqa: BLE001 - classified below, re-raised by the test
        return T.known_open(exc)
    return None


# Crashers whose fix is outside the fuzzing work's files (fuzz.targets.KNOWN_OPEN): strict xfails,
# so the fix landing turns them into failures that say "remove the KNOWN_OPEN entry".
PARAMS = [pytest.param(t, p, id=f"{t}/{p.name}",
                       marks=[pytest.mark.xfail(strict=True, reason=fix)] if (fix := _open_fix(t, p)) else [])
          for t, p in CASES]


@pytest.mark.parametrize(("target", "path"), PARAMS)
def test_crasher_no_longer_crashes(target, path):
    T.TARGETS[target](path.read_bytes())
