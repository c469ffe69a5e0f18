"""Root-cause evaluation: Train-Ticket real traces (always) and our recorded fault corpus (when
MESHLENS_RCA_CORPUS names a directory recorded by bench/rca/record.py). See bench/rca/README.md."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.rca import demo_corpus, trainticket


def main() -> int:
    code = trainticket.main()
    corpus = os.environ.get("MESHLENS_RCA_CORPUS", "")
    if not corpus:
        print("\nown fault corpus: skipped (set MESHLENS_RCA_CORPUS to a recorded corpus dir)")
        return code
    print(f"\n=== own fault corpus: {corpus}")
    return max(code, demo_corpus.main([corpus]))


if __name__ == "__main__":
    sys.exit(main())
