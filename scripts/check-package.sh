#!/usr/bin/env bash
# Installs the packed tarballs the way a user does, into an empty folder, and runs the CLI from there
# with no Rust toolchain on PATH: once with the native platform package, once with every `.node` file
# removed (the WASM fallback inside the main package). Both must report their backend in `info` and
# generate the same greedy text.
#
# Usage: scripts/check-package.sh [tarball dir]
#   without an argument it packs first (`npm run pack`, which needs the native and WASM builds).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODEL=phoenix-ssm-lite
PROMPT="Once upon a time, there was a little"

say() { printf '[check-package] %s\n' "$*" >&2; }
die() { say "FAIL: $*"; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

tarballs="${1:-}"
if [ -z "$tarballs" ]; then
  tarballs="$work/tarballs"
  node "$ROOT/scripts/pack.mjs" "$tarballs" >/dev/null
fi
tarballs="$(cd "$tarballs" && pwd)"
shopt -s nullglob
files=("$tarballs"/*.tgz)
[ ${#files[@]} -gt 0 ] || die "no tarballs in $tarballs"

app="$work/app"
mkdir -p "$app"
printf '{ "name": "phoenix-local-install-check", "private": true }\n' > "$app/package.json"
say "installing ${files[*]##*/} into an empty folder"
(cd "$app" && npm install --no-audit --no-fund --no-package-lock --loglevel=error "${files[@]}")
pkg="$app/node_modules/phoenix-local"
[ -d "$pkg" ] || die "phoenix-local was not installed"

# A PATH with node, npm, npx and a shell only: the package must run without cargo or rustc.
bin="$work/bin"
mkdir -p "$bin"
for tool in node npm npx sh; do ln -s "$(command -v "$tool")" "$bin/$tool"; done
for tool in cargo rustc; do
  if PATH="$bin" command -v "$tool" >/dev/null 2>&1; then die "$tool is still on the check's PATH"; fi
done

# No --models-dir and no models/ folder in the app: the CLI must find the package's bundled model.
[ -f "$pkg/dist/models/bundled.js" ] || die "the package has no bundled-model lookup (dist/models/bundled.js)"
[ ! -e "$app/models" ] || die "the app folder must not have a models/ folder for this check"

# The shipped JS names no source maps it lacks (pack.mjs builds dist/ without them).
maps="$(grep -rl 'sourceMappingURL' "$pkg/dist" || true)"
[ -z "$maps" ] || die "packed dist/ files reference source maps the package does not hold: ${maps//$'\n'/ }"

phoenix() {
  (cd "$app" && env -u PHOENIX_BACKEND -u PHOENIX_NATIVE_PATH -u PHOENIX_WASM_PATH -u PHOENIX_MODELS_DIR \
    XDG_CACHE_HOME="$work/cache" PATH="$bin" npx --no phoenix-local "$@")
}

# Prints the backend kind `info` reports, after checking it was loaded from the installed packages:
# the native addon from a platform package, the WASM build from the main package.
backend_of() {
  phoenix info "$MODEL" --json | node -e '
    let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => {
      const b = JSON.parse(s).backend ?? {};
      if (!b.kind) { console.error(`no backend: ${b.unavailable ?? "?"}`); process.exit(1); }
      const expected = b.kind === "native" ? /\/node_modules\/phoenix-local-[^/]+\/[^/]+\.node$/ : /\/node_modules\/phoenix-local\/wasm\//;
      if (!expected.test(b.path)) { console.error(`${b.kind} backend loaded from outside the installed packages: ${b.path}`); process.exit(1); }
      console.log(b.kind);
    });'
}

generate() { phoenix run "$MODEL" "$PROMPT" --max-tokens 20 --temperature 0 --quiet; }

say "native platform package"
[ "$(backend_of)" = native ] || die "info does not report the native backend"
native_text="$(generate)"
[ -n "$native_text" ] || die "the native backend generated no text"
say "native: $native_text"

say "every .node file removed: the WASM fallback"
find "$app/node_modules" -name '*.node' -type f -delete
[ -z "$(find "$app/node_modules" -name '*.node' -print -quit)" ] || die ".node files remain"
[ "$(backend_of)" = wasm ] || die "info does not report the WASM backend"
wasm_text="$(generate)"
say "wasm:   $wasm_text"
[ "$native_text" = "$wasm_text" ] || die "native and WASM greedy texts differ"
# The bundled models dir lies inside node_modules: its checksums go to the user's cache, not the package.
[ ! -e "$pkg/models/.phoenix-manifest.json" ] || die "a manifest was written into the installed package"
[ -n "$(find "$work/cache/phoenix-local" -name 'manifest-*.json' -print -quit 2>/dev/null)" ] || die "no manifest in \$XDG_CACHE_HOME/phoenix-local"
say "ok: installed package runs on native and WASM with the same greedy text"
