"""Stage 2, causal edges between spans: who caused whom, within and across traces.

Evidence, strongest first (each edge records which, and whether it was inferred):
- `parent`: the child's parent span id (same trace). Producer -> consumer is an event, else a call.
- `link`: a span link, in either direction; the earlier-starting span is the cause.
- `message_id`: a consumer with no producer in its context, tied to the producer span that sent
  the same `messaging.message.id` (context propagation was broken).
- `time_window`: a root consumer with neither, tied to the latest producer of the same
  destination that started before it, within `window_ns`; failing that, to the latest producer of
  unknown destination in its own trace (weakest; ASOF joins).
- `subscription`: a hop no context crosses (SNS -> SQS with raw delivery off: the consumer span
  has no parent, no link, a new trace and another message id): consumers of a destination nobody
  produces, tied to publishes of a destination nobody consumes once counts and time order show the
  one feeds the other (`_infer_subscriptions`, its docstring states the thresholds).
Two stages: `parent edges` (reads `span_labels`, writes `parent_edges`; the clock-skew stage needs
them first) and `causal edges` (writes `causal_edges`: the parent edges, then links and inferences,
which compare clock-corrected start times).
"""

from __future__ import annotations

import duckdb

from choreoscope.analysis.clock_skew import corrected_steps_sql

DEFAULT_WINDOW_NS = 10_000_000_000  # 10 s

_COLUMNS = "src_trace_id, src_span_id, dst_trace_id, dst_span_id, via, evidence, inferred, confidence"


def build_parent_edges(con: duckdb.DuckDBPyConnection) -> None:
    """Create `parent_edges`: the parent -> child edges (needed first, by the clock-skew stage)."""
    con.execute(
        """
        CREATE OR REPLACE TABLE parent_edges AS
        SELECT p.trace_id AS src_trace_id, p.span_id AS src_span_id,
               c.trace_id AS dst_trace_id, c.span_id AS dst_span_id,
               CASE WHEN p.role = 'producer' AND c.role = 'consumer' THEN 'event' ELSE 'call' END AS via,
               'parent' AS evidence, false AS inferred, 1.0::DOUBLE AS confidence
        FROM span_labels c
        JOIN span_labels p ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id
        """
    )


