"""Root-cause ranking accuracy on real fault cases: meshlens vs naive baselines (bench/rca/)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.rca.trainticket import main

if __name__ == "__main__":
    sys.exit(main())
