"""Ingest: the OTLP receiver and the trace-dump loaders, both writing one DuckDB store."""
