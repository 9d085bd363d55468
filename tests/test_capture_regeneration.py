"""A live capture made afresh, brokers and all: the celery_redis capture's own regeneration script
runs a real Redis and six Celery workers for a few orders, and choreoscope must hold on spans it
has never seen. The truth here is what the capture's inspector backs on the new spans (races are
real scheduling, so a planted finding may not happen in a short run: it is then left out, never
counted either way); every backed finding must be reported and no backed look-alike may be.

Needs Debian `redis-server` and the capture's Python packages (in the `test` extra). Skipped
without them, unless CHOREOSCOPE_REQUIRE_CAPTURES=1 (`.ci/run` sets it) makes that a failure.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from choreoscope.analysis.analyze_cmd import analyze
from tests.corpus import score
from tests.paths import REPO

CAPTURE_DIR = REPO / "sample_traces" / "captures" / "celery_redis"
INSTANCES = 30  # orders per flow: ~45 s here; enough that most planted races happen


def _missing() -> str | None:
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (Debian: apt-get install redis-server)"
    for module in ("celery", "redis", "flask", "sqlalchemy", "opentelemetry.instrumentation.celery"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install -e '.[test]')"
    return None


def _inspector():
    spec = importlib.util.spec_from_file_location("celery_redis_inspector", CAPTURE_DIR / "inspect_capture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fresh_capture(tmp_path_factory):
    missing = _missing()
    if missing:
        if os.environ.get("CHOREOSCOPE_REQUIRE_CAPTURES") == "1":
            pytest.fail(f"CHOREOSCOPE_REQUIRE_CAPTURES=1 but {missing}")
        pytest.skip(missing)
    out = tmp_path_factory.mktemp("celery") / "capture.otlp.jsonl.gz"
    proc = subprocess.run([sys.executable, str(CAPTURE_DIR / "regenerate.py"), "--instances", str(INSTANCES),
                           "--out", str(out)], capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0 and out.exists(), proc.stdout[-2000:] + proc.stderr[-4000:]
    return out


def test_a_fresh_celery_capture_gives_every_finding_its_inspector_backs(fresh_capture, tmp_path):
    inspector = _inspector()
    truth = inspector.read_truth(CAPTURE_DIR / "truth.yaml")
    cap = inspector.Capture(inspector.load_spans(fresh_capture))
    edges = inspector.cross_edges(cap)
    backed = {section: [e for e in truth.get(section) or [] if inspector.check(cap, section, e, edges)[0]]
              for section in ("findings", "must_not")}
    # the run must have produced most of what the capture plants, or it tests nothing
    assert len(backed["findings"]) >= len(truth["findings"]) - 1, backed["findings"]
    assert len(backed["must_not"]) >= len(truth["must_not"]) - 2
    subset = tmp_path / "backed-truth.yaml"
    subset.write_text(yaml.safe_dump(backed))

    report = analyze([str(fresh_capture)], ":memory:")
    s = score(report, subset)
    assert not s.lookalikes, f"look-alikes reported on a fresh capture: {s.lookalikes}"
    assert not s.missed, f"backed findings missed on a fresh capture: {s.missed}"
    recovered = {(w["entry"]["service"], w["entry"]["operation"]): w["instances"] for w in report["workflows"]}
    for w in truth["workflows"]:
        assert recovered.get((w["entry"]["service"], w["entry"]["operation"])) == INSTANCES, (w, recovered)
