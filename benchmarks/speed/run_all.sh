#!/usr/bin/env bash
# Runs the speed/memory benchmarks one after the other (never in parallel: they time each other's CPU): decoding,
# serving, loading, training.
#
#   benchmarks/speed/run_all.sh [--quick] [any option the three scripts share: --model, --repeats, --threads, --device]
#
# Reports go to $OUT_DIR (default benchmarks/speed/results, or benchmarks/speed/results-quick with --quick):
# generate.md / serve.md / load.md / train.md, each with its .json. $PYTHON picks the interpreter (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python
suffix=""
for arg in "$@"; do [ "$arg" = "--quick" ] && suffix="-quick"; done
OUT_DIR=${OUT_DIR:-benchmarks/speed/results$suffix}
mkdir -p "$OUT_DIR"
for bench in generate serve load train; do
    echo "== bench_$bench.py $* -> $OUT_DIR/$bench.md" >&2
    start=$(date +%s)
    "$PYTHON" "benchmarks/speed/bench_$bench.py" "$@" --out "$OUT_DIR/$bench.md"
    echo "== bench_$bench.py took $(( $(date +%s) - start )) s" >&2
done
