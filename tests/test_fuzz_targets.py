"""Seeded property tests over every reader of outside bytes (fuzz/targets.py): the OTLP protobuf,
JSON and gzip decoders, the dump loaders and the intended-document readers. Each input is a seed
with structure-blind mutations, or a seed document with one value replaced by an arbitrary JSON
value; the target must handle it as its contract says. Derandomized and short (seconds): the
long runs are fuzz/run.py's, and what they find lands in tests/fuzz_crashers/."""

from __future__ import annotations

import json

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz import targets as T

EXAMPLES = {"otlp-proto": 200, "otlp-json": 200, "otlp-gzip": 100, "loaders": 50, "intended": 40}


def _settings(target: str):
    return settings(max_examples=EXAMPLES[target], derandomize=True, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("target", sorted(T.TARGETS))
def test_mutated_inputs_are_handled(target):
    seeds = T.seeds(target)

    @_settings(target)
    @given(seed=st.sampled_from(seeds), rounds=st.integers(1, 4), rng=st.randoms(use_true_random=False))
    def check(seed, rounds, rng):
        data = seed
        for _ in range(rounds):
            data = T.mutate(data, rng)
        try:
            T.TARGETS[target](data)
        except Exception as exc:
            if T.known_open(exc) is None:  # a fix waiting outside these files is listed there
                raise

    check()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


def _nodes(node, out):
    out.append(node)
    if isinstance(node, dict):
        for v in node.values():
            _nodes(v, out)
    elif isinstance(node, list):
        for v in node:
            _nodes(v, out)
    return out


def _replace(doc, index: int, value):
    """`doc` with its index-th node (preorder, a dict value or list item) replaced by `value`."""
    parents = [n for n in _nodes(doc, []) if isinstance(n, dict | list) and n]
    parent = parents[index % len(parents)]
    keys = list(parent) if isinstance(parent, dict) else range(len(parent))
    key = list(keys)[(index // len(parents)) % len(keys)]
    parent[key] = value
    return doc


JSON_SEEDS = {
    "otlp-json": [T.seed_json()],
    "loaders": [T.seed_json(), T.JAEGER_SEED, T.ZIPKIN_SEED],
}


@pytest.mark.parametrize("target", sorted(JSON_SEEDS))
def test_json_documents_with_a_value_of_any_type_are_handled(target):
    @_settings(target)
    @given(seed=st.sampled_from(JSON_SEEDS[target]), index=st.integers(0, 10_000), value=json_values)
    def check(seed, index, value):
        doc = _replace(json.loads(seed), index, value)
        try:
            T.TARGETS[target](json.dumps(doc).encode())
        except Exception as exc:
            if T.known_open(exc) is None:  # a fix waiting outside these files is listed there
                raise

    check()


def test_intended_documents_with_a_value_of_any_type_are_handled():
    docs = [yaml.safe_load(s) for s in T.seeds("intended")]

    @_settings("intended")
    @given(seed=st.sampled_from(range(len(docs))), index=st.integers(0, 10_000), value=json_values)
    def check(seed, index, value):
        doc = _replace(json.loads(json.dumps(docs[seed])), index, value)
        T.target_intended(yaml.safe_dump(doc, allow_unicode=True).encode())

    check()


@pytest.mark.parametrize("target", sorted(T.TARGETS))
@pytest.mark.parametrize("body", [b"[" * 100_000, b"{\"a\":" * 50_000, b"\x0a\x80\x80\x80\x80\x10" * 2000,
                                  b"a: " + b"[" * 5000, b"&a [*a, *a]"])
def test_deep_nesting_is_refused_not_crashed(target, body):
    if target == "otlp-gzip":
        import gzip

        body = b"j" + gzip.compress(body)
    T.TARGETS[target](body)


def test_a_yaml_alias_inside_its_own_anchor_is_read_or_refused(tmp_path):
    # `&e [*e]` makes a list that contains itself: read (it sits in an x- extension) or refused
    # with an IntendedError, never a RecursionError
    path = tmp_path / "loop.yaml"
    for text in ("workflows:\n  - name: a\n    x-extra: &e [*e]\n    events: []\n",
                 "workflows: &w\n  - name: a\n    events: *w\n",
                 "asyncapi: 2.6.0\ninfo: {title: loop}\nchannels:\n  a: &x {publish: {message: [*x]}}\n"):
        path.write_text(text)
        T.target_intended(path.read_bytes())
