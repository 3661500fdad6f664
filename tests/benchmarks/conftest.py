"""The quality benchmark's modules live in benchmarks/quality/ (scripts, not a package): put that folder
on sys.path, as the scripts do themselves."""

import sys
from pathlib import Path

QUALITY = Path(__file__).resolve().parents[2] / "benchmarks" / "quality"
if str(QUALITY) not in sys.path:
    sys.path.insert(0, str(QUALITY))
