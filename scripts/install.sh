#!/usr/bin/env bash
# Create the virtual environment with every extra and the dev tools.
# torch is pinned first: 2.13.0 (CPU) lies on this project's machines; any other request
# would download a multi-gigabyte CUDA build. llama-cpp-python compiles from source (about
# 10 minutes on 2 cores), so its wheel is built once into $WHEELS and reused. The real
# llama-server binary (the backend's tests run against it) is built once from the llama.cpp
# that the same sdist vendors (about 5 minutes), into $WHEELS/../llama-server-<version>/.
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
LLAMA_SERVER_DIR="$(dirname "$WHEELS")/llama-server-$LLAMA_CPP_VERSION"
if [ ! -x "$LLAMA_SERVER_DIR/llama-server" ]; then
    echo "building llama-server from llama-cpp-python $LLAMA_CPP_VERSION's llama.cpp (once, ~5 min)"
    command -v cmake >/dev/null 2>&1 || $PIP install --quiet cmake
    CMAKE="$(command -v cmake || echo "$VENV/bin/cmake")"
    SRC="$(mktemp -d)"
    $PIP download --quiet --no-deps --no-binary :all: "llama-cpp-python==$LLAMA_CPP_VERSION" -d "$SRC"
    tar -xzf "$SRC"/llama_cpp_python-"$LLAMA_CPP_VERSION".tar.gz -C "$SRC"
    LLAMA_CPP="$SRC/llama_cpp_python-$LLAMA_CPP_VERSION/vendor/llama.cpp"
    "$CMAKE" -S "$LLAMA_CPP" -B "$LLAMA_CPP/build" -DCMAKE_BUILD_TYPE=Release \
        -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF >/dev/null
    "$CMAKE" --build "$LLAMA_CPP/build" --target llama-server -j "$(nproc)" >/dev/null
    mkdir -p "$LLAMA_SERVER_DIR"
    cp "$LLAMA_CPP/build/bin/llama-server" "$LLAMA_SERVER_DIR/llama-server"
    rm -rf "$SRC"
fi
$PIP install --quiet --find-links "$WHEELS" -e ".[all,dev]"
