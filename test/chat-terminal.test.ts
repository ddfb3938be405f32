/**
 * `phoenix-local chat` in a real terminal (tmux): history kept across turns, `/reset`, Ctrl-C stopping
 * an answer (the prompt comes back), Ctrl-C at the prompt ending the program. Models have random
 * weights, so answers are gibberish: the test reads the prompt the core rendered (`--verbose`).
 * Skipped, saying so, where tmux is not installed.
 */
import { spawnSync } from 'node:child_process';
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { chatml, makeChatModel } from './chat-support.js';
import { ROOT, TINY, copyModel, requireNativeAddon, tempDir } from './helpers.js';

const HAS_TMUX = spawnSync('tmux', ['-V']).status === 0;
if (!HAS_TMUX) console.warn('SKIPPED test/chat-terminal.test.ts: needs tmux (apt-get install tmux)');

const SOCKET = `phoenix-chat-test-${process.pid}`;
const SESSION = 'chat';

function tmux(...args: string[]): string {
  const run = spawnSync('tmux', ['-L', SOCKET, ...args], { encoding: 'utf8' });
  if (run.status !== 0) throw new Error(`tmux ${args.join(' ')} failed: ${run.stderr}`);
  return run.stdout;
}

/** The whole pane, wrapped lines joined. */
function screen(): string {
  return tmux('capture-pane', '-p', '-J', '-S', '-', '-t', SESSION);
}

async function waitFor(what: string, test: (text: string) => boolean, timeoutMs = 30_000): Promise<string> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const text = screen();
    if (test(text)) return text;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}; screen:\n${text.slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Occurrences of `needle` in `text`. */
function count(text: string, needle: string): number {
  return text.split(needle).length - 1;
}

const PROMPT_LINE = /^> ?$/m;

describe.skipIf(!HAS_TMUX)('phoenix-local chat in a terminal', () => {
  let scratch: Awaited<ReturnType<typeof tempDir>>;

  beforeAll(async () => {
    requireNativeAddon();
    const build = spawnSync(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', path.join(ROOT, 'tsconfig.json')], { cwd: ROOT, encoding: 'utf8' });
    if (build.status !== 0) throw new Error(`tsc failed:\n${build.stdout}${build.stderr}`);
    scratch = await tempDir();
    const modelsDir = path.join(scratch.dir, 'models');
    await mkdir(modelsDir);
    await makeChatModel(path.join(modelsDir, 'chat-tiny'));
    // A Mamba model (no context limit) with the same template: its answers can run long enough to
    // be interrupted.
    const mamba = await copyModel(TINY, path.join(modelsDir, 'chat-mamba'));
    await copyFile(path.join(ROOT, 'test/fixtures/chat-llama-tiny/tokenizer_config.json'), path.join(mamba, 'tokenizer_config.json'));
    const conf = path.join(scratch.dir, 'tmux.conf');
    await writeFile(conf, 'set -g history-limit 200000\n');
    const command = `cd ${JSON.stringify(scratch.dir)} && PHOENIX_MODELS_DIR=${JSON.stringify(modelsDir)} ${JSON.stringify(process.execPath)} ${JSON.stringify(path.join(ROOT, 'bin/phoenix-local.js'))} chat chat-mamba --verbose -q -n 1000000; echo "EXIT:$?"; sleep 60`;
    tmux('-f', conf, 'new-session', '-d', '-s', SESSION, '-x', '250', '-y', '50', command);
  });

  afterAll(async () => {
    if (HAS_TMUX) spawnSync('tmux', ['-L', SOCKET, 'kill-server']);
    await scratch?.cleanup();
  });

  it('keeps the history, /reset clears it, Ctrl-C stops an answer and then ends the program at the prompt', async () => {
    await waitFor('the prompt', (t) => PROMPT_LINE.test(t));

    // First turn: interrupt the (endless) answer once it streams; the prompt comes back.
    tmux('send-keys', '-t', SESSION, '-l', 'Hello there');
    tmux('send-keys', '-t', SESSION, 'Enter');
    const first = JSON.stringify(chatml([{ role: 'user', content: 'Hello there' }]));
    await waitFor('the first rendered prompt', (t) => t.includes(`prompt ${first}`));
    await new Promise((r) => setTimeout(r, 500));
    tmux('send-keys', '-t', SESSION, 'C-c');
    let text = await waitFor('the answer to stop', (t) => t.includes('(answer stopped)') && t.includes('finish abort'));
    expect(text).toMatch(/\d+ generated, \d+ prompt tokens.*finish abort/);
    await waitFor('the prompt after the stopped answer', (t) => PROMPT_LINE.test(t.slice(t.lastIndexOf('finish abort'))));

    // Second turn: the rendered prompt holds the first exchange (the stopped answer as far as it got).
    tmux('send-keys', '-t', SESSION, '-l', 'Second question');
    tmux('send-keys', '-t', SESSION, 'Enter');
    text = await waitFor('the second rendered prompt', (t) => count(t, 'prompt "') === 2);
    const second = text.slice(text.lastIndexOf('prompt "'));
    expect(second.startsWith(`prompt ${first.slice(0, -1)}`)).toBe(true);
    expect(second).toContain('<|im_start|>user\\nSecond question<|padding|>\\n<|im_start|>assistant\\n"');
    await new Promise((r) => setTimeout(r, 300));
    tmux('send-keys', '-t', SESSION, 'C-c');
    await waitFor('the second answer to stop', (t) => count(t, 'finish abort') === 2);

    // /reset: the next prompt holds only the new message.
    await waitFor('the prompt', (t) => PROMPT_LINE.test(t.slice(t.lastIndexOf('finish abort'))));
    tmux('send-keys', '-t', SESSION, '-l', '/reset');
    tmux('send-keys', '-t', SESSION, 'Enter');
    await waitFor('the reset', (t) => t.includes('(conversation cleared)'));
    tmux('send-keys', '-t', SESSION, '-l', 'Third');
    tmux('send-keys', '-t', SESSION, 'Enter');
    text = await waitFor('the third rendered prompt', (t) => count(t, 'prompt "') === 3);
    expect(text.slice(text.lastIndexOf('prompt "'))).toMatch(new RegExp(`^prompt ${escapeRegExp(JSON.stringify(chatml([{ role: 'user', content: 'Third' }])))}\\n`));
    await new Promise((r) => setTimeout(r, 300));
    tmux('send-keys', '-t', SESSION, 'C-c');
    await waitFor('the third answer to stop', (t) => count(t, 'finish abort') === 3);

    // Ctrl-C at the prompt ends the program (status 130), not only the answer.
    await waitFor('the prompt', (t) => PROMPT_LINE.test(t.slice(t.lastIndexOf('finish abort'))));
    tmux('send-keys', '-t', SESSION, 'C-c');
    await waitFor('the program to end', (t) => t.includes('EXIT:130'));
  }, 120_000);
});

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
