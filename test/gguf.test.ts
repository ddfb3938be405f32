/**
 * GGUF files in the model manager: a `.gguf` loose in the models dir or alone in a folder is a model,
 * `loadModelAt(path-to.gguf)` loads it, its metadata come from the header (no tensors read), and its
 * checksum is the file's sha256 as for any single weight file.
 */
import { createHash } from 'node:crypto';
import { copyFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { loadBinding } from '../ts/binding/load.js';
import { defaultEngines } from '../ts/engines/default-engines.js';
import { LocalModelManager } from '../ts/models/manager.js';
import { ROOT, TEST_BACKENDS, expectCode, requireBackend, requireNativeAddon, tempDir } from './helpers.js';

const GGUF = path.join(ROOT, 'test/fixtures/gguf-mamba1-tiny/mamba1-tiny.f32.gguf');
const LLAMA_GGUF = path.join(ROOT, 'test/fixtures/gguf-llama-tiny/llama-tiny.f16.gguf');
const TOKENIZER = path.join(ROOT, 'test/fixtures/mamba1-tiny/tokenizer.json');

let scratch: Awaited<ReturnType<typeof tempDir>>;
let modelsDir: string;

beforeAll(async () => {
  requireNativeAddon();
  scratch = await tempDir();
  modelsDir = path.join(scratch.dir, 'models');
  await mkdir(path.join(modelsDir, 'in-a-folder'), { recursive: true });
  await copyFile(GGUF, path.join(modelsDir, 'in-a-folder', 'model.gguf'));
  await copyFile(TOKENIZER, path.join(modelsDir, 'in-a-folder', 'tokenizer.json'));
  await copyFile(LLAMA_GGUF, path.join(modelsDir, 'loose.f16.gguf'));
});

afterAll(async () => scratch?.cleanup());

function manager(): LocalModelManager {
  return new LocalModelManager({ modelsDir, engines: defaultEngines(), measurePerformance: false });
}

const sha256 = async (file: string) => createHash('sha256').update(await readFile(file)).digest('hex');

describe('GGUF models in the manager', () => {
  it('lists a loose .gguf and a folder holding one, with header metadata and the file checksum', async () => {
    const models = await manager().listModels();
    expect(models.map((m) => m.name)).toEqual(['in-a-folder', 'loose.f16.gguf']);
    const [folder, loose] = models;
    expect(folder).toMatchObject({ format: 'gguf', family: 'mamba', modelType: 'mamba', status: 'available', hasTokenizer: true });
    expect(folder?.weightFiles.map((f) => f.name)).toEqual(['model.gguf']);
    expect(folder?.checksum).toBe(await sha256(GGUF));
    expect(folder?.gguf).toMatchObject({ architecture: 'mamba', quantization: 'F32', vocabSize: 512, hiddenSize: 64, numLayers: 3 });
    expect(loose).toMatchObject({ format: 'gguf', family: 'llama', engine: 'transformer', status: 'available' });
    expect(loose?.path).toBe(path.join(modelsDir, 'loose.f16.gguf'));
    expect(loose?.weightFiles.map((f) => f.name)).toEqual(['loose.f16.gguf']);
    expect(loose?.checksum).toBe(await sha256(LLAMA_GGUF));
    expect(loose?.gguf).toMatchObject({ architecture: 'llama', quantization: 'F16', contextLength: 256, tensorTypes: { F16: 23, F32: 7 } });
  });

  it('loadModelAt(path-to.gguf) loads it and runs it', async () => {
    const m = manager();
    const model = await m.loadModelAt(path.join(modelsDir, 'in-a-folder', 'model.gguf'));
    expect(model.info).toMatchObject({ format: 'gguf', family: 'mamba', vocabSize: 512 });
    const ids = await model.tokenize('hello world');
    expect(ids.length).toBeGreaterThan(0);
    // Its header has no template: the error names the header, not files a GGUF does not have.
    expect(model.info.hasChatTemplate).toBe(false);
    const chat = await expectCode(m.engineFor(model).chat!(model, [{ role: 'user', content: 'hi' }]), 'E_INVALID_OPTION');
    expect(chat.message).toContain('no chat template (no tokenizer.chat_template in its GGUF header)');
    m.dispose();
  });

  it('a GGUF without a tokenizer.json beside it tokenizes with the vocabulary in its header, as its source folder does', async () => {
    const m = manager();
    const gguf = await m.loadModel('loose.f16.gguf');
    const hf = await m.loadModelAt(path.join(ROOT, 'test/fixtures/llama-tiny'));
    expect(gguf.info.hasTokenizer).toBe(true);
    for (const text of ['hello world', ' Two  spaces, digits 12345 and ünïcode!', 'line\nbreak\ttab']) {
      const ids = await gguf.tokenize(text);
      expect(ids.length).toBeGreaterThan(0);
      expect(ids).toEqual(await hf.tokenize(text));
      expect(gguf.detokenize(ids)).toBe(hf.detokenize(ids));
    }
    expect(gguf.info.eosTokenIds).toEqual(expect.arrayContaining(hf.info.eosTokenIds));
    m.dispose();
  });
});

describe.each(TEST_BACKENDS)('files beside a GGUF on the %s binding', (backend) => {
  it('are its own only when no other .gguf shares the folder (loose GGUFs in a models dir read nothing beside them)', async () => {
    requireBackend(backend);
    const { binding } = await loadBinding({ backend });
    const dir = path.join(scratch.dir, `shared-${backend}`);
    await mkdir(dir, { recursive: true });
    await copyFile(LLAMA_GGUF, path.join(dir, 'a.gguf'));
    await copyFile(LLAMA_GGUF, path.join(dir, 'b.gguf'));
    const header = await binding.loadModel(LLAMA_GGUF);
    const text = 'hello world, ünïcode 12345';
    const headerIds = await header.tokenize(text, true);
    // A stray HF tokenizer (a vocabulary whose ids for this text's first two tokens are swapped) and
    // a chat template, lying in the models dir.
    const stray = JSON.parse(await readFile(TOKENIZER, 'utf8')) as { model: { vocab: Record<string, number> } };
    const [a, b] = [headerIds[0], headerIds.find((id) => id !== headerIds[0])];
    for (const [token, id] of Object.entries(stray.model.vocab)) {
      if (id === a) stray.model.vocab[token] = b as number;
      else if (id === b) stray.model.vocab[token] = a as number;
    }
    await writeFile(path.join(dir, 'tokenizer.json'), JSON.stringify(stray));
    await writeFile(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ chat_template: '{% for m in messages %}{{ m.content }}{% endfor %}' }));

    const shared = await binding.loadModel(path.join(dir, 'a.gguf'));
    expect(shared.info().hasChatTemplate).toBe(false);
    expect(await shared.tokenize(text, true)).toEqual(headerIds);
    expect((await binding.describeModel(path.join(dir, 'a.gguf'))).sideFiles).toEqual([]);
    shared.dispose();

    // Alone in its folder, the folder is the model's: the tokenizer and template beside it count.
    await rm(path.join(dir, 'b.gguf'));
    const alone = await binding.loadModel(path.join(dir, 'a.gguf'));
    expect(alone.info().hasChatTemplate).toBe(true);
    expect(await alone.tokenize(text, true)).not.toEqual(headerIds);
    expect((await binding.describeModel(path.join(dir, 'a.gguf'))).sideFiles).toContain('tokenizer.json');
    alone.dispose();
    header.dispose();
  });
});
