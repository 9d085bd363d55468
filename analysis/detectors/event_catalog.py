"""event_catalog: events nobody consumes, consumers nobody feeds, and event schemas that drift.

Detects, per messaging destination:
- dead_event [producer]: produced, never consumed — no consumer span for the destination, no
  event edge from one of its producer spans to a consumer of another name (an SNS topic consumed
  through SQS queues: a link with raw delivery, an inferred `subscription` edge without), and no
  causal event edge out of its producer spans. A publish is counted once: the outer span of a
  nested producer pair of the same service and destination (pika) is not a send of its own.
- orphan_event [consumer]: consumed, producer never seen — no producer span for the destination
  anywhere, no event edge into one of its consumer spans from a producer of another name (the SQS
  queue of an SNS subscription, inferred or linked), and the consumer spans have no incoming event
  edge (no parent producer, no link to a span in the data, no message id, time-window or
  subscription match). Links pointing at spans that are not in the data are counted as evidence.
- schema_drift [producer]: the custom attributes a producer sets on its producer spans change
  between its service.versions (semantic-convention namespaces such as messaging.*, server.*,
  network.* are not part of the event's schema).

Assumption: the data covers both ends of a flow (a consumer outside the traced system looks
dead); an attribute belongs to a version's schema when at least half of its spans carry it, and is
added or removed only when the other version never carries it.

Evidence: producer/consumer span counts, instances, dangling links; for drift the versions in
order of first appearance, the attributes added and removed and from which version.
"""

from __future__ import annotations

import itertools

from choreoscope.analysis.detectors.query_helpers import rows
from choreoscope.analysis.findings import Finding
from choreoscope.analysis.span_edges import NESTED_SEND_SQL
from choreoscope.collector.semconv import CONVENTION_PREFIXES

# Attribute namespaces of the semantic conventions (and SDK internals): not the event's payload schema.
SCHEMA_SHARE = 0.5

# Producer spans that are sends: not the outer span of a nested pair (pika's double PRODUCER
# span, `NESTED_SEND_SQL`), so one publish is counted once.
SENDS = f"""
    SELECT s.* FROM span_steps s
    WHERE s.role = 'producer' AND s.messaging_destination IS NOT NULL
      AND NOT EXISTS ({NESTED_SEND_SQL.format(outer="s")})
"""

# Destinations tied by an event edge whose two ends name them differently: the producer's
# destination is consumed and the consumer's produced, although no span of the other side names
# them. An SNS topic delivered to SQS queues (an inferred `subscription` edge with raw delivery off,
# a link with it on), a pika consumer (exchange only) under a producer naming the routing key.
# `span_edges` holds the causal edges already joined to both spans.
EDGE_ENDS = """
    SELECT src_messaging_destination AS produced, dst_messaging_destination AS consumed
    FROM span_edges
    WHERE via = 'event' AND src_role = 'producer' AND dst_role = 'consumer'
      AND src_messaging_destination IS NOT NULL AND dst_messaging_destination IS NOT NULL
      AND src_messaging_destination <> dst_messaging_destination
"""

DEAD_SQL = f"""
WITH producers AS (
    SELECT s.messaging_destination AS event, s.service, s.trace_id, s.span_id, s.instance_id
    FROM ({SENDS}) s
),
consumed AS (SELECT DISTINCT messaging_destination AS event FROM span_steps
             WHERE role = 'consumer' AND messaging_destination IS NOT NULL
             UNION SELECT produced FROM ({EDGE_ENDS}))
SELECT p.event, p.service, count(*) AS produced, count(DISTINCT p.instance_id) AS instances,
       list(DISTINCT p.trace_id ORDER BY p.trace_id)[1:5] AS trace_ids
FROM producers p
WHERE p.event NOT IN (SELECT event FROM consumed)
  AND NOT EXISTS (SELECT 1 FROM causal_edges e WHERE e.src_trace_id = p.trace_id
                  AND e.src_span_id = p.span_id AND e.via = 'event')
GROUP BY ALL ORDER BY p.event, p.service
"""

