"""Carafe's `taxonomy validate` against InstructLab's TaxonomyParser(schema_version=0), file by file.

    python bench/taxonomy_agreement.py TAXONOMY [--show N]

Prints both parsers' accept counts, how many verdicts agree, and each disagreement.
Get a real taxonomy with a clone of the InstructLab community taxonomy (an older commit
holds ~147 qna.yaml files, v1-v3).
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from carafe.tuning.upstream import compare


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("taxonomy", type=Path)
    ap.add_argument("--show", type=int, default=10, help="Disagreements and Carafe errors to print")
    args = ap.parse_args()
    t0 = time.perf_counter()
    verdicts = compare(args.taxonomy)
    seconds = time.perf_counter() - t0
    n = len(verdicts)
    agree = sum(v.agree for v in verdicts)
    print(f"taxonomy {args.taxonomy}: {n} recipe files ({seconds:.1f} s for both parsers)")
    print(f"  InstructLab TaxonomyParser(schema_version=0) accepts {sum(v.upstream_ok for v in verdicts)}/{n}")
    print(f"  carafe taxonomy validate                     accepts {sum(v.carafe_ok for v in verdicts)}/{n}")
    print(f"  same verdict: {agree}/{n}; files with Carafe warnings: {sum(v.carafe_warnings > 0 for v in verdicts)}")
    rules = collections.Counter(e.split("[", 1)[1].split("]", 1)[0] for v in verdicts for e in v.carafe_errors)
    if rules:
        print("  Carafe error rules: " + ", ".join(f"{r} x{c}" for r, c in rules.most_common()))
    for v in [v for v in verdicts if not v.agree][: args.show]:
        print(
            f"  DISAGREE {v.file}: upstream {'ok' if v.upstream_ok else f'{v.upstream_errors} error(s)'}, "
            f"carafe {'ok' if v.carafe_ok else v.carafe_errors[:2]}"
        )
    for v in [v for v in verdicts if v.agree and not v.carafe_ok][: args.show]:
        print(f"  both reject {v.file}: {v.carafe_errors[0]}")
    sys.exit(0 if agree == n else 1)


if __name__ == "__main__":
    main()
