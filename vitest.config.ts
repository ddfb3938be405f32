import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts', 'benches/**/*.test.ts'],
    // Real models on a 2-core machine: loads, generations and child processes take seconds.
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Files share the native addon and the CPU; running them one at a time keeps timings honest.
    fileParallelism: false,
    pool: 'forks',
  },
});