ORPHAN_SQL = f"""
WITH consumers AS (
    SELECT c.* FROM span_steps c
    LEFT JOIN span_steps parent ON parent.trace_id = c.trace_id AND parent.span_id = c.parent_span_id
    WHERE c.role = 'consumer' AND c.messaging_destination IS NOT NULL
      AND coalesce(parent.role, '') <> 'consumer'
),
produced AS (SELECT DISTINCT messaging_destination AS event FROM span_steps
             WHERE role = 'producer' AND messaging_destination IS NOT NULL
             UNION SELECT consumed FROM ({EDGE_ENDS})),
dangling AS (   -- links from consumer spans to spans missing from the data
    SELECT l.trace_id, l.span_id, count(*) AS n FROM span_links l
    WHERE NOT EXISTS (SELECT 1 FROM spans t WHERE t.trace_id = l.linked_trace_id AND t.span_id = l.linked_span_id)
    GROUP BY ALL
)
SELECT c.messaging_destination AS event, c.service, count(*) AS consumed,
       count(DISTINCT c.instance_id) AS instances, coalesce(sum(d.n), 0) AS dangling_links,
       list(DISTINCT c.trace_id ORDER BY c.trace_id)[1:5] AS trace_ids
FROM consumers c
LEFT JOIN dangling d ON d.trace_id = c.trace_id AND d.span_id = c.span_id
WHERE c.messaging_destination NOT IN (SELECT event FROM produced)
  AND NOT EXISTS (SELECT 1 FROM causal_edges e WHERE e.dst_trace_id = c.trace_id
                  AND e.dst_span_id = c.span_id AND e.via = 'event')
GROUP BY ALL ORDER BY event, c.service
"""

SCHEMA_SQL = f"""
WITH producer_spans AS (
    SELECT s.trace_id, s.span_id, s.service, s.messaging_destination AS event,
           coalesce(sp.service_version, '(none)') AS version, s.start_adj, sp.attributes
    FROM ({SENDS}) s JOIN spans sp USING (trace_id, span_id)
),
versions AS (
    SELECT service, event, version, count(*) AS spans, min(start_adj) AS first_seen,
           list(trace_id ORDER BY trace_id)[1:2] AS trace_ids
    FROM producer_spans GROUP BY ALL
),
keys AS (
    SELECT service, event, version, key, count(*) AS n
    FROM (SELECT service, event, version, unnest(json_keys(attributes)) AS key FROM producer_spans)
    GROUP BY ALL
)
SELECT v.service, v.event, v.version, v.spans, v.first_seen, v.trace_ids,
       list(k.key ORDER BY k.key) FILTER (WHERE k.n >= ? * v.spans) AS schema_keys,
       list(k.key ORDER BY k.key) FILTER (WHERE k.key IS NOT NULL) AS any_keys
FROM versions v LEFT JOIN keys k USING (service, event, version)
GROUP BY ALL
ORDER BY v.service, v.event, v.first_seen, v.version
"""


def is_payload_attribute(key: str) -> bool:
    return not key.startswith(CONVENTION_PREFIXES)


def _dead(con) -> list[Finding]:
    out = []
    for r in rows(con, DEAD_SQL):
        out.append(Finding(
            kind="dead_event", services=[r["service"]], event=r["event"],
            confidence=min(0.95, 0.5 + 0.05 * r["produced"]), severity="info",
            summary=(f"{r['service']} publishes {r['event']} ({r['produced']} messages in {r['instances']} "
                     f"instances) but nothing in the traces ever consumes it."),
            recommendation=(
                f"Check whether a consumer of {r['event']} is expected (it may be uninstrumented, or the"
                f" subscription lost); if not, stop publishing it or mark it deprecated in the event catalog,"
                f" since in a choreography every unused event is still a contract someone must keep."
            ),
            evidence={"produced": r["produced"], "instances": r["instances"], "consumers": 0},
            trace_ids=list(r["trace_ids"] or []),
        ))
    return out