def build_causal_edges(con: duckdb.DuckDBPyConnection, window_ns: int = DEFAULT_WINDOW_NS) -> None:
    """Create `causal_edges`: the parent edges, link edges, then message-id and time-window
    inferences for consumers still unexplained (on clock-corrected start times)."""
    # The spans with corrected times, as a view: its seven readers each take the few columns they
    # need, which cost less than one copy of every span (the stage on the bench's dumps, three
    # times each: 100k 0.22-0.26 s with the copy, 0.17-0.18 without; 1M 1.02-1.04 against 0.87-0.89).
    con.execute(f"CREATE OR REPLACE TEMP VIEW _steps_adj AS {corrected_steps_sql()}")
    con.execute("CREATE OR REPLACE TABLE causal_edges AS SELECT * FROM parent_edges")
    con.execute(
        f"""
        INSERT INTO causal_edges ({_COLUMNS})
        SELECT DISTINCT
            CASE WHEN t.start_adj <= h.start_adj THEN t.trace_id ELSE h.trace_id END,
            CASE WHEN t.start_adj <= h.start_adj THEN t.span_id ELSE h.span_id END,
            CASE WHEN t.start_adj <= h.start_adj THEN h.trace_id ELSE t.trace_id END,
            CASE WHEN t.start_adj <= h.start_adj THEN h.span_id ELSE t.span_id END,
            CASE WHEN h.role IN ('producer', 'consumer') OR t.role IN ('producer', 'consumer')
                 THEN 'event' ELSE 'call' END,
            'link', false, 1.0::DOUBLE
        FROM span_links l
        JOIN _steps_adj h ON h.trace_id = l.trace_id AND h.span_id = l.span_id
        JOIN _steps_adj t ON t.trace_id = l.linked_trace_id AND t.span_id = l.linked_span_id
        WHERE NOT (h.trace_id = t.trace_id AND h.span_id = t.span_id)
        """
    )
    # Consumers that nothing explains yet: no incoming event edge, and not the child of a
    # consumer span (a `process` span under its `receive` span is explained by its parent).
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE _unexplained_consumers AS
        SELECT c.*
        FROM _steps_adj c
        LEFT JOIN _steps_adj parent ON parent.trace_id = c.trace_id AND parent.span_id = c.parent_span_id
        WHERE c.role = 'consumer'
          AND coalesce(parent.role, '') <> 'consumer'
          AND NOT EXISTS (
              SELECT 1 FROM causal_edges e
              WHERE e.dst_trace_id = c.trace_id AND e.dst_span_id = c.span_id AND e.via = 'event')
        """
    )
    con.execute(
        f"""
        INSERT INTO causal_edges ({_COLUMNS})
        SELECT p.trace_id, p.span_id, c.trace_id, c.span_id, 'event', 'message_id', true, 0.9::DOUBLE
        FROM _unexplained_consumers c
        JOIN _steps_adj p
          ON p.messaging_message_id = c.messaging_message_id
         AND p.role = 'producer'
         AND coalesce(p.messaging_destination, '') = coalesce(c.messaging_destination, '')
        WHERE c.messaging_message_id IS NOT NULL
        """
    )
    # Same destination, any trace; failing that, a producer of unknown destination in the
    # consumer's own trace (a partial trace where both hang under a span that was not exported).
    _infer_by_time_window(
        con, "messaging_destination IS NOT NULL", "messaging_destination", window_ns,
        extra_root_filter="AND c.messaging_destination IS NOT NULL",
    )
    _infer_by_time_window(con, "messaging_destination IS NULL", "trace_id", window_ns)
    _infer_subscriptions(con, window_ns)
    con.execute("DROP TABLE IF EXISTS _unexplained_consumers")
    con.execute("DROP VIEW IF EXISTS _steps_adj")


def _infer_by_time_window(
    con: duckdb.DuckDBPyConnection, producer_filter: str, key: str, window_ns: int, extra_root_filter: str = ""
) -> None:
    """Tie each still unexplained root consumer to the latest producer (matching on `key`) that
    started before it, within `window_ns`."""
    con.execute(
        f"""
        INSERT INTO causal_edges ({_COLUMNS})
        WITH roots AS (
            SELECT c.* FROM _unexplained_consumers c
            WHERE NOT EXISTS (SELECT 1 FROM causal_edges e
                              WHERE e.dst_trace_id = c.trace_id AND e.dst_span_id = c.span_id)
              AND NOT EXISTS (SELECT 1 FROM _steps_adj p
                              WHERE p.trace_id = c.trace_id AND p.span_id = c.parent_span_id)
              {extra_root_filter}
        ),
        producers AS (
            SELECT trace_id, span_id, messaging_destination, start_adj FROM _steps_adj
            WHERE role = 'producer' AND {producer_filter}
        )
        SELECT p.trace_id, p.span_id, r.trace_id, r.span_id, 'event', 'time_window', true, 0.5::DOUBLE
        FROM roots r
        ASOF JOIN producers p ON p.{key} = r.{key} AND r.start_adj >= p.start_adj
        WHERE r.start_adj - p.start_adj <= {int(window_ns)}
          AND NOT (p.trace_id = r.trace_id AND p.span_id = r.span_id)
        """
    )


# Thresholds of `_infer_subscriptions` (reasons in its docstring).
SUBSCRIPTION_MIN_MESSAGES = 3
SUBSCRIPTION_MATCH_SHARE = 0.9
SUBSCRIPTION_ONE_TO_ONE = 0.9
SUBSCRIPTION_COUNT_RATIO = 0.8
SUBSCRIPTION_LAG_SHARE = 0.25


def _infer_subscriptions(con: duckdb.DuckDBPyConnection, window_ns: int) -> None:
    """Edges `subscription`: a topic T feeds a queue Q, and no span says so.

    SNS -> SQS with raw delivery off (the AWS default) carries no context: the SQS consumer span
    has no parent and no link, sits in a new trace, and its SQS message id is not the SNS one;
    the topic -> queue subscription is configuration that appears in no span. Only when both
    ends look broken is a subscription inferred:
    - queues: destinations that consumers read and no producer span names; their deliveries are
      the consumer spans with no consumer child (a `process` span under its `receive` span) and no
      incoming event edge (nor their parent); when some deliveries of Q carry a message id, only
      those count (the others are empty polls). A message (its id, else the span) arrived at the
      earliest span of Q carrying its id: a consumer span's start, a client span's end (an SQS
      `ReceiveMessage` call starts its long poll before the message exists);
    - topics: destinations producers send to and no consumer span names; their publishes are the
      producer spans with no outgoing event edge (publishes a link or id already explains are
      not the ones looked for), not pika's outer double span (a producer whose child is a
      producer of the same service and destination).
    Each message of Q is matched to the latest publish of T before its arrival (ASOF). T feeds Q
    when, over Q's messages:
    - at least SUBSCRIPTION_MIN_MESSAGES (3) messages: fewer cannot show a pattern;
    - at least SUBSCRIPTION_MATCH_SHARE (90%) follow a T publish within `window_ns` (the window of
      `time_window`): every message of a subscription follows its publish; 10% slack for
      messages whose publish fell before the data starts;
    - the matched publishes are distinct for at least SUBSCRIPTION_ONE_TO_ONE (90%) of them: one
      publish is one message per subscribed queue;
    - Q's messages and T's publishes over the same period (first matched publish to last message)
      agree in number within SUBSCRIPTION_COUNT_RATIO (0.8 = smaller / larger): a subscription
      delivers each publish once (a filter policy dropping more than a fifth is not inferred);
    - the median lag is at most SUBSCRIPTION_LAG_SHARE (a quarter) of T's median gap between
      publishes. This is what ties the two in time: for a queue unrelated to T, the lag to the
      latest T publish is spread over the whole gap (median about half of it); a subscription
      delivers in far less than the gap. It is also what tells apart two topics published
      together (`order-events` and `order-audit` in one request): the queue's messages arrive
      before the second topic's publish of their request, so the lag to it is about one gap.
    Several queues may subscribe one topic; a queue is given one topic, the passing one with the
    smallest median lag (a queue subscribed to two topics is not inferred: its messages would be
    twice one topic's publishes and fail the count test). Each delivery of Q then gets an edge
    from the publish its message matched (a redelivery shares its first delivery's), inferred,
    confidence 0.3 + 0.5 x (share matched) x (share one-to-one) x (count agreement): 0.8 at best,
    below a message id (0.9), above a single time-window guess (0.5) when the match is clean.
    ASOF takes the latest publish, not the latest *unmatched* one; the one-to-one test bounds
    the difference.
    """
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE _sub_messages AS
        WITH produced AS (SELECT DISTINCT messaging_destination AS d FROM _steps_adj
                          WHERE role = 'producer' AND messaging_destination IS NOT NULL),
        leaves AS (
            SELECT c.* FROM _steps_adj c
            WHERE c.role = 'consumer' AND c.messaging_destination IS NOT NULL
              AND c.messaging_destination NOT IN (SELECT d FROM produced)
              AND NOT EXISTS (SELECT 1 FROM _steps_adj k WHERE k.trace_id = c.trace_id
                              AND k.parent_span_id = c.span_id AND k.role = 'consumer')
        ),
        with_ids AS (SELECT messaging_destination AS d FROM leaves GROUP BY 1
                     HAVING bool_or(messaging_message_id IS NOT NULL)),
        deliveries AS (
            SELECT l.* FROM leaves l
            WHERE (l.messaging_message_id IS NOT NULL OR l.messaging_destination NOT IN (SELECT d FROM with_ids))
              AND NOT EXISTS (SELECT 1 FROM causal_edges e WHERE e.via = 'event' AND e.dst_trace_id = l.trace_id
                              AND (e.dst_span_id = l.span_id OR e.dst_span_id = l.parent_span_id))
        ),
        arrivals AS (
            SELECT d.trace_id, d.span_id, d.messaging_destination AS queue,
                   coalesce(d.messaging_message_id, d.trace_id || '/' || d.span_id) AS message,
                   coalesce(min(CASE WHEN r.role = 'consumer' THEN r.start_adj ELSE r.end_adj END),
                            d.start_adj) AS arrived_adj
            FROM deliveries d
            LEFT JOIN _steps_adj r ON r.messaging_message_id = d.messaging_message_id
                 AND r.messaging_destination = d.messaging_destination AND r.role <> 'producer'
            GROUP BY d.trace_id, d.span_id, d.messaging_destination, d.messaging_message_id, d.start_adj
        )
        SELECT *, min(arrived_adj) OVER (PARTITION BY queue, message) AS first_adj FROM arrivals
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE _sub_publishes AS
        WITH consumed AS (SELECT DISTINCT messaging_destination AS d FROM _steps_adj
                          WHERE role = 'consumer' AND messaging_destination IS NOT NULL)
        SELECT p.trace_id, p.span_id, p.messaging_destination AS topic, p.start_adj
        FROM _steps_adj p
        WHERE p.role = 'producer' AND p.messaging_destination IS NOT NULL
          AND p.messaging_destination NOT IN (SELECT d FROM consumed)
          AND NOT EXISTS (SELECT 1 FROM causal_edges e WHERE e.via = 'event'
                          AND e.src_trace_id = p.trace_id AND e.src_span_id = p.span_id)
          AND NOT EXISTS (SELECT 1 FROM _steps_adj n WHERE n.trace_id = p.trace_id AND n.parent_span_id = p.span_id
                          AND n.role = 'producer' AND n.service = p.service
                          AND n.messaging_destination = p.messaging_destination)
        """
    )
    window = int(window_ns)
    con.execute(
        f"""
        INSERT INTO causal_edges ({_COLUMNS})
        WITH firsts AS (SELECT DISTINCT queue, message, first_adj FROM _sub_messages),
        pairs AS (SELECT * FROM firsts CROSS JOIN (SELECT DISTINCT topic FROM _sub_publishes)),
        matches AS (
            SELECT m.queue, m.message, m.first_adj, m.topic, p.trace_id, p.span_id,
                   p.start_adj AS published_adj, m.first_adj - p.start_adj AS lag
            FROM pairs m ASOF JOIN _sub_publishes p ON p.topic = m.topic AND m.first_adj >= p.start_adj
        ),
        gaps AS (
            SELECT topic, median(gap) AS median_gap FROM (
                SELECT topic, start_adj - lag(start_adj) OVER (PARTITION BY topic ORDER BY start_adj) AS gap
                FROM _sub_publishes) GROUP BY topic
        ),
        pair_stats AS (
            SELECT (SELECT count(*) FROM firsts f WHERE f.queue = m.queue) AS messages, m.queue, m.topic,
                   count(*) FILTER (WHERE m.lag <= {window}) AS matched,
                   count(DISTINCT m.trace_id || m.span_id) FILTER (WHERE m.lag <= {window}) AS publishes_matched,
                   median(m.lag) FILTER (WHERE m.lag <= {window}) AS median_lag,
                   min(m.published_adj) FILTER (WHERE m.lag <= {window}) AS period_start,
                   max(m.first_adj) AS period_end
            FROM matches m GROUP BY m.queue, m.topic
        ),
        scored AS (
            SELECT s.*, g.median_gap,
                   (SELECT count(*) FROM _sub_publishes p WHERE p.topic = s.topic
                    AND p.start_adj BETWEEN s.period_start AND s.period_end) AS published
            FROM pair_stats s JOIN gaps g USING (topic)
            WHERE s.matched > 0
        ),
        accepted AS (
            SELECT queue, topic, 0.3 + 0.5 * (matched / messages) * (publishes_matched / matched)
                   * (least(matched, published) / greatest(matched, published)) AS confidence
            FROM scored
            WHERE messages >= {SUBSCRIPTION_MIN_MESSAGES}
              AND matched >= {SUBSCRIPTION_MATCH_SHARE} * messages
              AND publishes_matched >= {SUBSCRIPTION_ONE_TO_ONE} * matched
              AND least(messages, published) >= {SUBSCRIPTION_COUNT_RATIO} * greatest(messages, published)
              AND (median_gap IS NULL OR median_lag <= {SUBSCRIPTION_LAG_SHARE} * median_gap)
            QUALIFY row_number() OVER (PARTITION BY queue ORDER BY median_lag, topic) = 1
        )
        SELECT m.trace_id, m.span_id, d.trace_id, d.span_id, 'event', 'subscription', true,
               round(a.confidence, 3)::DOUBLE
        FROM accepted a
        JOIN matches m ON m.queue = a.queue AND m.topic = a.topic AND m.lag <= {window}
        JOIN _sub_messages d ON d.queue = m.queue AND d.message = m.message
        WHERE NOT (m.trace_id = d.trace_id AND m.span_id = d.span_id)
        """
    )
    con.execute("DROP TABLE IF EXISTS _sub_messages")
    con.execute("DROP TABLE IF EXISTS _sub_publishes")
