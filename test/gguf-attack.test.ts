// Findings of attacking the GGUF support from outside (the `attack` session): each case is a file or
// path a user or an attacker can hand the library.
import { copyFile, mkdir, mkdtemp, rm, symlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { LocalModelManager, defaultEngines } from '../ts/index.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const fixture = path.join(here, 'fixtures', 'gguf-llama-tiny', 'llama-tiny.f32.gguf');

describe('a .gguf path that is a link to a file elsewhere', () => {
  let tmp: string;
  let link: string;
  let manager: LocalModelManager;

  beforeAll(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'phoenix-gguf-attack-'));
    await mkdir(path.join(tmp, 'elsewhere'));
    await mkdir(path.join(tmp, 'models', 'links'), { recursive: true });
    await copyFile(fixture, path.join(tmp, 'elsewhere', 'tiny.gguf'));
    link = path.join(tmp, 'models', 'links', 'tiny.gguf');
    await symlink(path.join(tmp, 'elsewhere', 'tiny.gguf'), link);
    manager = new LocalModelManager({ modelsDir: path.join(tmp, 'models'), engines: defaultEngines() });
  });

  afterAll(async () => {
    manager.dispose();
    await rm(tmp, { recursive: true, force: true });
  });

  // `phoenix-local run <link>` loaded the model while `phoenix-local info <link>` called it
  // E_BAD_WEIGHTS ("resolves outside the model folder"): the two must describe the same model.
  it('is described as the model that loading it gives', async () => {
    const model = await manager.loadModelAt(link);
    const metadata = await manager.getModelMetadataAt(link);
    expect(metadata.error).toBeUndefined();
    expect(metadata.status).not.toBe('error');
    expect(metadata.name).toBe('tiny.gguf');
    expect(metadata.format).toBe('gguf');
    expect(metadata.modelType).toBe(model.metadata.modelType);
    expect(metadata.checksum).toBe(model.metadata.checksum);
  });
});

// `huggingface-cli download` leaves `snapshots/<rev>/model.gguf` as a link to `blobs/<hash>`:
// `phoenix-local run|info <snapshot>/model.gguf` said E_MODEL_NOT_FOUND "<blob> is not a folder" (the
// link was resolved first, losing the .gguf name), then the core refused the file as outside its folder.
describe('a .gguf path into a Hugging Face cache snapshot', () => {
  let tmp: string;
  let model: string;
  let manager: LocalModelManager;

  beforeAll(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'phoenix-gguf-hf-'));
    const repo = path.join(tmp, 'hub', 'models--org--tiny');
    await mkdir(path.join(repo, 'blobs'), { recursive: true });
    await mkdir(path.join(repo, 'snapshots', '0123abcd'), { recursive: true });
    await copyFile(fixture, path.join(repo, 'blobs', '6f52edf15a16'));
    model = path.join(repo, 'snapshots', '0123abcd', 'tiny.f32.gguf');
    await symlink('../../blobs/6f52edf15a16', model);
    manager = new LocalModelManager({ modelsDir: path.join(tmp, 'models'), engines: defaultEngines() });
  });

  afterAll(async () => {
    manager.dispose();
    await rm(tmp, { recursive: true, force: true });
  });

  it('is described and loaded as the GGUF model it links to', async () => {
    const metadata = await manager.getModelMetadataAt(model);
    expect(metadata.error).toBeUndefined();
    expect(metadata.format).toBe('gguf');
    expect(metadata.name).toBe('tiny.f32.gguf');
    const loaded = await manager.loadModelAt(model);
    expect(loaded.metadata.modelType).toBe('llama');
    expect(loaded.metadata.checksum).toBe(metadata.checksum);
  });
});
