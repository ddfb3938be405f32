/**
 * Energy accounting of a request: Intel RAPL package counters when readable
 * (`/sys/class/powercap/intel-rapl:N/energy_uj`, whole-package energy, wrap-around handled with
 * `max_energy_range_uj`), otherwise an estimate: process CPU time × watts per busy core.
 * Both are process- or machine-wide: concurrent requests see each other's energy.
 */
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';

/** Where an energy figure came from. */
export type EnergySource = 'rapl' | 'estimate';

/** Options of {@link EnergyMeter}. */
export interface EnergyMeterOptions {
  /** Watts one fully busy core draws, for the estimate (default 12). */
  wattsPerCore?: number;
  /** Root of the powercap tree (default `/sys/class/powercap`). */
  powercapRoot?: string;
  /** Skip RAPL even when readable (default false). */
  disableRapl?: boolean;
}

interface RaplZone {
  energyFile: string;
  maxRangeUj: number;
}

/** A running measurement; `read()` gives the energy since it started. */
export interface EnergyMeasurement {
  read(): { joules: number; source: EnergySource };
}

function readNumber(file: string): number {
  return Number(readFileSync(file, 'utf8').trim());
}

/** Top-level RAPL zones (`intel-rapl:0`, not sub-zones `intel-rapl:0:0`, which the package already counts). */
function findRaplZones(root: string): RaplZone[] {
  let names: string[];
  try {
    names = readdirSync(root);
  } catch {
    return [];
  }
  const zones: RaplZone[] = [];
  for (const name of names.filter((n) => /^intel-rapl:\d+$/.test(n))) {
    const dir = path.join(root, name);
    try {
      const energyFile = path.join(dir, 'energy_uj');
      const value = readNumber(energyFile);
      const maxRangeUj = readNumber(path.join(dir, 'max_energy_range_uj'));
      if (Number.isFinite(value) && Number.isFinite(maxRangeUj) && maxRangeUj > 0) zones.push({ energyFile, maxRangeUj });
    } catch {
      // unreadable (usually root-only since CVE-2020-8694): not usable
    }
  }
  return zones;
}

/** Energy between two readings of a counter that wraps at `maxRangeUj`. */
export function counterDeltaUj(startUj: number, endUj: number, maxRangeUj: number): number {
  return endUj >= startUj ? endUj - startUj : endUj + maxRangeUj - startUj;
}

/** Measures the energy of a piece of work: RAPL when readable, else CPU time × watts per core. */
export class EnergyMeter {
  /** Which source measurements use. */
  readonly source: EnergySource;
  readonly wattsPerCore: number;
  readonly #zones: RaplZone[];

  constructor(options: EnergyMeterOptions = {}) {
    this.wattsPerCore = options.wattsPerCore ?? 12;
    this.#zones = options.disableRapl ? [] : findRaplZones(options.powercapRoot ?? '/sys/class/powercap');
    this.source = this.#zones.length > 0 ? 'rapl' : 'estimate';
  }

  /** Starts a measurement. */
  start(): EnergyMeasurement {
    if (this.source === 'rapl') {
      const zones = this.#zones;
      const start = zones.map((z) => readNumber(z.energyFile));
      return {
        read: () => {
          let uj = 0;
          zones.forEach((zone, i) => {
            uj += counterDeltaUj(start[i] as number, readNumber(zone.energyFile), zone.maxRangeUj);
          });
          return { joules: uj / 1e6, source: 'rapl' };
        },
      };
    }
    const start = process.cpuUsage();
    return {
      read: () => {
        const used = process.cpuUsage(start);
        return { joules: ((used.user + used.system) / 1e6) * this.wattsPerCore, source: 'estimate' };
      },
    };
  }
}
