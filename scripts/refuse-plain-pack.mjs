#!/usr/bin/env node
// npm's `prepack` hook: a plain `npm pack` / `npm publish` of this folder would ship a package
// without its platform packages as optionalDependencies (no native addon: every install silently
// runs on WASM) and with dist/ as last built for development. `npm run pack -- <dir>`
// (scripts/pack.mjs) builds the real tarballs; it packs with --ignore-scripts, so this never runs
// there.
process.stderr.write(
  'phoenix-local: a plain `npm pack` / `npm publish` would ship no native addon (installs would fall back to WASM).\n' +
    'Use `npm run pack -- <output dir>`: it writes the main tarball and one per native platform.\n',
);
process.exit(1);
