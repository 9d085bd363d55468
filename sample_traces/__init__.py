"""Deterministic sample systems with known ground truth, run through the real OpenTelemetry SDK.

See sample_traces/README.md for the scenarios, the file layout and how to regenerate the dumps.
"""

SCENARIOS = ("ecommerce", "loan_saga", "event_router", "notification_fanout", "hybrid_billing")
