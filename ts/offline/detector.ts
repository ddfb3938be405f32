/**
 * OfflineDetector: tells whether the machine looks connected, using injectable probes. The default
 * probe only inspects local network interfaces (no packets are sent); callers who want a real
 * reachability check inject their own probe. In `OFFLINE_ONLY` mode nothing is probed at all.
 */
import { networkInterfaces } from 'node:os';

/** One connectivity check: resolves `true` when it sees connectivity. */
export type ConnectivityProbe = () => boolean | Promise<boolean>;

/** Result of {@link OfflineDetector.check}. */
export interface ConnectivityState {
  /** `true` = looks online, `false` = offline, `null` = not probed. */
  online: boolean | null;
  /** Whether any probe ran. */
  probed: boolean;
  /** Why (e.g. "OFFLINE_ONLY: probes disabled", "probe 'interfaces' saw connectivity"). */
  reason: string;
  checkedAt: string;
}

/** Options of {@link OfflineDetector}. */
export interface OfflineDetectorOptions {
  /** Named probes; the machine is online when any probe says so. Default: `{ interfaces: hasExternalInterface }`. */
  probes?: Record<string, ConnectivityProbe>;
  /** Milliseconds a probe may take before it counts as "offline" (default 2000). */
  probeTimeoutMs?: number;
}

/** Default probe: whether a non-internal network interface has an address. Reads OS state only. */
export function hasExternalInterface(): boolean {
  return Object.values(networkInterfaces()).some((list) => list?.some((addr) => !addr.internal));
}

/**
 * Connectivity state from injectable probes. The library itself never needs the network; this only
 * informs status reports. `check({ offlineOnly: true })` runs no probe at all.
 */
export class OfflineDetector {
  readonly #probes: Record<string, ConnectivityProbe>;
  readonly #timeoutMs: number;
  #last: ConnectivityState = { online: null, probed: false, reason: 'not checked yet', checkedAt: new Date(0).toISOString() };

  constructor(options: OfflineDetectorOptions = {}) {
    this.#probes = options.probes ?? { interfaces: hasExternalInterface };
    this.#timeoutMs = options.probeTimeoutMs ?? 2000;
  }

  /** The most recent state (no probing). */
  get last(): ConnectivityState {
    return this.#last;
  }

  /**
   * Checks connectivity. With `offlineOnly` no probe runs and the answer is "offline, not probed".
   */
  async check(options: { offlineOnly?: boolean } = {}): Promise<ConnectivityState> {
    const checkedAt = new Date().toISOString();
    if (options.offlineOnly) {
      this.#last = { online: false, probed: false, reason: 'OFFLINE_ONLY: probes disabled, treated as offline', checkedAt };
      return this.#last;
    }
    const entries = Object.entries(this.#probes);
    if (entries.length === 0) {
      this.#last = { online: null, probed: false, reason: 'no probes configured', checkedAt };
      return this.#last;
    }
    for (const [name, probe] of entries) {
      if (await this.#run(probe)) {
        this.#last = { online: true, probed: true, reason: `probe "${name}" saw connectivity`, checkedAt };
        return this.#last;
      }
    }
    this.#last = { online: false, probed: true, reason: `no probe (${entries.map(([n]) => n).join(', ')}) saw connectivity`, checkedAt };
    return this.#last;
  }

  async #run(probe: ConnectivityProbe): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), this.#timeoutMs);
      timer.unref();
    });
    try {
      return await Promise.race([Promise.resolve().then(probe), timeout]);
    } catch {
      return false;
    } finally {
      clearTimeout(timer);
    }
  }
}
