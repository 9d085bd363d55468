"""`choreoscope load FILE... [--db PATH] [--format F] [--no-progress]`: trace dumps into the store.

Prints each problem (path:line: what was wrong) on stderr and a summary on stdout; exits 1 if
any span was rejected or any file failed, 2 if the store cannot be opened or is found damaged.
"""

from __future__ import annotations

import argparse
import sys

from choreoscope.collector import store, store_errors
from choreoscope.collector.loaders import load_paths


def run(args: argparse.Namespace) -> int:
    try:
        con = store.connect(args.db)
    except store.StoreError as exc:
        print(f"choreoscope load: {exc}", file=sys.stderr)
        return 2
    try:
        result = load_paths(con, args.files, fmt=args.format, progress=not args.no_progress)
    finally:
        con.close()
    damage = next((d for d in (store_errors.damage_detail(m) for m in result.errors if "could not store" in m)
                   if d is not None), None)
    if damage is not None:  # the store, not the input, is the problem: say that once
        print(f"choreoscope load: {store_errors.damaged_message(args.db, damage)}", file=sys.stderr)
        return 2
    for message in result.errors:
        print(message, file=sys.stderr)
    failed = sum(1 for f in result.files if not f.ok)
    for f in result.files:
        print(f"  {f.path}: {f.format}, {f.spans_loaded} spans loaded"
              + (f", {f.duplicates_skipped} duplicates skipped" if f.duplicates_skipped else "")
              + (f", {f.spans_rejected} rejected" if f.spans_rejected else "")
              + (f", {len(f.errors)} problems" if f.errors else ""))
    print(f"{len(result.files)} files ({failed} with problems), {result.spans_loaded} spans loaded, "
          f"{result.duplicates_skipped} duplicates skipped, {result.spans_rejected} rejected -> {args.db}")
    if not result.ok:
        print("Some input was not loaded; the messages above say where and why. "
              "Everything else is stored.", file=sys.stderr)
        return 1
    return 0
