"""Print the version pip would install for one package, read from `pip install --dry-run --report -` on stdin.

Usage: pip install --dry-run --ignore-installed -q --report - PACKAGES | python resolved_version.py NAME
Exits 1 (printing nothing) when the report does not install NAME.
"""

from __future__ import annotations

import json
import re
import sys


def canonical(name: str) -> str:
    """PEP 503 normalised name: case and runs of '-', '_', '.' do not matter."""
    return re.sub(r"[-_.]+", "-", name).lower()


def resolved_version(report: dict, name: str) -> str | None:
    """The version of `name` among the report's installs, or None."""
    for item in report.get("install", []):
        metadata = item.get("metadata", {})
        if canonical(metadata.get("name", "")) == canonical(name):
            return metadata.get("version")
    return None


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        report = json.load(sys.stdin)
    except json.JSONDecodeError as error:
        print(f"resolved_version: stdin is not a pip report ({error})", file=sys.stderr)
        return 1
    version = resolved_version(report, argv[1])
    if version is None:
        return 1
    print(version)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
