#!/usr/bin/env bash
# Builds the WASM fallback: crates/wasm → wasm32-unknown-unknown (release, +simd128) → wasm-bindgen
# → wasm/ (gitignored). Output:
#   wasm/phoenix-local.js    ESM entry for Node: the RawBinding ts/binding/load.ts imports, served
#                            from a worker thread (node-host.js ⇄ node-worker.js) around the in-thread
#                            binding (node-core.js; PHOENIX_WASM_THREAD=main runs that one directly)
#   wasm/binding.js          the shared JS layer (trap → [E_INTERNAL], re-instantiation, loadModel)
#   wasm/node/               wasm-bindgen --target nodejs (CommonJS, instantiates synchronously from disk)
#   wasm/web/                wasm-bindgen --target web (ES module + async init(bytes | URL), for browsers
#                            and Web Workers); wasm/browser.js is its RawBinding entry
# Why two wasm-bindgen targets: `web`'s init fetches the .wasm by URL, which Node 20's fetch cannot do
# for file: URLs; `nodejs` reads it with fs, which browsers lack. Both wrap the same .wasm file.
#
# Toolchain: rustup's wasm32-unknown-unknown target when installed; otherwise Debian's rustc-web
# (1.96) building std from source:
#   apt-get install -y rustc-web cargo-web rust-web-src lld-22
# wasm-bindgen CLI of exactly the wasm-bindgen crate version in Cargo.lock:
#   cargo install wasm-bindgen-cli --version <version>
#
# Panics (PHOENIX_WASM_PANIC=unwind|abort):
#   unwind  WASM exception handling (+exception-handling, supported by every current browser and
#           Node ≥ 17): the core's catch_panic works as natively, a panic is `[E_INTERNAL] …` and the
#           instance stays usable. Needs std built from source, so it is the default of the Debian path.
#   abort   rustup's prebuilt std (its default there): a panic traps; the JS layer (wasm/binding.js)
#           rethrows it as `[E_INTERNAL] …` with the panic message and re-instantiates the module.
#
# Env: PHOENIX_WASM_TOOLCHAIN=rustup|debian forces a toolchain; CARGO_TARGET_DIR as usual
# (default target/wasm-<panic>, apart from the native build so neither invalidates the other).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TARGET=wasm32-unknown-unknown
OUT="$ROOT/wasm"

say() { printf '[build-wasm] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

have_rustup_target() {
  command -v rustup >/dev/null 2>&1 && rustup target list --installed 2>/dev/null | grep -qx "$TARGET"
}

toolchain="${PHOENIX_WASM_TOOLCHAIN:-}"
if [ -z "$toolchain" ]; then
  if have_rustup_target; then toolchain=rustup; else toolchain=debian; fi
fi
panic="${PHOENIX_WASM_PANIC:-}"
if [ -z "$panic" ]; then
  if [ "$toolchain" = debian ]; then panic=unwind; else panic=abort; fi
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target/wasm-$panic}"
# simd128: the kernels' plain-Rust loops auto-vectorise to 128-bit lanes (all current browsers and
# Node ≥ 16 support it). getrandom 0.3 needs the cfg to use crypto.getRandomValues (see crates/wasm/Cargo.toml).
rustflags="-C target-feature=+simd128 --cfg getrandom_backend=\"wasm_js\""
cargo_args=(build --release --target "$TARGET" -p phoenix-wasm)
case "$panic" in
  unwind)
    rustflags="-C target-feature=+simd128,+exception-handling -C panic=unwind --cfg getrandom_backend=\"wasm_js\""
    build_std="-Zbuild-std=std,panic_unwind"
    ;;
  abort) build_std="-Zbuild-std=std,panic_abort" ;;
  *) die "PHOENIX_WASM_PANIC must be unwind or abort, got '$panic'" ;;
esac
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="$rustflags ${PHOENIX_WASM_RUSTFLAGS:-}"

