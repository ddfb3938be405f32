/**
 * EnergyMeter: RAPL counters (read from a powercap tree laid out like the kernel's, including a
 * counter wrap) and the CPU-time estimate.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { EnergyMeter, counterDeltaUj } from '../ts/pipeline/energy.js';
import { tempDir } from './helpers.js';

let scratch: Awaited<ReturnType<typeof tempDir>>;

async function zone(root: string, name: string, energyUj: number, maxUj: number): Promise<string> {
  const dir = path.join(root, name);
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, 'energy_uj'), `${energyUj}\n`);
  await writeFile(path.join(dir, 'max_energy_range_uj'), `${maxUj}\n`);
  return path.join(dir, 'energy_uj');
}

beforeAll(async () => {
  scratch = await tempDir();
});
afterAll(async () => scratch?.cleanup());

describe('EnergyMeter', () => {
  it('sums top-level RAPL packages (not sub-zones) and handles a counter wrap', async () => {
    const root = path.join(scratch.dir, 'powercap');
    const pkg0 = await zone(root, 'intel-rapl:0', 999_000_000, 1_000_000_000);
    const pkg1 = await zone(root, 'intel-rapl:1', 5_000_000, 1_000_000_000);
    await zone(root, 'intel-rapl:0:0', 123, 1_000_000_000); // core sub-zone: already inside package 0
    const meter = new EnergyMeter({ powercapRoot: root });
    expect(meter.source).toBe('rapl');
    const measurement = meter.start();
    await writeFile(pkg0, '2000000\n'); // wrapped: 1 J to the wrap + 2 J after it
    await writeFile(pkg1, '6500000\n'); // +1.5 J
    expect(measurement.read()).toEqual({ joules: 4.5, source: 'rapl' });
  });

  it('falls back to CPU time × watts per core when RAPL is absent', () => {
    const meter = new EnergyMeter({ powercapRoot: path.join(scratch.dir, 'none'), wattsPerCore: 10 });
    expect(meter.source).toBe('estimate');
    const measurement = meter.start();
    const until = performance.now() + 50;
    let x = 0;
    while (performance.now() < until) x += Math.sqrt(x + 1);
    const { joules, source } = measurement.read();
    expect(source).toBe('estimate');
    // ~50 ms of one busy core at 10 W ≈ 0.5 J
    expect(joules).toBeGreaterThan(0.2);
    expect(joules).toBeLessThan(2);
  });

  it('counterDeltaUj handles wrap-around', () => {
    expect(counterDeltaUj(10, 30, 100)).toBe(20);
    expect(counterDeltaUj(90, 5, 100)).toBe(15);
  });
});
