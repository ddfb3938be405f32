#!/usr/bin/env node
/**
 * Smoke check of the browser entry (wasm/browser.js over the `--target web` glue), run in Node with
 * `fetch` answering file: URLs from disk (Node's own fetch refuses them); a real browser run is the
 * demo's end-to-end test. Checks greedy text against the model's reference.json and that a trap
 * re-instantiates the module.
 *   node crates/wasm/smoke-web.mjs [model folder]
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const dir = path.resolve(process.argv[2] ?? path.join(ROOT, 'models/phoenix-ssm-lite'));

const nodeFetch = globalThis.fetch;
globalThis.fetch = async (input) => {
  const url = new URL(input instanceof Request ? input.url : String(input));
  if (url.protocol !== 'file:') return nodeFetch(input);
  try {
    const body = await readFile(fileURLToPath(url));
    const type = url.pathname.endsWith('.wasm') ? 'application/wasm' : 'application/octet-stream';
    return new Response(body, { status: 200, headers: { 'content-type': type } });
  } catch {
    return new Response(null, { status: 404 });
  }
};

const web = await import(pathToFileURL(path.join(ROOT, 'wasm/browser.js')).href);
await web.ready();
console.log('buildInfo', web.buildInfo());
const model = await web.loadModel(pathToFileURL(dir).href);
const reference = JSON.parse(await readFile(path.join(dir, 'reference.json'), 'utf8'));
const gen = model.generate({ text: reference.prompt }, { maxTokens: reference.greedy_new_ids.length, temperature: 0 });
let text = '';
for (let step = await gen.next(); step; step = await gen.next()) text += step.text;
const failures = [];
const check = (ok, what) => {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
  if (!ok) failures.push(what);
};
check(text === reference.greedy_text, `web greedy text = reference (${JSON.stringify(text)})`);
// A core panic (see smoke.mjs): caught (unwind build) or a trap that forces a fresh instance (abort build).
const panic = await model.logits(new Array(3_000_000).fill(1)).then(() => 'no error', (e) => e.message);
check(/^\[E_INTERNAL\].*capacity overflow/.test(panic), `a panic is [E_INTERNAL] with its message`);
const unwound = panic.includes('(caught panic)');
const again = unwound ? model : await web.loadModel(pathToFileURL(dir).href);
check(
  (await again.logits([0, 1])).length === 2 * again.info().vocabSize && web.instances() === (unwound ? 1 : 2),
  unwound ? 'the model still works after the caught panic' : 'the next loadModel runs on a fresh instance',
);
process.exit(failures.length ? 1 : 0);