case "$toolchain" in
  rustup)
    have_rustup_target || die "rustup has no $TARGET target (rustup target add $TARGET)"
    CARGO=(cargo)
    if [ "$panic" = unwind ]; then
      # rustup's prebuilt wasm32 std is panic=abort: rebuild std (needs the rust-src component).
      [ -f "$(rustc --print sysroot)/lib/rustlib/src/rust/library/Cargo.lock" ] ||
        die "PHOENIX_WASM_PANIC=unwind with rustup needs std sources: rustup component add rust-src"
      export RUSTC_BOOTSTRAP=1
      cargo_args+=("$build_std")
    fi
    ;;
  debian)
    for tool in /usr/bin/cargo /usr/bin/rustc; do
      [ -x "$tool" ] || die "$tool missing: rustup has no $TARGET target; install Debian's toolchain: apt-get install -y rustc-web cargo-web rust-web-src lld-22"
    done
    LINKER="$(command -v wasm-ld-22 || command -v wasm-ld || true)"
    [ -n "$LINKER" ] || die "wasm-ld not found (apt-get install -y lld-22)"
    [ -f "$(/usr/bin/rustc --print sysroot)/lib/rustlib/src/rust/library/Cargo.lock" ] ||
      die "std sources missing (apt-get install -y rust-web-src)"
    # Debian ships no prebuilt std for wasm32: build it (nightly-only flag, hence RUSTC_BOOTSTRAP).
    export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1
    export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$LINKER"
    # Keep rustup's RUSTUP_TOOLCHAIN etc. from redirecting /usr/bin/cargo's rustc.
    unset RUSTC_WRAPPER RUSTUP_TOOLCHAIN
    CARGO=(/usr/bin/cargo)
    cargo_args+=("$build_std")
    ;;
  *) die "PHOENIX_WASM_TOOLCHAIN must be rustup or debian, got '$toolchain'" ;;
esac

# The CLI must match the crate: wasm-bindgen refuses (or worse, miscompiles) on a mismatch.
WB_VERSION="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)"
[ -n "$WB_VERSION" ] || die "wasm-bindgen not found in Cargo.lock (run cargo once with crates/wasm in the workspace)"
WASM_BINDGEN="${WASM_BINDGEN:-$(command -v wasm-bindgen || true)}"
[ -n "$WASM_BINDGEN" ] || die "wasm-bindgen CLI missing: cargo install wasm-bindgen-cli --version $WB_VERSION"
cli_version="$("$WASM_BINDGEN" --version | awk '{ print $2 }')"
[ "$cli_version" = "$WB_VERSION" ] ||
  die "wasm-bindgen CLI is $cli_version, Cargo.lock has $WB_VERSION: cargo install wasm-bindgen-cli --version $WB_VERSION --force"

say "toolchain: $toolchain ($("${CARGO[@]}" --version)), panic=$panic; target dir $CARGO_TARGET_DIR"
started=$(date +%s)
"${CARGO[@]}" "${cargo_args[@]}"
say "cargo build: $(( $(date +%s) - started )) s"

WASM_FILE="$CARGO_TARGET_DIR/$TARGET/release/phoenix_wasm.wasm"
[ -f "$WASM_FILE" ] || die "expected $WASM_FILE after the build"

rm -rf "$OUT/node" "$OUT/web"
mkdir -p "$OUT"
"$WASM_BINDGEN" --target nodejs --out-dir "$OUT/node" --out-name phoenix_local_core "$WASM_FILE"
"$WASM_BINDGEN" --target web --out-dir "$OUT/web" --out-name phoenix_local_core "$WASM_FILE"
# The package is "type": "module"; the nodejs glue is CommonJS.
printf '{ "type": "commonjs" }\n' > "$OUT/node/package.json"
cp crates/wasm/js/binding.js crates/wasm/js/browser.js crates/wasm/js/phoenix-local.js crates/wasm/js/node-core.js \
  crates/wasm/js/node-host.js crates/wasm/js/node-wire.js crates/wasm/js/node-worker.js "$OUT/"

say "wrote $OUT ($(du -h "$OUT/node/phoenix_local_core_bg.wasm" | cut -f1) wasm) in $(( $(date +%s) - started )) s"
