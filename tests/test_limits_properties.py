"""Property tests of the span limits (collector/spanbatch.py LIMITS) on arbitrary attribute values:
any mix of scalars, long strings, wide and deeply nested arrays and maps, many attributes, events
and links is stored (never an exception, and the Arrow conversion takes the row), within every
limit, with exactly what was cut counted; a span within the limits is stored as it was sent."""

from __future__ import annotations

import base64
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from choreoscope.collector import store
from choreoscope.collector.spanbatch import (
    MAX_ATTRIBUTES,
    MAX_EVENT_ATTRIBUTES,
    MAX_EVENTS,
    MAX_LINK_ATTRIBUTES,
    MAX_LINKS,
    MAX_VALUE_DEPTH,
    MAX_VALUE_LENGTH,
    Link,
    SpanBatch,
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), st.text(max_size=12),
    st.binary(max_size=8), st.integers(MAX_VALUE_LENGTH - 2, MAX_VALUE_LENGTH + 40).map(lambda n: "é" * n),
    st.integers(MAX_VALUE_LENGTH - 2, MAX_VALUE_LENGTH + 40).map(lambda n: b"\x01" * n),
)
_shallow = st.recursive(_leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=4), inner, max_size=3), max_leaves=20)


def _nest(depth: int, leaf, as_map: bool):
    for _ in range(depth):
        leaf = {"k": leaf} if as_map else [leaf]
    return leaf


_deep = st.builds(_nest, st.integers(MAX_VALUE_DEPTH - 2, 400), _shallow, st.booleans())
_values = st.one_of(_shallow, _shallow, _deep)


@st.composite
def _attributes(draw, limit: int) -> dict:
    attrs = draw(st.dictionaries(st.text(min_size=1, max_size=6), _values, max_size=6))
    filler = draw(st.sampled_from((0, 3, limit - len(attrs), limit + 1, limit + 40)))
    attrs.update({f"f{i}": i for i in range(max(filler, 0)) if f"f{i}" not in attrs})
    return attrs


def _depth(value) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


def _longest(value) -> int:
    if isinstance(value, (str, bytes)):
        return len(value)
    if isinstance(value, list):
        return max((_longest(v) for v in value), default=0)
    if isinstance(value, dict):
        return max((_longest(v) for v in value.values()), default=0)
    return 0


def _as_stored(value):
    """A value as the store's JSON gives it back (bytes are base64 text, NaN stays NaN)."""
    return json.loads(json.dumps(value, default=lambda b: base64.b64encode(b).decode()))


def _expected_cut(attrs: dict, limit: int) -> tuple[dict, int]:
    """What the limits keep of `attrs`, written from their definition (README "Limits")."""
    kept, cut = {}, max(len(attrs) - limit, 0)
    for key, value in list(attrs.items())[:limit]:
        if _depth(value) > MAX_VALUE_DEPTH:
            cut += 1
            continue
        limited, shortened = _truncate(value)
        cut += shortened
        kept[key] = limited
    return kept, cut


def _truncate(value) -> tuple[object, bool]:
    """(value with its texts cut to the length limit, whether one was). Whether, not `!=`: a NaN
    is unequal to itself and is not cut."""
    if isinstance(value, (str, bytes)):
        return value[:MAX_VALUE_LENGTH], len(value) > MAX_VALUE_LENGTH
    if isinstance(value, list):
        items = [_truncate(v) for v in value]
        return [v for v, _ in items], any(c for _, c in items)
    if isinstance(value, dict):
        items = {k: _truncate(v) for k, v in value.items()}
        return {k: v for k, (v, _) in items.items()}, any(c for _, c in items.values())
    return value, False


def _same(a, b) -> bool:
    return json.dumps(_as_stored(a), sort_keys=True) == json.dumps(_as_stored(b), sort_keys=True)


@SETTINGS
@given(attrs=_attributes(MAX_ATTRIBUTES),
       events=st.lists(_attributes(MAX_EVENT_ATTRIBUTES), max_size=2),
       extra_events=st.sampled_from((0, MAX_EVENTS - 2, MAX_EVENTS + 5)),
       links=st.lists(_attributes(MAX_LINK_ATTRIBUTES), max_size=2),
       extra_links=st.sampled_from((0, MAX_LINKS + 3)),
       sender=st.tuples(*(st.integers(0, 2**32 - 1),) * 3))
def test_any_span_is_stored_within_the_limits_with_the_cut_counted(attrs, events, extra_events, links,
                                                                    extra_links, sender):
    event_list = [{"name": f"e{i}", "time_ns": i, "attributes": a} for i, a in enumerate(events)]
    event_list += [{"name": "more", "time_ns": 0, "attributes": {}}] * extra_events
    link_list = [Link("0a" * 16, f"{i + 1:016x}", None, a) for i, a in enumerate(links)]
    link_list += [Link("0b" * 16, f"{i + 1:016x}") for i in range(extra_links)]
    batch = SpanBatch(source="t")
    assert batch.add(trace_id="01" * 16, span_id="02" * 8, attributes=attrs, events=event_list, links=link_list,
                     dropped_attributes_count=sender[0], dropped_events_count=sender[1],
                     dropped_links_count=sender[2])
    spans, stored_links = batch.to_arrow()  # the row converts to the store's Arrow schema
    row = dict(zip(store.SPAN_COLUMN_NAMES, batch.rows[0]))

    stored = json.loads(row["attributes"])
    kept, cut = _expected_cut(attrs, MAX_ATTRIBUTES)
    assert _same(stored, kept)
    assert len(stored) <= MAX_ATTRIBUTES and _depth(stored) <= MAX_VALUE_DEPTH + 1
    assert _longest(kept) <= MAX_VALUE_LENGTH  # (bytes are stored as base64 text, a third longer)

    stored_events = json.loads(row["events"])
    assert len(stored_events) == min(len(event_list), MAX_EVENTS)
    for event, sent in zip(stored_events, event_list):
        event_kept, event_cut = _expected_cut(sent["attributes"], MAX_EVENT_ATTRIBUTES)
        assert _same(event["attributes"], event_kept)
        cut += event_cut
    link_attrs = [json.loads(a) for a in stored_links.column("attributes").to_pylist()]
    assert len(link_attrs) == min(len(link_list), MAX_LINKS)
    for stored_link, sent in zip(link_attrs, link_list):
        link_kept, link_cut = _expected_cut(sent.attributes, MAX_LINK_ATTRIBUTES)
        assert _same(stored_link, link_kept)
        cut += link_cut

    top = 2**31 - 1
    assert row["dropped_attributes_count"] == min(sender[0] + cut, top)
    assert row["dropped_events_count"] == min(sender[1] + max(len(event_list) - MAX_EVENTS, 0), top)
    assert row["dropped_links_count"] == min(sender[2] + max(len(link_list) - MAX_LINKS, 0), top)
    assert spans.num_rows == 1


@SETTINGS
@given(attrs=st.dictionaries(st.text(max_size=6), _shallow, max_size=8))
def test_a_span_within_the_limits_is_stored_as_sent(attrs):
    if _expected_cut(attrs, MAX_ATTRIBUTES)[1]:
        return  # a long value: covered above
    batch = SpanBatch()
    assert batch.add(trace_id="01" * 16, span_id="02" * 8, attributes=attrs)
    row = dict(zip(store.SPAN_COLUMN_NAMES, batch.rows[0]))
    assert _same(json.loads(row["attributes"]), attrs)
    assert row["dropped_attributes_count"] == 0
