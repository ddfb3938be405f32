/**
 * The browser demo end to end: the demo's own server, real headless Chromium (through playwright-core),
 * the real WASM build and the bundled model. The page must stream exactly the native engine's text,
 * token by token, stay responsive while the worker generates, stop on Stop, and fetch nothing from
 * anywhere but the local server.
 *
 * Skipped (with the reason) when wasm/ or Chromium is absent; PHOENIX_REQUIRE_WASM=1 or
 * PHOENIX_REQUIRE_BROWSER=1 turns that into a failure. Needs dist/ (`npm run build:ts`).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, lstatSync, realpathSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { loadBinding } from '../ts/binding/load.js';
import { MambaSSMEngine } from '../ts/engines/mamba-engine.js';
import { TransformerEngine } from '../ts/engines/transformer-engine.js';
import type { GenerationOptions, LoadedModel } from '../ts/engines/types.js';
import { LocalModelManager } from '../ts/models/manager.js';
import { LITE, MODELS_DIR, ROOT, requireNativeAddon, tempDir } from './helpers.js';

const CHROMIUM = process.env.PHOENIX_CHROMIUM ?? '/usr/bin/chromium';
const WASM_ENTRY = path.join(ROOT, 'wasm/browser.js');
const missing = [
  ...(existsSync(WASM_ENTRY) ? [] : [`no WASM build at ${WASM_ENTRY} (npm run build:wasm)`]),
  ...(existsSync(CHROMIUM) ? [] : [`no Chromium at ${CHROMIUM} (apt-get install chromium, or set PHOENIX_CHROMIUM)`]),
];
const required = process.env.PHOENIX_REQUIRE_WASM === '1' || process.env.PHOENIX_REQUIRE_BROWSER === '1';
const skip = missing.length > 0 && !required;
if (skip) console.warn(`web-demo.test.ts skipped: ${missing.join('; ')}`);

const PROMPT = 'Once upon a time, there was a little';
const SAMPLED = { maxTokens: 24, temperature: 0.8, seed: 7 } satisfies GenerationOptions;
const GREEDY = { maxTokens: 16, temperature: 0 } satisfies GenerationOptions;
const LONG = { maxTokens: 10_000, temperature: 3, seed: 11 } satisfies GenerationOptions;
/** The real instruct model (`npm run models:fetch`); its test is skipped when it is absent. */
const SMOLLM2_NAMED = path.join(MODELS_DIR, 'SmolLM2-135M-Instruct.Q4_1.gguf');
/** Where the file really is (a checkout may link it from a shared cache; the loader refuses links out of a folder). */
const SMOLLM2 = existsSync(SMOLLM2_NAMED) ? realpathSync(SMOLLM2_NAMED) : SMOLLM2_NAMED;
/** Whether the demo server can serve it (a regular file in models/, not a link to elsewhere). */
const SMOLLM2_SERVED = existsSync(SMOLLM2_NAMED) && lstatSync(SMOLLM2_NAMED).isFile();
if (!SMOLLM2_SERVED) console.warn(`web-demo.test.ts: the .gguf-by-URL check is skipped: ${SMOLLM2_NAMED} is absent or a link (npm run models:fetch)`);
const QUESTION = 'What is the capital of France?';
const CHAT = { maxTokens: 16, temperature: 0 } satisfies GenerationOptions;

/** Starts `tsx demo/web/serve.ts --port 0` and reads the URL from its first stdout line. */
async function startServer(): Promise<{ url: string; child: ChildProcess }> {
  const tsx = path.join(ROOT, 'node_modules/tsx/dist/cli.mjs');
  const child = spawn(process.execPath, [tsx, 'demo/web/serve.ts', '--port', '0'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
  const first = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`demo server printed no URL within 20 s; stderr: ${stderr}`)), 20_000);
    lines.once('line', (line) => (clearTimeout(timer), resolve(line)));
    child.once('exit', (code) => (clearTimeout(timer), reject(new Error(`demo server exited with ${code}; stderr: ${stderr}`))));
  });
  const match = /^phoenix-local web demo: (http:\/\/127\.0\.0\.1:\d+\/)$/.exec(first);
  if (!match?.[1]) throw new Error(`unexpected first line from the demo server: ${JSON.stringify(first)}`);
  return { url: match[1], child };
}