def _orphans(con) -> list[Finding]:
    out = []
    for r in rows(con, ORPHAN_SQL):
        out.append(Finding(
            kind="orphan_event", services=[r["service"]], event=r["event"],
            confidence=min(0.95, 0.55 + 0.05 * r["consumed"]), severity="info",
            summary=(f"{r['service']} consumes {r['event']} ({r['consumed']} messages) but no producer of it "
                     f"appears in the traces"
                     + (f" ({r['dangling_links']} links point at spans that are missing)" if r["dangling_links"]
                        else "") + ": part of the workflow is invisible."),
            recommendation=(
                f"Instrument the producer of {r['event']} (or propagate trace context through it) so the"
                f" hand-off to {r['service']} is visible; an unknown producer is an undocumented dependency"
                f" of the choreography."
            ),
            evidence={"consumed": r["consumed"], "instances": r["instances"], "producers": 0,
                      "dangling_links": int(r["dangling_links"])},
            trace_ids=list(r["trace_ids"] or []),
        ))
    return out


MAX_CHANGES_IN_SUMMARY = 3
MAX_NAMES_IN_SUMMARY = 6


def _some(names: list[str]) -> str:
    if len(names) <= MAX_NAMES_IN_SUMMARY:
        return ", ".join(names)
    return f"{', '.join(names[:MAX_NAMES_IN_SUMMARY])} and {len(names) - MAX_NAMES_IN_SUMMARY} more"


def _drift(con) -> list[Finding]:
    by_event: dict[tuple[str, str], list[dict]] = {}
    for r in rows(con, SCHEMA_SQL, [SCHEMA_SHARE]):
        by_event.setdefault((r["service"], r["event"]), []).append(r)
    out = []
    for (service, event), versions in sorted(by_event.items()):
        changes = []
        for old, new in itertools.pairwise(versions):
            old_keys = {k for k in old["schema_keys"] or [] if is_payload_attribute(k)}
            new_keys = {k for k in new["schema_keys"] or [] if is_payload_attribute(k)}
            added = sorted(new_keys - set(old["any_keys"] or []))
            removed = sorted(old_keys - set(new["any_keys"] or []))
            if added or removed:
                changes.append({"from_version": new["version"], "previous_version": old["version"],
                                "added": added, "removed": removed, "spans_before": old["spans"],
                                "spans_after": new["spans"],
                                "trace_ids": list(old["trace_ids"] or []) + list(new["trace_ids"] or [])})
        if not changes:
            continue
        last = changes[-1]
        # One sentence: the latest few changes, a few names each; the evidence keeps all of them.
        shown = changes[-MAX_CHANGES_IN_SUMMARY:]
        what = ("" if len(shown) == len(changes) else f"{len(changes) - len(shown)} earlier change(s); ") + "; ".join(
            f"{c['from_version']} " + ", ".join(
                ([f"added {_some(c['added'])}"] if c["added"] else [])
                + ([f"removed {_some(c['removed'])}"] if c["removed"] else []))
            for c in shown)
        out.append(Finding(
            kind="schema_drift", services=[service], event=event,
            confidence=min(0.95, 0.6 + 0.05 * min(last["spans_before"], last["spans_after"])),
            severity="critical" if any(c["removed"] for c in changes) else "warning",
            summary=(f"{service} changed what it sends on {event} between versions ({what}): consumers "
                     f"written against the old shape may break silently."),
            recommendation=(
                f"Version the {event} schema explicitly (a schema registry or AsyncAPI document with"
                f" compatibility checks), add fields before removing any, and tell {event}'s consumers;"
                f" in a choreography the event schema is the only contract between the services."
            ),
            evidence={"versions": [v["version"] for v in versions], "changes": [
                {k: v for k, v in c.items() if k != "trace_ids"} for c in changes],
                "added": last["added"], "removed": last["removed"], "from_version": last["from_version"]},
            trace_ids=[t for c in changes for t in c["trace_ids"]][:5],
        ))
    return out


def detect(con) -> list[Finding]:
    return _dead(con) + _orphans(con) + _drift(con)
