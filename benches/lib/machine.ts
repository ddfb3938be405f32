/** Facts about the machine a run happened on (for the results file). */
import { execFileSync } from 'node:child_process';
import os from 'node:os';

export interface MachineInfo {
  cpu: string;
  logicalCores: number;
  memoryGiB: number;
  platform: string;
  kernel: string;
  node: string;
  /** 1-minute load average when the run started and ended: a busy machine makes timings noisy. */
  loadAvgStart: number;
  loadAvgEnd?: number;
  gitCommit?: string;
  date: string;
}

export function machineInfo(repoRoot: string): MachineInfo {
  let gitCommit: string | undefined;
  try {
    gitCommit = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'ignore'] })
      .toString()
      .trim();
  } catch {
    gitCommit = undefined; // no commits yet, or not a git checkout
  }
  return {
    cpu: os.cpus()[0]?.model ?? 'unknown',
    logicalCores: os.availableParallelism(),
    memoryGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    platform: `${process.platform}-${process.arch}`,
    kernel: os.release(),
    node: process.version,
    loadAvgStart: os.loadavg()[0]!,
    gitCommit,
    date: new Date().toISOString(),
  };
}
