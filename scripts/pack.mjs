#!/usr/bin/env node
// `npm run pack -- <dir>`: writes every tarball users install into <dir> — the main package
// (phoenix-local: JS, types, CLI, the WASM fallback, the bundled model) and one package per native
// platform (npm/<platform>, napi-rs convention: its `.node` file as main, os/cpu/libc fields), which
// the packed main package lists as optionalDependencies (scripts/pack-manifest.mjs).
//
// It rebuilds the TypeScript itself (seconds; a clean dist/ so no stale file ships). The native addon
// (`npm run build:native`) and the WASM build (`npm run build:wasm`) take minutes, so it refuses,
// naming the command to run, when one is missing, rather than building them. It packs what is built.
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { platformPackages, publishedManifest } from './pack-manifest.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

function die(message) {
  process.stderr.write(`[pack] error: ${message}\n`);
  process.exit(1);
}
const say = (message) => process.stderr.write(`[pack] ${message}\n`);
const readJson = (file) => JSON.parse(readFileSync(file, 'utf8'));
const run = (command, args, cwd = ROOT) => execFileSync(command, args, { cwd, stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' });

const outArg = process.argv[2];
if (!outArg) die('usage: npm run pack -- <output dir>');
const outDir = path.resolve(outArg);
mkdirSync(outDir, { recursive: true });

const main = readJson(path.join(ROOT, 'package.json'));
const platforms = platformPackages(ROOT);
let published;
try {
  published = publishedManifest(main, platforms);
} catch (error) {
  die(error.message);
}

// What takes minutes to build must already be there.
for (const file of ['wasm/phoenix-local.js', 'wasm/node-core.js', 'wasm/node-host.js', 'wasm/node-worker.js', 'wasm/node-wire.js', 'wasm/browser.js', 'wasm/node/phoenix_local_core_bg.wasm', 'wasm/web/phoenix_local_core_bg.wasm']) {
  if (!existsSync(path.join(ROOT, file))) die(`${file} is missing: run \`npm run build:wasm\` first`);
}
for (const { manifest } of platforms) {
  if (!existsSync(path.join(ROOT, 'native', manifest.main))) {
    die(`native/${manifest.main} is missing: build it (\`npm run build:native\` on that platform, or \`napi build --target …\`)`);
  }
}

say('building TypeScript into a clean dist/ (no source maps: the package ships no TypeScript sources)');
rmSync(path.join(ROOT, 'dist'), { recursive: true, force: true });
run('npm', ['run', '--silent', 'build:ts', '--', '--sourceMap', 'false']);

// Each platform package ships the addon built into native/. (Not `napi artifacts`: v3 also copies every
// addon into the package root and rewrites the package's main entry, which this package does not want.)
for (const { dir, manifest } of platforms) {
  copyFileSync(path.join(ROOT, 'native', manifest.main), path.join(dir, manifest.main));
}

// The main package is packed from a staging copy of exactly the files its `files` list selects, with
// the published manifest (optionalDependencies added); the checked-in package.json stays as it is.
const [listing] = JSON.parse(run('npm', ['pack', '--dry-run', '--json', '--ignore-scripts']));
const staging = mkdtempSync(path.join(os.tmpdir(), 'phoenix-pack-'));
try {
  for (const { path: file } of listing.files) {
    if (file === 'package.json') continue;
    mkdirSync(path.dirname(path.join(staging, file)), { recursive: true });
    copyFileSync(path.join(ROOT, file), path.join(staging, file));
  }
  writeFileSync(path.join(staging, 'package.json'), `${JSON.stringify(published, null, 2)}\n`);

  const written = [];
  for (const cwd of [staging, ...platforms.map((p) => p.dir)]) {
    const [result] = JSON.parse(run('npm', ['pack', '--json', '--ignore-scripts', '--pack-destination', outDir], cwd));
    written.push(path.join(outDir, result.filename));
    say(`${result.filename}: ${result.entryCount} files, ${(result.size / 1e6).toFixed(1)} MB`);
  }
  process.stdout.write(`${written.join('\n')}\n`);
} finally {
  rmSync(staging, { recursive: true, force: true });
}
