#!/usr/bin/env bash
# Builds llama.cpp from source for THIS machine (-march=native via GGML_NATIVE=ON) for `npm run bench`,
# which compares phoenix-local with the faster of node-llama-cpp's generic prebuilt binary and this build.
#
# The source is the llama.cpp that llama-cpp-python's sdist vendors (PyPI is reachable where GitHub may
# not be). Only the llama/ggml libraries are built (not the `common/` tools, which take far longer), plus
# benches/native/llama-driver.c, a small timing driver against llama.h.
#
# Idempotent: the libraries are built once per llama-cpp-python version into the cache
# ($PHOENIX_LLAMA_NATIVE_DIR, default ~/.cache/phoenix-local/llama-native); the driver is relinked when its
# source changes (likewise benches/native/llama-quantize.c, llama.cpp's quantizer, as phoenix-llama-quantize
# next to the driver). Takes ~10+ minutes on 2 cores; runs under `nice -n 15`.
#   scripts/build-llama-native.sh            build (or reuse) and print the driver's path
#   scripts/build-llama-native.sh --check    print the driver's path if the libraries are built (relinking
#                                            the driver if needed, seconds); exit 3 without building if not
#   LLAMA_CPP_PYTHON_VERSION=x.y.z scripts/build-llama-native.sh   another vendored llama.cpp
set -euo pipefail

VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
CACHE="${PHOENIX_LLAMA_NATIVE_DIR:-$HOME/.cache/phoenix-local/llama-native}"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRIVER_SRC="$REPO_ROOT/benches/native/llama-driver.c"
PREFIX="$CACHE/prefix-$VERSION"
JOBS="${JOBS:-$(nproc)}"
PYTHON="${PYTHON:-python3}"

CHECK_ONLY=0
case "${1:-}" in
  --check) CHECK_ONLY=1 ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

if [[ $CHECK_ONLY == 1 && ! -f "$PREFIX/.built" ]]; then
  echo "llama.cpp (llama-cpp-python $VERSION sdist) is not built in $PREFIX: run scripts/build-llama-native.sh (~10+ min on 2 cores)" >&2
  exit 3
fi

mkdir -p "$CACHE"

if [[ ! -f "$PREFIX/.built" ]]; then
  SRC="$CACHE/src/llama_cpp_python-$VERSION"
  if [[ ! -f "$SRC/vendor/llama.cpp/CMakeLists.txt" ]]; then
    echo "[llama-native] fetching llama-cpp-python $VERSION sdist from PyPI" >&2
    "$PYTHON" -m pip download --quiet --no-binary :all: --no-deps "llama-cpp-python==$VERSION" -d "$CACHE/sdist"
    mkdir -p "$CACHE/src"
    tar xzf "$CACHE/sdist/llama_cpp_python-$VERSION.tar.gz" -C "$CACHE/src"
  fi
  BUILD="$CACHE/build-$VERSION"
  echo "[llama-native] building llama.cpp libraries (GGML_NATIVE=ON) in $BUILD" >&2
  nice -n 15 cmake -S "$SRC/vendor/llama.cpp" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=ON \
    -DLLAMA_BUILD_COMMON=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF \
    -DCMAKE_INSTALL_PREFIX="$PREFIX" -DCMAKE_INSTALL_LIBDIR=lib >&2
  nice -n 15 cmake --build "$BUILD" -j "$JOBS" >&2
  cmake --install "$BUILD" >&2
  touch "$PREFIX/.built"
fi

# Links one of benches/native/*.c against the libraries (again when its source or this script changed).
link_tool() {
  local src="$1" exe="$2"
  if [[ ! -x "$exe" || "$src" -nt "$exe" || "${BASH_SOURCE[0]}" -nt "$exe" ]]; then
    mkdir -p "$PREFIX/bin"
    cc -O2 -std=c11 -Wall -Wextra -I"$PREFIX/include" "$src" -o "$exe.tmp" \
      -L"$PREFIX/lib" -lllama -lggml -lggml-base \
      -Wl,--disable-new-dtags,-rpath,"$PREFIX/lib" # RPATH, not RUNPATH: also finds libllama's own ggml dependencies
    mv "$exe.tmp" "$exe"
  fi
}

DRIVER="$PREFIX/bin/phoenix-llama-driver"
link_tool "$DRIVER_SRC" "$DRIVER"
# llama.cpp's own quantizer (llama_model_quantize) for the quantized bench files; found next to the driver.
link_tool "$REPO_ROOT/benches/native/llama-quantize.c" "$PREFIX/bin/phoenix-llama-quantize"
echo "$DRIVER"
