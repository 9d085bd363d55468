"""Precision, recall and F1 per finding kind over the corpus (the generated scenarios and the live
captures, see tests/corpus.py), and the look-alikes reported.

    .venv/bin/python bench/corpus_score.py [--captures-only]      (from the repository root)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests.corpus

from choreoscope.analysis.analyze_cmd import analyze
from tests.corpus import corpus, score, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captures-only", action="store_true")
    args = parser.parse_args()
    scores = {name: score(analyze([str(dump)], ":memory:"), truth)
              for name, (dump, truth) in corpus(args.captures_only).items()}
    print(table(scores))
    lookalikes = [f"{name}: {line}" for name, s in scores.items() for line in s.lookalikes]
    print(f"\nlook-alikes reported: {len(lookalikes)}")
    for line in lookalikes:
        print("  " + line)
    for name, s in scores.items():
        for line in s.missed:
            print(f"  missed   {name}: {line}")
        for line in s.unexpected:
            print(f"  reported {name}: {line}")


if __name__ == "__main__":
    main()
