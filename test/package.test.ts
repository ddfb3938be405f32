/**
 * The installable package: what the tarball holds, that the browser entry's types need no
 * @types/node, and that the loader finds the native addon in its platform package (napi-rs
 * convention). The end-to-end install-and-run check is `scripts/check-package.sh` (CI's package stage).
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';

import { locateNativeAddon, nativePackageName, nativePlatformSuffix } from '../ts/binding/load.js';
import { platformPackages, publishedManifest, type PackageManifest } from '../scripts/pack-manifest.mjs';
import { readJson, ROOT, WASM_BUILT, WASM_REQUIRED } from './helpers.js';

const run = promisify(execFile);

interface PackageJson extends PackageManifest {
  os?: string[];
  cpu?: string[];
}

let tmp: string;
beforeEach(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'phoenix-package-'));
});
afterEach(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('main package tarball', () => {
  it('holds the JS, types, CLI, WASM fallback and bundled model — no sources, tests or dev files', async () => {
    const { stdout } = await run('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: ROOT, maxBuffer: 16 << 20 });
    const files = (JSON.parse(stdout) as [{ files: { path: string }[] }])[0].files.map((f) => f.path);

    for (const needed of ['package.json', 'README.md', 'bin/phoenix-local.js', 'dist/index.js', 'dist/index.d.ts', 'dist/browser.js', 'dist/browser.d.ts', 'dist/cli/main.js']) {
      expect(files).toContain(needed);
    }
    for (const modelFile of ['config.json', 'model.safetensors', 'tokenizer.json']) {
      expect(files).toContain(`models/phoenix-ssm-lite/${modelFile}`);
    }
    if (WASM_BUILT || WASM_REQUIRED) {
      for (const wasmFile of ['wasm/phoenix-local.js', 'wasm/node-core.js', 'wasm/node-host.js', 'wasm/node-worker.js', 'wasm/node-wire.js', 'wasm/binding.js', 'wasm/browser.js', 'wasm/node/package.json', 'wasm/node/phoenix_local_core_bg.wasm', 'wasm/web/phoenix_local_core_bg.wasm']) {
        expect(files).toContain(wasmFile);
      }
    }
    const unwanted = files.filter(
      (f) =>
        /^(ts|test|crates|benches|demo|scripts|native|npm|target|\.ci)\//.test(f) ||
        /\.(map|rs|ts)$/.test(f.replace(/\.d\.ts$/, '')) ||
        f.endsWith('.node') ||
        path.basename(f) === '.phoenix-manifest.json' ||
        f.endsWith('reference.json'),
    );
    expect(unwanted).toEqual([]);
  });

  it('is published with each platform package of npm/ as an optional dependency at its version', async () => {
    const main = await readJson<PackageJson>(path.join(ROOT, 'package.json'));
    // Not in the checked-in manifest: `npm ci` of this repo would fetch them.
    expect(main.optionalDependencies).toBeUndefined();
    const platforms = platformPackages(ROOT);
    const host = platforms.find((p) => p.manifest.name === nativePackageName());
    expect(host, `npm/${nativePlatformSuffix()} (napi create-npm-dirs)`).toBeDefined();
    const platform = host?.manifest as PackageJson;
    expect(platform.version).toBe(main.version);
    expect(platform.main).toBe(`phoenix-local.${nativePlatformSuffix()}.node`);
    expect(platform.os).toEqual([process.platform]);
    expect(platform.cpu).toEqual([process.arch]);
    const published = publishedManifest(main, platforms);
    expect(published.optionalDependencies).toEqual(Object.fromEntries(platforms.map((p) => [p.manifest.name, main.version])));
    expect(() => publishedManifest({ ...main, version: '9.9.9' }, platforms)).toThrow(/napi version/);
    // The repo's scripts name files the tarball lacks (and its prepack guard would refuse a repack).
    expect((published as PackageJson & { scripts?: unknown }).scripts).toBeUndefined();
  });

  it('a plain `npm pack` is refused, naming `npm run pack` (it would ship no native addon)', async () => {
    const plain = await run('npm', ['pack', '--dry-run', '--json'], { cwd: ROOT, maxBuffer: 16 << 20 }).then(
      () => ({ failed: false, stderr: '' }),
      (error: { stderr: string }) => ({ failed: true, stderr: error.stderr }),
    );
    expect(plain.failed).toBe(true);
    expect(plain.stderr).toContain('npm run pack -- <output dir>');
  });
});

describe('native addon lookup', () => {
  async function fakePackage(root: string, withDevBuild: boolean, withPlatformPackage: boolean): Promise<{ dev: string; installed: string }> {
    const addon = `phoenix-local.${nativePlatformSuffix()}.node`;
    await writeFile(path.join(root, 'package.json'), JSON.stringify({ name: 'phoenix-local', version: '0.0.0' }));
    const dev = path.join(root, 'native', addon);
    if (withDevBuild) {
      await mkdir(path.dirname(dev), { recursive: true });
      await writeFile(dev, '');
    }
    // Installed the way npm lays out an optional dependency: a sibling under node_modules.
    const platformDir = path.join(tmp, 'node_modules', nativePackageName());
    const installed = path.join(platformDir, addon);
    if (withPlatformPackage) {
      await mkdir(platformDir, { recursive: true });
      await writeFile(path.join(platformDir, 'package.json'), JSON.stringify({ name: nativePackageName(), version: '0.0.0', main: addon }));
      await writeFile(installed, '');
    }
    return { dev, installed };
  }

  it('finds the addon in the installed platform package when there is no dev build', async () => {
    const root = path.join(tmp, 'node_modules', 'phoenix-local');
    await mkdir(root, { recursive: true });
    const { installed } = await fakePackage(root, false, true);
    expect(locateNativeAddon(root)).toBe(installed);
  });

  it('prefers the dev build in native/; names it when neither exists', async () => {
    const root = path.join(tmp, 'node_modules', 'phoenix-local');
    await mkdir(root, { recursive: true });
    const { dev } = await fakePackage(root, true, true);
    expect(locateNativeAddon(root)).toBe(dev);
    await rm(path.join(tmp, 'node_modules', nativePackageName()), { recursive: true });
    await rm(dev);
    expect(locateNativeAddon(root)).toBe(dev);
  });
});

describe('browser entry types', () => {
  // A page (DOM) and a Web Worker (the recommended place to generate) without @types/node.
  it.each([['DOM'], ['WebWorker']])('compile in a project without @types/node (types: [], %s lib, no skipLibCheck)', async (environmentLib) => {
    await mkdir(path.join(tmp, 'node_modules'), { recursive: true });
    await symlink(ROOT, path.join(tmp, 'node_modules', 'phoenix-local'), 'dir');
    await writeFile(path.join(tmp, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
    await writeFile(
      path.join(tmp, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', lib: ['ES2022', environmentLib], types: [], strict: true, noEmit: true, skipLibCheck: false },
        files: ['main.ts'],
      }),
    );
    await writeFile(
      path.join(tmp, 'main.ts'),
      [
        "import { MambaSSMEngine, PhoenixError, loadWasmBinding, modelFromUrl, type GenerationOptions } from 'phoenix-local/browser';",
        'const engine = new MambaSSMEngine({ binding: await loadWasmBinding() });',
        "using model = await engine.loadModel(await modelFromUrl('/models/phoenix-ssm-lite/'));",
        'const options: GenerationOptions = { maxTokens: 8 };',
        "for await (const chunk of engine.stream(model, 'Once', options)) console.log(chunk.text);",
        'export { PhoenixError };',
        '',
      ].join('\n'),
    );
    const tsc = path.join(ROOT, 'node_modules', '.bin', 'tsc');
    const result = await run(tsc, ['-p', tmp], { cwd: tmp }).then(
      () => '',
      (error: { stdout?: string; message: string }) => error.stdout || error.message,
    );
    expect(result).toBe('');
    // The consumer really did not see @types/node (which would declare `process`).
    await writeFile(path.join(tmp, 'main.ts'), 'export const p = process.env;\n');
    await expect(run(tsc, ['-p', tmp], { cwd: tmp })).rejects.toMatchObject({ stdout: expect.stringContaining('process') });
  });
});
