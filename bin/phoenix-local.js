#!/usr/bin/env node
// Runs the compiled CLI (dist/cli/main.js, built by `npm run build:ts`).
import { existsSync } from 'node:fs';

const entry = new URL('../dist/cli/main.js', import.meta.url);
if (!existsSync(entry)) {
  process.stderr.write('phoenix-local: E_INTERNAL: dist/cli/main.js is missing; run `npm run build` first\n');
  process.exit(1);
}
const { main } = await import(entry.href);
process.exitCode = await main(process.argv.slice(2));
