#!/usr/bin/env bash
# The GPU benchmark in one call: embedding beside a generating LLM, unguarded, exclusive and
# budget (bench/gpu/side_by_side.py). On a GPU: bench/gpu/run.sh (about 2 minutes);
# anywhere: bench/gpu/run.sh --device cpu --seconds 1 (tiny sizes, checks that it runs).
# PYTHON names the interpreter (default: python3); options go to side_by_side.py.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" "$root/bench/gpu/side_by_side.py" "$@"
