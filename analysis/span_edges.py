"""Stage: causal edges with both ends as steps, and the sends and calls nobody instrumented answered.

The join of `causal_edges` to its two spans in `span_steps` is what workflows, conformance, the
detectors and the dashboard all start from: it is made here, once.
- `span_edges`: one row per causal edge: the edge (via, evidence, inferred, confidence), `src_*` and
  `dst_*` columns of both spans (step, service, role, operation, destination, corrected times,
  error), the source's instance and workflow, and `event` (the destination of an event hand-off).
- `event` is the producer's destination when it has one, else the consumer's: the name the
  publishing team sends under (the RabbitMQ routing key where a pika consumer records only the
  exchange; the SNS topic where the consumer records its SQS queue), the consumer's for a producer of
  unknown destination.
- `unanswered_spans`: client calls (not databases) and sends with no causal edge to a span of
  another service: the uninstrumented peers workflows show as virtual steps. A producer span whose
  child is a producer span of the same service and destination (`NESTED_SEND_SQL`, pika's double
  span) is one send with its child: only the child can be unanswered.
Reads `causal_edges`, `span_steps`; writes `span_edges`, `unanswered_spans`.
"""

from __future__ import annotations

import duckdb

# A producer span `{outer}` that wraps the real send: its child is a producer span of the same
# service and destination (pika wraps both `BlockingChannel.basic_publish` and the inner
# `Channel.basic_publish`: two identical nested PRODUCER spans a publish, the consumers under the
# inner one). The pair is one send; the outer one is not a send to an uninstrumented peer, and the
# event catalog does not count it. Used as `EXISTS (...)`, `{outer}` being the outer span's alias.
NESTED_SEND_SQL = (
    "SELECT 1 FROM span_steps n WHERE n.trace_id = {outer}.trace_id AND n.parent_span_id = {outer}.span_id"
    " AND n.role = 'producer' AND n.service = {outer}.service"
    " AND n.messaging_destination IS NOT DISTINCT FROM {outer}.messaging_destination"
)

# span_steps column -> name after src_/dst_
_END_COLUMNS = {"step_id": "step", "service": "service", "role": "role", "operation": "operation",
                "messaging_destination": "messaging_destination", "start_adj": "start_adj",
                "end_adj": "end_adj", "is_error": "is_error", "peer": "peer"}


def build_span_edges(con: duckdb.DuckDBPyConnection) -> None:
    ends = ",\n               ".join(f"s.{column} AS src_{name}, d.{column} AS dst_{name}"
                                    for column, name in _END_COLUMNS.items())
    con.execute(
        f"""
        CREATE OR REPLACE TABLE span_edges AS
        SELECT e.src_trace_id, e.src_span_id, e.dst_trace_id, e.dst_span_id, e.via, e.evidence, e.inferred,
               e.confidence, s.workflow_id, s.instance_id,
               {ends},
               CASE WHEN e.via = 'event' THEN coalesce(s.messaging_destination, d.messaging_destination) END
                   AS event
        FROM causal_edges e
        JOIN span_steps s ON s.trace_id = e.src_trace_id AND s.span_id = e.src_span_id
        JOIN span_steps d ON d.trace_id = e.dst_trace_id AND d.span_id = e.dst_span_id
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TABLE unanswered_spans AS
        SELECT s.* FROM span_steps s
        WHERE ((s.role = 'client' AND s.db_system IS NULL)
               OR (s.role = 'producer' AND s.messaging_destination IS NOT NULL))
          AND NOT EXISTS (
              SELECT 1 FROM span_edges e
              WHERE e.src_trace_id = s.trace_id AND e.src_span_id = s.span_id AND e.dst_service <> s.service)
          AND NOT (s.role = 'producer' AND EXISTS ({NESTED_SEND_SQL.format(outer="s")}))
        """
    )
