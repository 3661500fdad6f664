#!/usr/bin/env bash
# Creates .venv (once) with torch's local CPU build installed first, then the package and its dev extra.
# Idempotent: a second run only re-installs the package itself in editable mode.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# Brief output: no "running pip as root" or "new pip release" notices (older pips ignore these variables).
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/pip install -q "torch==2.13.0" || .venv/bin/pip install -q -c constraints.txt torch --index-url https://download.pytorch.org/whl/cpu
fi
.venv/bin/pip install -q -c constraints.txt -e ".[dev]"
