/**
 * The web demo's static file server: serves demo/web/, dist/, wasm/ and models/ of the repository,
 * read-only, at the same paths as in the repository (so the demo's relative imports just work), and
 * nothing else: no directory listings, no path that resolves outside those folders.
 */
import { createReadStream, existsSync } from 'node:fs';
import { realpath, stat } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';

/** Folders served, relative to the repository root, with the command that builds each when missing. */
export const SERVED_FOLDERS: Readonly<Record<string, string | null>> = {
  'demo/web': null,
  dist: 'npm run build:ts',
  wasm: 'npm run build:wasm',
  models: null,
};

const MIME: Readonly<Record<string, string>> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.wasm': 'application/wasm',
  '.md': 'text/markdown; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
  '.ts': 'text/plain; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
};

/** The missing build outputs, each with the command that makes it (empty when all are there). */
export function missingBuilds(root: string): { folder: string; command: string }[] {
  return Object.entries(SERVED_FOLDERS)
    .filter(([folder, command]) => command !== null && !existsSync(path.join(root, folder)))
    .map(([folder, command]) => ({ folder, command: command as string }));
}

function send(response: http.ServerResponse, status: number, text: string): void {
  response.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(text) });
  response.end(text);
}

/**
 * Maps a URL path to a file under one of the served folders, or a reason it is refused. Works on
 * decoded, normalised segments, so `..`, `%2e%2e` and backslashes cannot climb out.
 */
function resolvePath(root: string, urlPath: string): { file: string; folder: string } | { status: number; why: string } {
  let decoded: string;
  try {
    decoded = decodeURIComponent(urlPath);
  } catch {
    return { status: 400, why: 'malformed URL' };
  }
  if (decoded.includes('\0') || decoded.includes('\\')) return { status: 400, why: 'malformed URL' };
  const normal = path.posix.normalize(decoded);
  if (normal.split('/').includes('..')) return { status: 403, why: 'outside the served folders' };
  const relative = normal.replace(/^\/+/, '');
  const folder = Object.keys(SERVED_FOLDERS).find((f) => relative === f || relative.startsWith(`${f}/`));
  if (!folder) return { status: 404, why: `not served (only ${Object.keys(SERVED_FOLDERS).join('/, ')}/)` };
  return { file: path.join(root, relative), folder };
}

/** Handles one request: GET/HEAD of a file under the served folders. */
async function handle(root: string, request: http.IncomingMessage, response: http.ServerResponse): Promise<void> {
  if (request.method !== 'GET' && request.method !== 'HEAD') {
    response.setHeader('Allow', 'GET, HEAD');
    return send(response, 405, 'read-only server: GET and HEAD only\n');
  }
  const url = new URL(request.url ?? '/', 'http://localhost');
  if (url.pathname === '/' || url.pathname === '/index.html') {
    response.writeHead(302, { Location: '/demo/web/' });
    return void response.end();
  }
  const target = resolvePath(root, url.pathname.endsWith('/') ? `${url.pathname}index.html` : url.pathname);
  if ('why' in target) return send(response, target.status, `${target.why}\n`);
  const build = SERVED_FOLDERS[target.folder];
  if (build && !existsSync(path.join(root, target.folder))) {
    return send(response, 404, `${target.folder}/ is missing: run \`${build}\`\n`);
  }
  let real: string;
  try {
    real = await realpath(target.file);
  } catch {
    return send(response, 404, 'not found\n');
  }
  // A symlink inside a served folder must not lead elsewhere.
  const folderReal = await realpath(path.join(root, target.folder));
  if (real !== folderReal && !real.startsWith(`${folderReal}${path.sep}`)) return send(response, 403, 'outside the served folders\n');
  const info = await stat(real);
  if (!info.isFile()) return send(response, 404, 'not found\n');
  response.writeHead(200, {
    'Content-Type': MIME[path.extname(real).toLowerCase()] ?? 'application/octet-stream',
    'Content-Length': info.size,
    'Cache-Control': 'no-cache',
    'X-Content-Type-Options': 'nosniff',
    // Cross-origin isolation: harmless here (everything is same-origin) and lets the page use
    // SharedArrayBuffer should the WASM build ever use threads.
    'Cross-Origin-Opener-Policy': 'same-origin',
    'Cross-Origin-Embedder-Policy': 'require-corp',
  });
  if (request.method === 'HEAD') return void response.end();
  const stream = createReadStream(real);
  stream.on('error', () => response.destroy());
  stream.pipe(response);
}

/** A server for the repository at `root` (not listening yet). */
export function createDemoServer(root: string): http.Server {
  return http.createServer((request, response) => {
    handle(root, request, response).catch((error: unknown) => {
      if (!response.headersSent) send(response, 500, `${error instanceof Error ? error.message : String(error)}\n`);
      else response.destroy();
    });
  });
}
