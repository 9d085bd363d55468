"""The `choreoscope` command: one console script, one subcommand per job.

Each subcommand's work lives in the module that owns it; this file only declares the options
(so `choreoscope --help` is the whole manual) and imports the owner when its subcommand runs.
"""

from __future__ import annotations

import argparse
import sys

from choreoscope.analysis.live_window import DEFAULT_WINDOW_SPANS
from choreoscope.collector.store import DEFAULT_DB

# Each subcommand's module is imported when that subcommand runs (start-up stays fast), but by name,
# so the dependency graph is in the code.


def _run_serve(args) -> int:
    from choreoscope.collector import serve

    return serve.run(args)


def _run_load(args) -> int:
    from choreoscope.collector import load_cmd

    return load_cmd.run(args)


def _run_stats(args) -> int:
    from choreoscope.collector import stats

    return stats.run(args)


def _run_analyze(args) -> int:
    from choreoscope.analysis import analyze_cmd

    return analyze_cmd.run(args)


def _run_check(args) -> int:
    from choreoscope.analysis import check_cmd

    return check_cmd.run(args)


def _run_compare(args) -> int:
    from choreoscope.analysis import compare_cmd

    return compare_cmd.run(args)


def _run_export(args) -> int:
    from choreoscope.analysis import export_cmd

    return export_cmd.run(args)


def _run_dashboard(args) -> int:
    from choreoscope.dashboard import launch

    return launch.run(args)


def _run_demo(args) -> int:
    from choreoscope.sample_traces import demo

    return demo.run(args)


