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
