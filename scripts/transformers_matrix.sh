#!/usr/bin/env bash
# The transformers matrix: models of every method, saved by .venv, are loaded with the Auto classes and
# trust_remote_code in clean venvs holding only torch (CPU, installed first), one transformers release and
# safetensors, and must reproduce .venv's logits, routing and greedy generate() tokens
# (tests/packaging/test_transformers_matrix.py).
#
# Releases: the oldest supported (TRANSFORMERS_MIN_VERSION in talklora_hub/modeling/compat.py, pyproject's
# lower bound) and the newest that pip can install; TALKLORA_TRANSFORMERS_MATRIX="5.20.0 5.22.2" overrides. The venvs are
# cached under .cache/matrix/ (a re-run builds nothing). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! .venv/bin/python -c "import talklora_hub.modeling, pytest" 2>/dev/null; then
  bash scripts/setup_venv.sh
fi
if [ -z "${TALKLORA_TRANSFORMERS_MATRIX:-}" ]; then
  oldest=$(.venv/bin/python -c "from talklora_hub.modeling.compat import TRANSFORMERS_MIN_VERSION as v; print(v)")
  # The newest release a stranger can install: pip's own resolution (with our constraints), not the newest
  # listed, since a listed release may need a dependency the registry lacks (5.25.0 needed kernels>=0.19.1).
  listed=$(.venv/bin/python -m pip index versions transformers 2>/dev/null | sed -n 's/^transformers (\(.*\))$/\1/p' || true)
  newest=$(.venv/bin/python -m pip install --dry-run --ignore-installed -q --report - -c constraints.txt \
             transformers safetensors 2>/dev/null | .venv/bin/python scripts/resolved_version.py transformers || true)
  if [ -z "$newest" ]; then
    newest=$(.venv/bin/python -c "import transformers; print(transformers.__version__)")
    echo "pip could not resolve an installable transformers: testing the dev venv's $newest instead"
  elif [ -n "$listed" ] && [ "$listed" != "$newest" ]; then
    echo "PyPI lists transformers $listed, but it cannot be installed here; the newest installable is $newest"
  fi
  TALKLORA_TRANSFORMERS_MATRIX=$(printf '%s\n' "$oldest" "$newest" | sort -uV | tr '\n' ' ')
fi
export TALKLORA_TRANSFORMERS_MATRIX
export HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
echo "transformers matrix: ${TALKLORA_TRANSFORMERS_MATRIX}"
start=$SECONDS
status=0
.venv/bin/python -m pytest tests/packaging/test_transformers_matrix.py "$@" || status=$?
echo "transformers matrix took $((SECONDS - start)) s"
exit $status
