"""`validate_report` checks every report with a validator compiled by fastjsonschema (as draft 7)
and falls back to jsonschema (the schema's own draft, 2020-12) for the error. The two must give
the same verdict on any document: the golden reports (valid) and seeded mutations of them (a
value of another type, a key removed, a number out of range, a string outside its enum)."""

from __future__ import annotations

import copy
import json
import random

import fastjsonschema
import jsonschema
import pytest

from choreoscope.analysis.report import _compiled_report_check, report_schema, validate_report
from tests.golden_reports import GOLDEN_DIR

REPORTS = sorted(GOLDEN_DIR.glob("*.json"), key=lambda p: p.stat().st_size)[:6]  # the smallest: quick


def _fast_accepts(doc) -> bool:
    try:
        _compiled_report_check()(doc)
        return True
    except fastjsonschema.JsonSchemaValueException:
        return False


def _reference_accepts(doc) -> bool:
    return jsonschema.Draft202012Validator(report_schema()).is_valid(doc)


def _places(doc, path=()):
    """Every (container, key) in the document."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield doc, key
            yield from _places(value, path + (key,))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield doc, i
            yield from _places(value, path + (i,))


def _mutations(doc, rng: random.Random, n: int):
    for _ in range(n):
        out = copy.deepcopy(doc)
        places = list(_places(out))
        container, key = rng.choice(places)
        value = container[key]
        kind = rng.randrange(5)
        if kind == 0 and isinstance(container, dict):
            del container[key]
        elif kind == 1:
            container[key] = rng.choice(["x", 3, -1, 2.5, None, True, [], {}, [1], {"a": 1}])
        elif kind == 2 and isinstance(value, (int, float)) and not isinstance(value, bool):
            container[key] = rng.choice([-1, -0.5, 1.5, 10**12])
        elif kind == 3 and isinstance(value, str):
            container[key] = value + "-not-a-known-value"
        else:
            container[key] = {"unexpected": value}
        yield out


@pytest.mark.parametrize("path", REPORTS, ids=lambda p: p.stem)
def test_both_validators_give_the_same_verdicts(path):
    report = json.loads(path.read_text())
    assert _fast_accepts(report) and _reference_accepts(report)
    validate_report(report)
    rng = random.Random(path.stem)
    refused = 0
    for doc in _mutations(report, rng, 120):
        fast, reference = _fast_accepts(doc), _reference_accepts(doc)
        assert fast == reference, json.dumps(doc)[:2000]
        refused += not reference
    assert refused >= 20  # the mutations reach what the schema constrains


def test_a_refused_report_raises_jsonschemas_error():
    report = json.loads(REPORTS[0].read_text())
    report["workflows"] = "none"
    with pytest.raises(jsonschema.ValidationError) as caught:
        validate_report(report)
    assert list(caught.value.absolute_path) == ["workflows"]
