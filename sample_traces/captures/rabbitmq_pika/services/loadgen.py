"""loadgen: drives N orders through shop-api over HTTP with requests (instrumented: its client
span is each trace's root)."""

from __future__ import annotations

import argparse
import random
import sys
import time

from _otel import setup


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--otlp", required=True)
    ap.add_argument("--shop-url", required=True)
    ap.add_argument("--instances", type=int, required=True)
    ap.add_argument("--interval", type=float, default=0.35)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(f"loadgen-{args.seed}")

    provider = setup("loadgen", args.otlp)
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    RequestsInstrumentor().instrument()
    import requests

    http = requests.Session()
    try:
        for i in range(args.instances):
            resp = http.post(
                f"{args.shop_url}/orders",
                json={"customer": f"c{rng.randint(1, 40)}", "sku": f"SKU-{rng.randint(100, 120)}",
                      "qty": rng.randint(1, 4)},
                timeout=10,
            )
            resp.raise_for_status()
            time.sleep(args.interval * rng.uniform(0.8, 1.2))
        print(f"loadgen: placed {args.instances} orders", file=sys.stderr, flush=True)
    finally:
        provider.shutdown()


if __name__ == "__main__":
    main()
