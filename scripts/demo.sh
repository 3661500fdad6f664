#!/usr/bin/env bash
# The main job, end to end on a fresh machine: set up .venv, fetch the offline sources and base models
# (idempotent), then build (or reuse) the zoo on the embedded Hub under artifacts/, load a model back by
# repo id in a fresh interpreter, and serve the routing Space on the zoo's models (Ctrl-C stops it).
# Extra arguments go to `talklora-hub zoo build` (e.g. --no-serve, --port 8000, --verbose).
# Quiet by default: our own stage bars and a closing table; --verbose (or TALKLORA_VERBOSE=1) shows the
# libraries' progress bars and messages in every step.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
export HF_HUB_DISABLE_TELEMETRY=1 GRADIO_ANALYTICS_ENABLED=False TOKENIZERS_PARALLELISM=false
for arg in "$@"; do
  if [ "$arg" = --verbose ]; then export TALKLORA_VERBOSE=1; fi  # the data steps take the same switch
done
.venv/bin/talklora-hub data fetch
.venv/bin/talklora-hub data bootstrap-models
.venv/bin/talklora-hub zoo build --root artifacts "$@"
