#!/usr/bin/env bash
# Create the virtual environment with every extra and the dev tools.
# torch is pinned first: 2.13.0 (CPU) lies on this project's machines; any other request
# would download a multi-gigabyte CUDA build. llama-cpp-python compiles from source (about
# 10 minutes on 2 cores), so its wheel is built once into $WHEELS and reused.
set -euo pipefail
VENV=${VENV:-.venv}
WHEELS=${WHEELS:-$HOME/.cache/gpuguard/wheels}
LLAMA_CPP_VERSION=0.3.36

python3 -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install --quiet --upgrade pip wheel
$PIP install --quiet torch==2.13.0
mkdir -p "$WHEELS"
if ! ls "$WHEELS"/llama_cpp_python-"$LLAMA_CPP_VERSION"-*.whl >/dev/null 2>&1; then
    echo "building llama-cpp-python $LLAMA_CPP_VERSION into $WHEELS (once, ~10 min)"
    CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}" \
        $PIP wheel --quiet --no-deps "llama-cpp-python==$LLAMA_CPP_VERSION" -w "$WHEELS"
fi
$PIP install --quiet --find-links "$WHEELS" "llama-cpp-python[server]==$LLAMA_CPP_VERSION"
$PIP install --quiet --find-links "$WHEELS" -e ".[all,dev]"
