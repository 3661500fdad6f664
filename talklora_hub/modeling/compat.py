"""The transformers releases this bundle runs on, checked when the bundle is imported.

The configuration uses transformers' dataclass configs with `SubConfigSpec` sub-configs, which first
shipped in transformers 5.20.0; on an older release the import would fail deep inside transformers with
a message that names neither the cause nor the fix. This check fails first, and says both.

Part of the bundle that travels inside every saved model: imports only the standard library and
transformers. `scripts/transformers_matrix.sh` loads saved models on the oldest supported release and on
the newest one pip can install.
"""

from __future__ import annotations

import re
from typing import Optional, Tuple

import transformers

# The oldest transformers release the bundle is tested on (scripts/transformers_matrix.sh); keep it equal
# to the `transformers>=` lower bound in pyproject.toml (a test checks).
TRANSFORMERS_MIN_VERSION = "5.20.0"
SUPPORTED_TRANSFORMERS = f"transformers>={TRANSFORMERS_MIN_VERSION}"


def parse_version(version: str) -> Optional[Tuple[int, int, int]]:
    """(major, minor, micro) of a release string such as "5.20.0", "5.21.0.dev0" or "4.57.6"; None if the
    string does not start with a number."""
    match = re.match(r"\s*v?(\d+)(?:\.(\d+))?(?:\.(\d+))?", str(version))
    if match is None:
        return None
    return tuple(int(part or 0) for part in match.groups())


def check_transformers_version(version: Optional[str] = None) -> None:
    """Raises ImportError naming the supported range, the installed release and the fix, when the installed
    transformers (or `version`) is older than TRANSFORMERS_MIN_VERSION. An unparsable version passes."""
    version = transformers.__version__ if version is None else version
    found = parse_version(version)
    if found is not None and found < parse_version(TRANSFORMERS_MIN_VERSION):
        raise ImportError(
            f"talklora_hub models need {SUPPORTED_TRANSFORMERS}, this is {version}; "
            f"fix: pip install -U '{SUPPORTED_TRANSFORMERS}'")
