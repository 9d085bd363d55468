"""One local Spark session for the whole test run (starting one costs seconds), or a skip that says
what is missing: the Spark tests need pyspark (the `test` extra) and a Java runtime (17). CI sets
CHOREOSCOPE_REQUIRE_SPARK=1 (.ci/run installs both), and there a missing one fails instead."""

from __future__ import annotations

import os
import shutil

import pytest


def _missing(reason: str) -> None:
    if os.environ.get("CHOREOSCOPE_REQUIRE_SPARK") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def spark():
    try:
        import pyspark  # noqa: F401
    except ImportError:
        _missing("pyspark is not installed (pip install -e '.[test]')")
    if shutil.which("java") is None:
        _missing("no java on PATH: Spark needs a Java 17 runtime (Debian: openjdk-17-jre-headless)")
    from choreoscope.analysis.engine_spark import spark_session

    session = spark_session("local[2]", {"spark.driver.memory": "1g"})
    yield session
    session.stop()
