"""Attribute names of the OpenTelemetry semantic conventions, old and new.

The one module that knows attribute names: every other module imports them from here.
Each tuple lists the names a value may arrive under, newest convention first.
"""

SERVICE_NAME = "service.name"
SERVICE_VERSION = "service.version"
SERVICE_NAMESPACE = "service.namespace"
SERVICE_INSTANCE_ID = "service.instance.id"
UNKNOWN_SERVICE = "unknown_service"

MESSAGING_SYSTEM = ("messaging.system",)
MESSAGING_DESTINATION = (
    "messaging.destination.name",
    "messaging.destination",
)
# RabbitMQ's routing key, new and old names. On a topic or direct exchange every event shares the
# exchange (`messaging.destination(.name)`), and the routing key is what the bindings and the teams
# call the event (`payment.requested` on exchange `pay`): the typed `messaging_destination` column
# takes it before the destination names (MESSAGING_EVENT_NAME); the exchange stays in the JSON.
MESSAGING_RABBITMQ_ROUTING_KEYS = ("messaging.rabbitmq.destination.routing_key", "messaging.rabbitmq.routing_key")
# The names the typed `messaging_destination` column is filled from, in priority order.
MESSAGING_EVENT_NAME = (*MESSAGING_RABBITMQ_ROUTING_KEYS, *MESSAGING_DESTINATION)
# Where a queue URL may arrive (SQS: botocore `aws.queue_url`, boto3sqs `messaging.url`); used
# for the destination only when no destination name is recorded.
MESSAGING_QUEUE_URL = ("aws.queue_url", "messaging.url")
MESSAGING_SYSTEM_SQS = "aws.sqs"
# A destination's low-cardinality form (per-request reply queues, `user-{id}-events`): when given,
# the typed column holds it instead of the name; temporary or anonymous destinations without one
# become TEMPORARY_DESTINATION. The name itself stays in the attributes JSON.
MESSAGING_DESTINATION_TEMPLATE = "messaging.destination.template"
MESSAGING_DESTINATION_TEMPORARY = ("messaging.destination.temporary", "messaging.destination.anonymous")
TEMPORARY_DESTINATION = "(temporary)"
MESSAGING_OPERATION = ("messaging.operation.type", "messaging.operation")
MESSAGING_MESSAGE_ID = ("messaging.message.id", "messaging.message_id")
MESSAGING_CONSUMER_GROUP = (
    "messaging.consumer.group.name",
    "messaging.destination.subscription.name",
    "messaging.kafka.consumer.group",
    "messaging.kafka.consumer_group",
)
# Old and new operation values, mapped to the current `messaging.operation.type` names.
MESSAGING_OPERATION_VALUES = {
    "publish": "send",
    "send": "send",
    "create": "create",
    "receive": "receive",
    "process": "process",
    "settle": "settle",
    "deliver": "process",
}

DB_SYSTEM = ("db.system.name", "db.system")
DB_COLLECTION = (
    "db.collection.name",
    "db.sql.table",
    "db.mongodb.collection",
    "db.cassandra.table",
    "db.cosmosdb.container",
)
DB_OPERATION = ("db.operation.name", "db.operation")
DB_QUERY_TEXT = ("db.query.text", "db.statement")

RPC_SYSTEM = ("rpc.system.name", "rpc.system")
RPC_SERVICE = ("rpc.service",)
RPC_METHOD = ("rpc.method",)

HTTP_METHOD = ("http.request.method", "http.method")
HTTP_ROUTE = ("http.route",)
HTTP_STATUS_CODE = ("http.response.status_code", "http.status_code")
HTTP_URL = ("url.full", "http.url", "http.target", "url.path")

SERVER_ADDRESS = ("server.address", "net.peer.name", "net.host.name", "http.host")
PEER_SERVICE = ("peer.service",)

# Attributes choreoscope's own scenario generator and retrying clients set.
RETRY_ATTEMPT = ("messaging.retry.attempt", "http.request.resend_count", "retry.attempt")

