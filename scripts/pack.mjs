#!/usr/bin/env node
// `npm run pack -- <dir>`: writes every tarball users install into <dir> — the main package
// (phoenix-local: JS, types, CLI, the WASM fallback, the bundled model) and one package per native
// platform (npm/<platform>, napi-rs convention: its `.node` file as main, os/cpu/libc fields), which
// the main package lists as optionalDependencies.
//
// It rebuilds the TypeScript itself (seconds; a clean dist/ so no stale file ships). The native addon
// (`npm run build:native`) and the WASM build (`npm run build:wasm`) take minutes, so it refuses,
// naming the command to run, when one is missing, rather than building them. It packs what is built.
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const NPM_DIR = path.join(ROOT, 'npm');

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

// The platform packages and the main package's optionalDependencies must name each other at one version.
const platforms = readdirSync(NPM_DIR, { withFileTypes: true })
  .filter((entry) => entry.isDirectory())
  .map((entry) => ({ dir: path.join(NPM_DIR, entry.name), manifest: readJson(path.join(NPM_DIR, entry.name, 'package.json')) }));
const optional = main.optionalDependencies ?? {};
for (const { dir, manifest } of platforms) {
  if (manifest.version !== main.version) die(`${path.relative(ROOT, dir)}/package.json has version ${manifest.version}, the main package ${main.version}: run \`npx napi version\``);
  if (optional[manifest.name] !== main.version) die(`package.json optionalDependencies must list "${manifest.name}": "${main.version}"`);
}
const platformNames = new Set(platforms.map((p) => p.manifest.name));
for (const name of Object.keys(optional)) {
  if (!platformNames.has(name)) die(`optionalDependencies lists ${name}, which has no folder in npm/ (\`npx napi create-npm-dirs\`)`);
}

// What takes minutes to build must already be there.
for (const file of ['wasm/phoenix-local.js', 'wasm/browser.js', 'wasm/node/phoenix_local_core_bg.wasm', 'wasm/web/phoenix_local_core_bg.wasm']) {
  if (!existsSync(path.join(ROOT, file))) die(`${file} is missing: run \`npm run build:wasm\` first`);
}
for (const { manifest } of platforms) {
  if (!existsSync(path.join(ROOT, 'native', manifest.main))) {
    die(`native/${manifest.main} is missing: build it (\`npm run build:native\` on that platform, or \`napi build --target …\`)`);
  }
}

say('building TypeScript into a clean dist/');
rmSync(path.join(ROOT, 'dist'), { recursive: true, force: true });
run('npm', ['run', '--silent', 'build:ts']);

// Each platform package ships the addon built into native/. (Not `napi artifacts`: v3 also copies every
// addon into the package root and rewrites the package's main entry, which this package does not want.)
for (const { dir, manifest } of platforms) {
  copyFileSync(path.join(ROOT, 'native', manifest.main), path.join(dir, manifest.main));
}

const written = [];
for (const cwd of [ROOT, ...platforms.map((p) => p.dir)]) {
  const [result] = JSON.parse(run('npm', ['pack', '--json', '--pack-destination', outDir], cwd));
  written.push(path.join(outDir, result.filename));
  say(`${result.filename}: ${result.entryCount} files, ${(result.size / 1e6).toFixed(1)} MB`);
}
process.stdout.write(`${written.join('\n')}\n`);
