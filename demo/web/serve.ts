/**
 * `tsx demo/web/serve.ts [--port N]`: serves the browser demo on 127.0.0.1 (port 0 = any free port).
 * The first stdout line is the demo's URL, so scripts and tests can read it.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { createDemoServer, missingBuilds } from './server.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const HOST = '127.0.0.1';
const DEFAULT_PORT = 8787;

function parsePort(argv: readonly string[]): number {
  const at = argv.findIndex((a) => a === '--port' || a.startsWith('--port='));
  if (at < 0) return DEFAULT_PORT;
  const arg = argv[at] as string;
  const value = arg.includes('=') ? arg.slice(arg.indexOf('=') + 1) : argv[at + 1];
  const port = Number(value);
  if (value === undefined || value === '' || !Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`--port must be an integer from 0 to 65535 (0 = any free port), got ${JSON.stringify(value ?? '')}`);
    process.exit(2);
  }
  return port;
}

const port = parsePort(process.argv.slice(2));
const server = createDemoServer(path.resolve(ROOT));
server.on('error', (error) => {
  console.error(`phoenix-local web demo: cannot listen on ${HOST}:${port}: ${error.message}`);
  process.exit(1);
});
server.listen(port, HOST, () => {
  const address = server.address();
  const actual = typeof address === 'object' && address ? address.port : port;
  console.log(`phoenix-local web demo: http://${HOST}:${actual}/`);
  for (const { folder, command } of missingBuilds(ROOT)) {
    console.error(`warning: ${folder}/ is missing, the demo cannot run without it: run \`${command}\``);
  }
});
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  });
}
