#!/usr/bin/env bash
# The main job, end to end on a fresh machine: set up .venv, fetch the offline sources and base models
# (idempotent), then build (or reuse) the zoo on the embedded Hub under artifacts/, load a model back by
# repo id in a fresh interpreter, and serve the routing Space on the zoo's models (Ctrl-C stops it).
# Extra arguments go to `talklora-hub zoo build` (e.g. --no-serve, --steps 48, --rebuild).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
export HF_HUB_DISABLE_TELEMETRY=1 GRADIO_ANALYTICS_ENABLED=False TOKENIZERS_PARALLELISM=false
.venv/bin/talklora-hub data fetch
.venv/bin/talklora-hub data bootstrap-models
.venv/bin/talklora-hub zoo build --root artifacts "$@"
