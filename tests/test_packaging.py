"""The built wheel holds one top-level import package, `choreoscope`, with the bundled samples, and
`choreoscope demo --offline` runs from the wheel's files in a directory that is not the checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile

from tests.paths import REPO


def test_the_wheel_installs_one_package_that_runs_the_demo_from_anywhere(tmp_path):
    # Built from a copy: setuptools leaves build/ in the source tree, and stale files there would
    # end up in a later wheel.
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".venv", ".git", "build", "__pycache__",
                                                                "*.egg-info", "test-artifacts", "*.duckdb"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(source)],
                   check=True, capture_output=True, text=True)
    (wheel,) = wheels.glob("choreoscope-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {"choreoscope"}
    assert any(n.startswith("choreoscope/sample_traces/dumps/") for n in names)

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, text=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    report = elsewhere / "report.json"
    run = subprocess.run([sys.executable, "-m", "choreoscope", "demo", "--offline", "--format", "json",
                          "--out", str(report)], check=False, cwd=elsewhere, env=env, capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr
    where = subprocess.run([sys.executable, "-c", "import choreoscope.analysis as a; print(a.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(target)), where  # the wheel's files, not the checkout's
    assert json.loads(report.read_text())["findings"]
