#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: sets up .venv, then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
# The Space's browser tests drive Debian's chromium with Playwright (npx playwright cannot download
# browsers here); without it they skip and say so.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "chromium could not be installed: the browser tests will skip"
  else
    echo "chromium is missing and this is not root: the browser tests will skip"
  fi
fi
export HF_HUB_DISABLE_TELEMETRY=1 GRADIO_ANALYTICS_ENABLED=False TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest "$@"
