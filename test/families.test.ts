/**
 * Engine routing across the core's families: the default engines (one per engine kind the core
 * reports), which engine the manager picks through `canLoad`, and the options every family shares.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { loadBinding } from '../ts/binding/load.js';
import { defaultEngines } from '../ts/engines/default-engines.js';
import { MambaSSMEngine } from '../ts/engines/mamba-engine.js';
import { TransformerEngine } from '../ts/engines/transformer-engine.js';
import { LocalModelManager } from '../ts/models/manager.js';
import type { ModelMetadata } from '../ts/models/metadata.js';
import { TEST_BACKENDS, TINY, expectCode, requireBackend, tempModelsDir } from './helpers.js';

const meta = (engine: ModelMetadata['engine']): ModelMetadata =>
  ({ name: 'm', path: '/nowhere', modelType: 'x', format: 'hf-safetensors', engine }) as unknown as ModelMetadata;

describe('engine kinds', () => {
  it('the transformer engine takes transformer models only; the SSM engine takes SSMs and hybrids', () => {
    const [ssm, transformer] = [new MambaSSMEngine(), new TransformerEngine()];
    expect([ssm.canLoad(meta('ssm')), ssm.canLoad(meta('hybrid')), ssm.canLoad(meta('transformer'))]).toEqual([true, true, false]);
    expect([transformer.canLoad(meta('ssm')), transformer.canLoad(meta('hybrid')), transformer.canLoad(meta('transformer'))]).toEqual([false, false, true]);
    expect(ssm.canLoad(meta(undefined)) || transformer.canLoad(meta(undefined))).toBe(false);
  });

  it('the default engines cover every engine kind the core reports', async () => {
    const { binding } = await loadBinding({ backend: 'native' });
    const engines = defaultEngines();
    for (const family of binding.supportedFamilies()) {
      const takers = engines.filter((e) => e.canLoad(meta(family.engine)));
      expect(takers.length, `${family.name} (${family.engine})`).toBe(1);
    }
  });
});

describe.each(TEST_BACKENDS)('on the %s binding', (backend) => {
  let models: Awaited<ReturnType<typeof tempModelsDir>>;
  let manager: LocalModelManager;

  beforeAll(async () => {
    requireBackend(backend);
    models = await tempModelsDir({ 'mamba1-tiny': TINY });
    const binding = loadBinding({ backend });
    manager = new LocalModelManager({ modelsDir: models.modelsDir, engines: defaultEngines({ binding }) });
  });
  afterAll(async () => {
    await manager?.unloadModel("mamba1-tiny").catch(() => undefined);
    await models?.cleanup();
  });

  it('the manager loads each model with the engine of its kind', async () => {
    const model = await manager.loadModel('mamba1-tiny');
    expect(model.engine).toBe('mamba-ssm');
    expect(model.info.engine).toBe('ssm');
    expect(model.info.contextLength).toBeNull();
  });

  it('fitToContext must be a boolean', async () => {
    const model = await manager.loadModel('mamba1-tiny');
    const engine = manager.engines.find((e) => e.name === model.engine) as MambaSSMEngine;
    await expectCode(engine.predict(model, { ids: [0, 1] }, { maxTokens: 2, fitToContext: 'yes' as unknown as boolean }), 'E_INVALID_OPTION');
    const r = await engine.predict(model, { ids: [0, 1] }, { maxTokens: 3, fitToContext: true });
    expect(r.generatedTokens).toBe(3); // no context limit on an SSM: nothing to cut
  });
});