/** Fills the form and clicks Generate (the bundled model is chosen; the worker loads it on demand). */
async function generate(page: Page, options: { maxTokens: number; temperature: number; seed: number }): Promise<void> {
  await page.check('#model-default');
  await page.fill('#prompt', PROMPT);
  await page.fill('#max-tokens', String(options.maxTokens));
  await page.fill('#temperature', String(options.temperature));
  await page.fill('#seed', String(options.seed));
  await page.click('#generate');
}

async function waitSettled(page: Page): Promise<void> {
  await page.waitForSelector('body[data-state="done"], body[data-state="error"]', { timeout: 60_000 });
  const state = await page.getAttribute('body', 'data-state');
  if (state !== 'done') throw new Error(`the demo ended in state ${state}: ${await page.textContent('#status')}`);
}

/** The first number in an element's text (e.g. "325.2 tokens/s" → 325.2). */
async function numberIn(page: Page, selector: string): Promise<number> {
  const text = (await page.textContent(selector)) ?? '';
  return Number(/[\d.]+/.exec(text)?.[0] ?? Number.NaN);
}

describe.skipIf(skip)(`web demo in headless Chromium${skip ? ` (skipped: ${missing.join('; ')})` : ''}`, () => {
  let server: { url: string; child: ChildProcess };
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  const requests: string[] = [];
  const pageErrors: string[] = [];
  let scratch: Awaited<ReturnType<typeof tempDir>>;
  let native: { engine: MambaSSMEngine; model: LoadedModel };

  beforeAll(async () => {
    if (missing.length > 0) throw new Error(`PHOENIX_REQUIRE_WASM/PHOENIX_REQUIRE_BROWSER is set but: ${missing.join('; ')}`);
    requireNativeAddon();
    if (!existsSync(path.join(ROOT, 'dist/browser.js'))) throw new Error('dist/browser.js missing: run `npm run build:ts` first');
    scratch = await tempDir();
    const engine = new MambaSSMEngine({ binding: await loadBinding({ backend: 'native' }) });
    const manager = new LocalModelManager({ modelsDir: scratch.dir, engines: [engine], measurePerformance: false });
    native = { engine, model: await engine.loadModel(await manager.getModelMetadataAt(LITE)) };

    server = await startServer();
    // The default launch uses a fresh, throw-away profile.
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-background-networking'] });
    context = await browser.newContext();
    // Context-level: also sees the Web Worker's fetches (the WASM module, the model files).
    context.on('request', (request) => requests.push(request.url()));
    page = await context.newPage();
    page.on('pageerror', (error) => pageErrors.push(error.message));
    await page.goto(server.url);
    await page.waitForSelector('body[data-state="ready"], body[data-state="error"]', { timeout: 30_000 });
  });

  afterAll(async () => {
    await browser?.close();
    server?.child.kill('SIGTERM');
    native?.model.dispose();
    await scratch?.cleanup();
  });

  it('starts the WASM binding in the worker and shows its build facts', async () => {
    expect(await page.getAttribute('body', 'data-state'), (await page.textContent('#status')) ?? '').toBe('ready');
    const backend = await page.textContent('#backend');
    expect(backend).toMatch(/^backend: wasm · simd128 · core \d+\.\d+\.\d+/);
  });

  it('streams, token by token, exactly the text the native engine generates (seeded sampling)', async () => {
    const expected = await native.engine.predict(native.model, PROMPT, SAMPLED);
    // Record every change of the output element, as a person watching it would see them.
    await page.evaluate(() => {
      const output = document.getElementById('output') as HTMLElement;
      const seen: string[] = [];
      (window as unknown as { seen: string[] }).seen = seen;
      new MutationObserver(() => seen.push(output.textContent ?? '')).observe(output, { childList: true, characterData: true, subtree: true });
    });
    await generate(page, SAMPLED);
    await waitSettled(page);

    expect(await page.textContent('#output')).toBe(expected.text);
    expect(await page.textContent('#finish-reason')).toBe(expected.finishReason);
    const seen = await page.evaluate(() => (window as unknown as { seen: string[] }).seen.filter((text) => text !== ''));
    expect(seen.length, 'streaming updates before completion').toBeGreaterThan(1);
    seen.forEach((text, i) => {
      if (i > 0) expect(text.startsWith(seen[i - 1] as string), 'each update extends the previous one').toBe(true);
    });
    expect(seen.at(-1)).toBe(expected.text);

    expect(await numberIn(page, '#decode-tps')).toBeGreaterThan(0);
    expect(await numberIn(page, '#prefill-tps')).toBeGreaterThan(0);
    expect(await numberIn(page, '#load-time')).toBeGreaterThan(0);
    expect(await page.textContent('#token-count')).toBe(`${expected.generatedTokens} generated, ${expected.promptTokens} prompt`);
  });

  it('stays responsive while the worker generates, and Stop aborts the generation', async () => {
    // EOS always ends a generation; at temperature 3 this seed runs ~10 800 tokens before one
    // (seeded, so the same on every machine): seconds of work to probe and to stop.
    await generate(page, LONG);
    await page.waitForFunction(() => Number(document.getElementById('token-count')?.textContent) >= 3, undefined, { timeout: 30_000 });
    expect(await page.getAttribute('body', 'data-state')).toBe('generating');

    // The page's own timer keeps ticking and the page answers at once, mid-generation.
    const beatsBefore = Number(await page.getAttribute('#heartbeat', 'data-beats'));
    const answers: number[] = [];
    for (let i = 0; i < 5; i++) {
      const started = performance.now();
      await page.evaluate(() => document.body.dataset.state);
      answers.push(performance.now() - started);
      await page.waitForTimeout(100);
    }
    const beatsAfter = Number(await page.getAttribute('#heartbeat', 'data-beats'));
    const tokensBeforeStop = Number(await page.textContent('#token-count'));
    expect(await page.getAttribute('body', 'data-state'), 'still generating during the checks').toBe('generating');
    expect(beatsAfter - beatsBefore, 'page timer ticks (every 50 ms) during ~500 ms of generation').toBeGreaterThanOrEqual(4);
    expect(Math.max(...answers), `page.evaluate round trips ${answers.map((a) => a.toFixed(0)).join(', ')} ms`).toBeLessThan(250);
    expect(await numberIn(page, '#decode-tps'), 'live decode rate while streaming').toBeGreaterThan(0);

    await page.click('#stop');
    await waitSettled(page);
    expect(await page.textContent('#finish-reason')).toBe('abort');
    const generated = await numberIn(page, '#token-count');
    expect(generated).toBeGreaterThanOrEqual(tokensBeforeStop);
    expect(generated).toBeLessThan(LONG.maxTokens);
  });

  it('loads a picked model folder through the reader form, reading only the files the core needs', async () => {
    const expected = await native.engine.predict(native.model, PROMPT, GREEDY);
    // The bundled folder also holds README.md, reference.json, …: none of them may be read.
    await page.setInputFiles('#folder-input', LITE);
    expect(await page.isChecked('#model-folder'), 'picking a folder selects it').toBe(true);
    await page.fill('#prompt', PROMPT);
    await page.fill('#max-tokens', String(GREEDY.maxTokens));
    await page.fill('#temperature', String(GREEDY.temperature));
    await page.click('#generate');
    await waitSettled(page);

    expect(await page.textContent('#output')).toBe(expected.text);
    expect(await page.textContent('#model-info')).toMatch(/^phoenix-ssm-lite: mamba/);
    const read = ((await page.textContent('#files-read')) ?? '').split(', ').map((entry) => entry.replace(/ \(.*\)$/, ''));
    expect(read).toEqual(expect.arrayContaining(['config.json', 'tokenizer.json', 'model.safetensors']));
    for (const unneeded of ['README.md', 'reference.json']) expect(read).not.toContain(unneeded);
    expect(new Set(read).size, 'each file read once').toBe(read.length);
  });

  it.runIf(existsSync(SMOLLM2))('a picked .gguf file is a whole model: it loads, and chat answers as the WASM engine in Node does', async () => {
    // The browser runs the WASM build: its greedy reply is WASM's (test/wasm-gguf.test.ts relates
    // that to native's). The model is described and loaded by path here, from the picked file there.
    const engine = new TransformerEngine({ binding: await loadBinding({ backend: 'wasm' }) });
    const manager = new LocalModelManager({ modelsDir: scratch.dir, engines: [engine], measurePerformance: false });
    const model = await engine.loadModel(await manager.getModelMetadataAt(SMOLLM2));
    const expected = await engine.chat(model, [{ role: 'user', content: QUESTION }], CHAT);
    model.dispose();

    await page.setInputFiles('#gguf-input', SMOLLM2);
    expect(await page.isChecked('#model-file'), 'picking a file selects it').toBe(true);
    await page.fill('#prompt', QUESTION);
    await page.fill('#max-tokens', String(CHAT.maxTokens));
    await page.fill('#temperature', String(CHAT.temperature));
    await page.check('#chat');
    await page.click('#generate');
    await waitSettled(page);

    expect(expected.generatedTokens).toBeGreaterThan(0);
    expect(await page.textContent('#output')).toBe(expected.text);
    expect(await page.textContent('#model-info')).toMatch(/^SmolLM2-135M-Instruct\.Q4_1\.gguf: llama, .* gguf Q4_1, /);
    // The load reads the one file (the tokenizer and chat template come from its header).
    expect(((await page.textContent('#files-read')) ?? '').split(', ').map((entry) => entry.replace(/ \(.*\)$/, ''))).toEqual([path.basename(SMOLLM2)]);
    await page.uncheck('#chat');
  });

  // The demo server refuses links out of its folders: a checkout whose models/ links the file from a cache skips this.
  it.runIf(SMOLLM2_SERVED)('a URL to a .gguf file is a model (modelFromUrl): described from its header, loaded, generating as WASM in Node', async () => {
    const engine = new TransformerEngine({ binding: await loadBinding({ backend: 'wasm' }) });
    const manager = new LocalModelManager({ modelsDir: scratch.dir, engines: [engine], measurePerformance: false });
    const model = await engine.loadModel(await manager.getModelMetadataAt(SMOLLM2));
    const expected = await engine.predict(model, PROMPT, GREEDY);
    model.dispose();

    const url = new URL(`/models/${path.basename(SMOLLM2_NAMED)}`, server.url).href;
    // A string, not a function: vitest would rewrite a function's `import()` for Node.
    const got = await page.evaluate(`(async () => {
      const lib = await import('/dist/browser.js');
      const metadata = await lib.modelFromUrl(${JSON.stringify(url)});
      const engine = lib.defaultEngines({ binding: lib.loadWasmBinding() }).find((e) => e.canLoad(metadata));
      const loaded = await engine.loadModel(metadata);
      const result = await engine.predict(loaded, ${JSON.stringify(PROMPT)}, ${JSON.stringify(GREEDY)});
      loaded.dispose();
      return { name: metadata.name, format: metadata.format, quantization: metadata.gguf?.quantization, weightFiles: metadata.weightFiles.map((f) => f.name), text: result.text };
    })()`);
    expect(got).toEqual({ name: path.basename(SMOLLM2_NAMED), format: 'gguf', quantization: 'Q4_1', weightFiles: [path.basename(SMOLLM2_NAMED)], text: expected.text });
  });

  it('a malformed model URL is a typed error (E_INVALID_OPTION), not the URL constructor\'s TypeError', async () => {
    const got = await page.evaluate(`(async () => {
      const lib = await import('/dist/browser.js');
      try {
        await lib.modelFromUrl('http://[::1');
        return 'loaded';
      } catch (error) {
        return { typed: error instanceof lib.PhoenixError, code: error.code, message: error.message };
      }
    })()`);
    expect(got).toMatchObject({ typed: true, code: 'E_INVALID_OPTION', message: expect.stringContaining('"http://[::1" is not a URL') });
  });

  it('serves the demo folders only, read-only, with their MIME types', async () => {
    const get = (pathname: string, method = 'GET'): Promise<Response> => fetch(new URL(pathname, server.url), { method, redirect: 'manual' });
    expect((await get('/')).headers.get('location')).toBe('/demo/web/');
    for (const [pathname, type] of [
      ['/demo/web/', 'text/html; charset=utf-8'],
      ['/dist/browser.js', 'text/javascript; charset=utf-8'],
      ['/wasm/web/phoenix_local_core_bg.wasm', 'application/wasm'],
      ['/models/phoenix-ssm-lite/config.json', 'application/json; charset=utf-8'],
    ] as const) {
      const response = await get(pathname, 'HEAD');
      expect([pathname, response.status, response.headers.get('content-type')]).toEqual([pathname, 200, type]);
    }
    for (const pathname of ['/package.json', '/ts/browser.ts', '/models/../package.json', '/models/%2e%2e/package.json', '/models/phoenix-ssm-lite/nope']) {
      const response = await get(pathname);
      expect([pathname, response.ok]).toEqual([pathname, false]);
      expect(await response.text()).not.toContain('"devDependencies"');
    }
    expect((await get('/models/%2e%2e%2fpackage.json')).ok).toBe(false);
    expect((await get('/dist/browser.js', 'POST')).status).toBe(405);
  });

  it('a trap inside WASM in the browser is E_INTERNAL and the next load gets a fresh instance', async () => {
    // On the page's own thread, through the browser entry directly: its re-instantiation path
    // (a re-imported glue module over the cached compiled module) only exists in browsers.
    // A string, not a function: vitest rewrites `import()` inside test functions for Node.
    const outcome = (await page.evaluate(`(async () => {
      const wasm = await import('/wasm/browser.js');
      const messageOf = async (fn) => {
        try {
          await fn();
          return 'no error';
        } catch (error) {
          return error instanceof Error ? error.message : String(error);
        }
      };
      await wasm.ready();
      const first = await wasm.loadModel('/models/phoenix-ssm-lite/');
      const before = Array.from(await first.logits([0, 1, 2]));
      const instancesBefore = wasm.instances();
      const trap = await messageOf(() => wasm.injectFault('trap'));
      const stale = await messageOf(() => first.logits([0]));
      const second = await wasm.loadModel('/models/phoenix-ssm-lite/');
      const after = Array.from(await second.logits([0, 1, 2]));
      return { trap, stale, fresh: wasm.instances() - instancesBefore, same: before.length > 0 && before.every((v, i) => v === after[i]) };
    })()`)) as { trap: string; stale: string; fresh: number; same: boolean };
    expect(outcome.trap).toMatch(/^\[E_INTERNAL\] .*WebAssembly trap/);
    expect(outcome.stale).toMatch(/^\[E_INTERNAL\] .*trapped earlier/);
    expect(outcome.fresh, 'one new instance').toBe(1);
    expect(outcome.same, 'the fresh instance computes the same logits').toBe(true);
  });

  it('fetched nothing but the local server, and no page error occurred', () => {
    const origin = new URL(server.url).origin;
    // The browser entry never pulls in the Node-only loader (node:fs, node:module) when given a binding.
    expect(requests.filter((url) => url.includes('/dist/binding/load.js'))).toEqual([]);
    expect(requests.some((url) => url.endsWith('/wasm/web/phoenix_local_core_bg.wasm')), 'the worker fetched the WASM module').toBe(true);
    expect(requests.some((url) => url.endsWith('/models/phoenix-ssm-lite/model.safetensors')), 'the worker fetched the weights').toBe(true);
    expect(requests.filter((url) => new URL(url).origin !== origin)).toEqual([]);
    expect(pageErrors).toEqual([]);
  });
});
