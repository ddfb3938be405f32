/**
 * The `queue` option is checked when the pipeline is built, before anything is loaded or contacted: an
 * option that does nothing (the old `attempts`) or a bad value is `E_INVALID_OPTION` naming the field.
 */
import { describe, expect, it } from 'vitest';

import { LocalAIPipeline } from '../ts/pipeline/pipeline.js';
import type { QueueClientOptions } from '../ts/pipeline/cluster/options.js';
import { expectCode } from './helpers.js';

const build = (queue: unknown) => () => new LocalAIPipeline({ modelsDir: '/nonexistent', queue: queue as QueueClientOptions });

describe('LocalAIPipeline({ queue })', () => {
  it('refuses options that do not exist, `attempts` included', async () => {
    const error = await expectCode(build({ redis: 'redis://127.0.0.1:6379', attempts: 5 }), 'E_INVALID_OPTION');
    expect(error.message).toMatch(/queue\.attempts/);
  });

  it.each([
    ['redis', { redis: 'http://127.0.0.1:6379' }],
    ['redis', { redis: 'not a url' }],
    ['redis', {}],
    ['name', { redis: 'redis://h:1', name: 'a:b' }],
    ['name', { redis: 'redis://h:1', name: '' }],
    ['maxQueueSize', { redis: 'redis://h:1', maxQueueSize: -1 }],
    ['maxQueueSize', { redis: 'redis://h:1', maxQueueSize: 1.5 }],
  ])('refuses a bad queue.%s', async (field, queue) => {
    const error = await expectCode(build(queue), 'E_INVALID_OPTION');
    expect(error.message).toContain(`queue.${field}`);
  });

  it('accepts a well-formed queue without contacting it', () => {
    build({ redis: 'redis://127.0.0.1:1', name: 'phoenix', maxQueueSize: 8 })().dispose();
  });
});