SPAN_KINDS = ("UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
STATUS_CODES = ("UNSET", "OK", "ERROR")


def first(attrs: dict, names: tuple[str, ...]):
    """The value of the first of `names` present in `attrs`, else None."""
    for name in names:
        value = attrs.get(name)
        if value is not None and value != "":
            return value
    return None

# --- Names the trace-dump loaders map foreign formats onto (Zipkin, Jaeger). ---
MESSAGING_SYSTEM_NAME = "messaging.system"
MESSAGING_DESTINATION_NAME = "messaging.destination.name"
MESSAGING_OPERATION_TYPE = "messaging.operation.type"
MESSAGING_KAFKA_MESSAGE_KEY = "messaging.kafka.message.key"
MESSAGING_DESTINATION_PARTITION_ID = "messaging.destination.partition.id"
MESSAGING_RABBITMQ_ROUTING_KEY = "messaging.rabbitmq.destination.routing_key"
PEER_SERVICE_NAME = "peer.service"
NETWORK_PEER_ADDRESS = "network.peer.address"
NETWORK_PEER_PORT = "network.peer.port"
HOST_IP = "host.ip"
# Brave/Spring Sleuth broker tags found in Zipkin dumps.
ZIPKIN_KAFKA_TOPIC = "kafka.topic"
ZIPKIN_KAFKA_KEY = "kafka.key"
ZIPKIN_KAFKA_PARTITION = "kafka.partition"
ZIPKIN_RABBIT_EXCHANGE = "rabbit.exchange"
ZIPKIN_RABBIT_QUEUE = "rabbit.queue"
ZIPKIN_RABBIT_ROUTING_KEY = "rabbit.routing_key"
ZIPKIN_ERROR = "error"
# Brave's JDBC/MySQL/p6spy instrumentations record the statement as `sql.query`, no system.
ZIPKIN_SQL_QUERY = "sql.query"
# db.system for a SQL database the span does not name (OpenTelemetry's fallback value).
DB_SYSTEM_OTHER_SQL = "other_sql"
# Where a Zipkin record's original kind is kept when the loader re-reads it (e.g. SERVER -> CONSUMER).
ZIPKIN_ORIGINAL_KIND = "zipkin.kind"
# Jaeger's encoding of OTLP fields as tags (jaeger-idl / collector translator).
JAEGER_SPAN_KIND = "span.kind"
JAEGER_STATUS_CODE = "otel.status_code"
JAEGER_STATUS_DESCRIPTION = "otel.status_description"
JAEGER_ERROR = "error"
JAEGER_SCOPE_NAME = ("otel.scope.name", "otel.library.name")
JAEGER_SCOPE_VERSION = ("otel.scope.version", "otel.library.version")
JAEGER_TRACE_STATE = "w3c.tracestate"
JAEGER_EVENT_NAME = "event"
MESSAGING_SYSTEM_KAFKA = "kafka"
MESSAGING_SYSTEM_RABBITMQ = "rabbitmq"


# Attribute keys that describe the transport, runtime or instrumentation rather than an event's
# payload: schema drift (event_catalog) and the AsyncAPI export both leave them out of a message's
# attribute set, so the two agree on what is payload. Zipkin's `component` and `lc` (local
# component) tags, and Brave's `kafka.`/`rabbit.` tags, are transport too.
CONVENTION_PREFIXES = (
    "messaging.", "server.", "network.", "net.", "otel.", "peer.", "http.", "url.", "db.", "rpc.",
    "thread.", "code.", "exception.", "error.", "user_agent.", "client.", "destination.", "source.",
    "telemetry.", "service.", "cloud.", "host.", "process.", "k8s.", "container.", "span.",
    "kafka.", "rabbit.", "retry.", "component", "lc",
)

# --- Database names read from the statement text (collector/sql_text.py, via spanbatch). ---
# DB_QUERY_TEXT above lists the statement keys (`db.query.text` new, `db.statement` old) and
# DB_SYSTEM accepts `db.system.name`. The namespace is no typed column (it stays in the attributes
# JSON); spanbatch reads it to undo SQLAlchemy's `db.operation` = "<verb> <db.name>".
DB_NAMESPACE = ("db.namespace", "db.name")

# --- The sender's dropped counts in formats without OTLP's fields (Jaeger, Zipkin): tags, written
# only when not zero (the spec's "Transformation to non-OTLP Formats": Dropped Attributes Count,
# Dropped Events Count, Dropped Links Count). spanbatch takes them out of the attributes. ---
NON_OTLP_DROPPED_ATTRIBUTES = "otel.dropped_attributes_count"
NON_OTLP_DROPPED_EVENTS = "otel.dropped_events_count"
NON_OTLP_DROPPED_LINKS = "otel.dropped_links_count"
NON_OTLP_DROPPED = (NON_OTLP_DROPPED_ATTRIBUTES, NON_OTLP_DROPPED_EVENTS, NON_OTLP_DROPPED_LINKS)