def _add_db(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", default=DEFAULT_DB, help=f"DuckDB store (default: ./{DEFAULT_DB})")


def _add_listen(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--grpc-port", type=int, default=4317, help="OTLP/gRPC port (default: 4317; 0 picks one)")
    p.add_argument("--http-port", type=int, default=4318, help="OTLP/HTTP port (default: 4318; 0 picks one)")
    p.add_argument(
        "--max-request-bytes", type=int, default=16 * 1024 * 1024,
        help="largest accepted export request, after decompression (default: 16 MiB)",
    )
    p.add_argument(
        "--queue-spans", type=int, default=200_000,
        help="spans waiting to be committed before new exports are refused with 429/RESOURCE_EXHAUSTED",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="choreoscope",
        description="Recover the real workflows of a distributed system from its OpenTelemetry traces.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="receive OTLP (gRPC and HTTP) into the store and serve the dashboard")
    _add_db(p)
    _add_listen(p)
    p.add_argument("--dashboard-port", type=int, default=8501, help="dashboard port (default: 8501)")
    p.add_argument("--no-dashboard", action="store_true", help="run the OTLP receiver only")
    p.add_argument("--decode-workers", type=int, default=2, metavar="N",
                   help="processes decoding OTLP requests off the server's GIL (default: 2; 0 = in-thread)")
    p.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                   help="serve the receiver's Prometheus metrics at http://HOST:PORT/metrics (0 picks a free "
                        "port; default: none)")
    p.add_argument("--intended", action="append", default=[], metavar="PATH",
                   help="intended-workflow documents (file or directory; repeatable)")
    p.add_argument("--analyze-every", type=float, default=30.0, metavar="SECONDS",
                   help="re-run the analysis on new spans this often (default: 30; 0 = only on request); "
                        "a long run pushes the next back so analysis takes at most 1/4 of the time")
    p.add_argument("--live-window", type=int, default=DEFAULT_WINDOW_SPANS, metavar="SPANS",
                   help="on a larger store the live analysis covers the traces of the latest SPANS spans "
                        f"stored, and the traces they link to (default: {DEFAULT_WINDOW_SPANS}; 0 = the whole "
                        "store each run)")
    p.add_argument("--tls-cert", metavar="FILE", help="serve both receivers over TLS with this PEM certificate")
    p.add_argument("--tls-key", metavar="FILE", help="the PEM private key of --tls-cert")
    p.add_argument("--tls-client-ca", metavar="FILE",
                   help="mutual TLS: require client certificates signed by this PEM CA")
    p.add_argument("--bearer-token-file", metavar="FILE",
                   help="require `Authorization: Bearer <token>` (the file's content) on every export; "
                        "the dashboard asks for it too when not on loopback")
    p.set_defaults(run=_run_serve)

    p = sub.add_parser("load", help="load trace dumps into the store")
    p.add_argument("files", nargs="+", metavar="FILE")
    _add_db(p)
    p.add_argument("--format", default="auto",
                   choices=["auto", "otlp-json", "otlp-proto", "jaeger", "zipkin", "parquet"],
                   help="dump format (default: detected from content)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_run_load)

    p = sub.add_parser("stats", help="what the store holds: spans, traces, services, time range")
    _add_db(p)
    p.set_defaults(run=_run_stats)

    p = sub.add_parser("analyze", help="recover workflows and findings; write a report")
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="trace dumps or a .duckdb store (default: --db)")
    _add_db(p)
    p.add_argument("--intended", action="append", default=[], metavar="PATH",
                   help="intended-workflow documents (file or directory; repeatable)")
    p.add_argument("--format", default="md", choices=["json", "md", "dot", "mermaid"], help="report format")
    p.add_argument("--out", metavar="FILE", help="write the report here (default: standard output)")
    p.add_argument("--engine", default="duckdb", choices=["duckdb", "spark"],
                   help="where the per-span stages run: embedded DuckDB (default) or PySpark over Parquet")
    p.add_argument("--spark-master", default="local[*]", metavar="URL",
                   help="Spark master for --engine spark (default: local[*])")
    p.set_defaults(run=_run_analyze)

    p = sub.add_parser("check", help="drift gate for CI: exit 1 on new findings matching --fail-on")
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="trace dumps or a .duckdb store (default: --db)")
    _add_db(p)
    p.add_argument("--intended", action="append", default=[], metavar="PATH")
    p.add_argument("--baseline", metavar="REPORT.json", help="a previous JSON report; its findings are known")
    p.add_argument("--fail-on", nargs="+", default=["warning"], metavar="KIND|SEVERITY",
                   help="finding kinds or severities that fail the check (default: warning, i.e. warning+)")
    p.add_argument("--junit", metavar="FILE", help="also write JUnit XML")
    p.set_defaults(run=_run_check)

    p = sub.add_parser("compare", help="what changed between two runs: workflows, steps, edges, findings")
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="BEFORE AFTER: each a JSON report, trace dumps or a .duckdb store; one INPUT with --split")
    _add_db(p)
    p.add_argument("--split", metavar="KEY=A..B|time=ISO",
                   help="compare one input with itself: instances with spans at KEY=A (e.g. service.version=1.4.0) "
                        "against those at KEY=B, or instances started before the instant against those after")
    p.add_argument("--format", default="md", choices=["json", "md"], help="output format (default: md)")
    p.add_argument("--out", metavar="FILE", help="write the comparison here (default: standard output)")
    p.add_argument("--fail-on", nargs="+", metavar="KIND|SEVERITY",
                   help="exit 1 when a new finding has one of these kinds or severities (a severity: that or worse)")
    p.set_defaults(run=_run_compare)

    p = sub.add_parser("export", help="write declarations (asyncapi), an event log (ocel) "
                                      "or the spans as Parquet (parquet)")
    p.add_argument("what", choices=["asyncapi", "ocel", "parquet"])
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="trace dumps or a .duckdb store (default: --db)")
    _add_db(p)
    p.add_argument("--out", required=True, metavar="DIR|FILE",
                   help="asyncapi: the directory of the documents; ocel: the OCEL 2.0 JSON file; "
                        "parquet: the directory of spans/ and span_links/")
    p.set_defaults(run=_run_export)

    p = sub.add_parser("dashboard", help="open the dashboard over a store, offline")
    p.add_argument("db", nargs="?", default=DEFAULT_DB, metavar="DB")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--tls-cert", metavar="FILE", help="serve the dashboard over HTTPS with this PEM certificate")
    p.add_argument("--tls-key", metavar="FILE", help="the PEM private key of --tls-cert")
    p.add_argument("--bearer-token-file", metavar="FILE",
                   help="off loopback, the dashboard asks for this token before showing anything")
    p.set_defaults(run=_run_dashboard)

    p = sub.add_parser("demo", help="serve the bundled sample scenarios, with live traffic")
    _add_db(p)
    _add_listen(p)
    p.add_argument("--dashboard-port", type=int, default=8501)
    p.add_argument("--offline", action="store_true", help="no server: analyse the samples and write a report")
    p.add_argument("--out", metavar="FILE", help="with --offline: where to write the report (default: stdout)")
    p.add_argument("--format", default="md", choices=["json", "md", "dot", "mermaid"])
    p.add_argument("--duration", type=float, default=0, metavar="SECONDS",
                   help="stop after this long (default: run until interrupted)")
    p.set_defaults(run=_run_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except Exception as exc:  # a store that cannot be used, found past a command's own handling
        message = _store_failure(args, exc)
        if message is None:
            raise
        print(f"choreoscope {args.command}: {message}", file=sys.stderr)
        return 2


def _store_failure(args, exc: Exception) -> str | None:
    """The one-line message for a store error or a damaged store (collector/store_errors.py), or
    None for any other exception (a bug: its traceback is wanted)."""
    from choreoscope.collector import store, store_errors

    if isinstance(exc, store.StoreError):
        return str(exc)
    detail = store_errors.damage_detail(exc) if type(exc).__module__.startswith(("duckdb", "_duckdb")) else None
    if detail is None:
        return None
    paths = [p for p in getattr(args, "inputs", None) or [] if str(p).endswith((".duckdb", ".db"))]
    return store_errors.damaged_message(paths[0] if paths else getattr(args, "db", "the store"), detail)


if __name__ == "__main__":
    sys.exit(main())
