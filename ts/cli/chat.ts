/**
 * `phoenix-local chat <model>`: an interactive conversation on a terminal (readline). The whole
 * conversation is rendered by the model's chat template for every answer (the core's `chat`), which
 * gets the previous answer's state: only the new turn is fed, not the whole history again. The CLI
 * keeps the history and that state, reads lines and routes Ctrl-C: while an answer streams it aborts
 * that answer (the generation's signal), at the prompt it ends the program.
 */
import { fstatSync } from 'node:fs';
import { createInterface, type Interface } from 'node:readline';

import { PhoenixError } from '../binding/errors.js';
import type { ChatMessage } from '../engines/types.js';
import { inFlagTerms } from './args.js';
import { chatEngine, checkOptionsBeforeLoading, generationOptions, requireChatTemplate, statsLine, systemMessage } from './commands.js';
import type { CliContext } from './context.js';
import { printable } from './printable.js';

const PROMPT = '> ';

/** What ended a line read: a line, end of input (Ctrl-D), or Ctrl-C at the prompt. */
type Read = { line: string } | { end: 'eof' | 'interrupt' };

export async function chatCommand(ctx: CliContext, modelArg: string | undefined): Promise<number> {
  if (modelArg === undefined) throw new PhoenixError('E_INVALID_OPTION', 'missing <model>', { usage: true });
  const options = generationOptions(ctx);
  await checkOptionsBeforeLoading(ctx, options);
  const model = await ctx.load(modelArg);
  requireChatTemplate(model);
  // Every turn's prompt holds at least one token: a maxTokens that fills the whole context would fail
  // each question, so it is refused now (the core still checks each turn's prompt plus maxTokens).
  const limit = model.info.contextLength;
  if (limit !== null && options.maxTokens !== undefined && options.maxTokens >= limit) {
    throw new PhoenixError('E_INVALID_OPTION', `--max-tokens ${options.maxTokens} leaves no room for a question in the model's ${limit}-token context`, { option: 'maxTokens', usage: true });
  }
  // Without -n an answer may run until the model ends it or the context is full, as the help says
  // (the library's default of 256 tokens cut long answers short mid-sentence).
  if (options.maxTokens === undefined && limit !== null) Object.assign(options, { maxTokens: limit, fitToContext: true });
  const engine = chatEngine(ctx.manager.engineFor(model));
  const system = systemMessage(ctx);
  let history: ChatMessage[] = [...system];
  // The last answer's state: the conversation so far as the model has read it (a KV cache or SSM
  // state), so the next answer feeds only its own turn.
  let state: Uint8Array | undefined;

  // Node reads a folder given as standard input (`< /`) as empty: that would be a silent Ctrl-D.
  if (fstatSync(0).isDirectory()) throw new PhoenixError('E_INVALID_OPTION', 'standard input is a folder: chat reads questions from a terminal, a pipe or a file', { option: 'stdin' });
  const rl = createInterface({ input: process.stdin, output: process.stdout, prompt: PROMPT, terminal: process.stdin.isTTY ?? false });
  const lines = new LineQueue(rl);

  // Ctrl-C reaches readline (raw mode) on a terminal, the process otherwise: one handler for both.
  let answering: AbortController | undefined;
  const interrupt = (): void => {
    if (answering && !answering.signal.aborted) answering.abort();
    else if (answering) process.exit(130); // twice while an answer is still stopping
    else lines.interrupt();
  };
  rl.on('SIGINT', interrupt);
  process.on('SIGINT', interrupt);
  ctx.note(`chatting with ${model.name}: /reset clears the conversation, /exit (or Ctrl-D) quits, Ctrl-C stops an answer`);
  try {
    for (;;) {
      const read = await lines.next();
      if ('end' in read) {
        process.stdout.write('\n');
        return read.end === 'interrupt' ? 130 : 0;
      }
      const text = read.line.trim();
      if (text === '') continue;
      if (text === '/exit' || text === '/quit') return 0;
      if (text === '/reset') {
        history = [...system];
        state = undefined;
        ctx.io.stderr.write('(conversation cleared)\n');
        continue;
      }
      // A lone unknown `/word` is a mistyped command, not a message (a message may still start with `/`).
      if (/^\/[A-Za-z]+$/.test(text)) {
        ctx.io.stderr.write(`unknown command ${text}: /reset clears the conversation, /exit quits\n`);
        continue;
      }
      const messages: ChatMessage[] = [...history, { role: 'user', content: read.line }];
      if (ctx.flags.verbose) ctx.io.stderr.write(`prompt ${JSON.stringify(engine.renderChat(model, messages).text)}\n`);
      answering = new AbortController();
      try {
        const stream = engine.chatStream(model, messages, { ...options, signal: answering.signal, returnState: true, ...(state ? { state } : {}) });
        let result;
        try {
          for await (const chunk of stream) ctx.io.stdout.write(chunk.text);
          result = await stream.result;
        } finally {
          stream.dispose?.(); // its state, when asked for, is already in the result
        }
        ctx.io.stdout.write('\n');
        if (result.finishReason === 'abort') ctx.io.stderr.write('(answer stopped)\n');
        if (ctx.flags.verbose) ctx.io.stderr.write(`${statsLine(result)}\n`);
        // The history is what was shown: a stopped answer stays as far as it got.
        history = [...messages, { role: 'assistant', content: result.text }];
        state = result.state;
      } catch (error) {
        // A failed answer (e.g. the context is full) leaves the conversation as it was.
        const e = error instanceof PhoenixError ? error : new PhoenixError('E_INTERNAL', String(error));
        ctx.io.stderr.write(`phoenix-local: ${e.code}: ${printable(inFlagTerms(e.message).text)}\n`);
      } finally {
        answering = undefined;
      }
    }
  } finally {
    process.removeListener('SIGINT', interrupt);
    rl.close();
  }
}

/**
 * Lines from readline, queued: lines that arrive while an answer streams (pasted, or piped input)
 * are answered in turn instead of being dropped.
 */
class LineQueue {
  readonly #lines: string[] = [];
  #closed = false;
  #waiting: ((read: Read) => void) | undefined;

  constructor(readonly rl: Interface) {
    rl.on('line', (line) => this.#deliver({ line }) || this.#lines.push(line));
    rl.on('close', () => {
      this.#closed = true;
      this.#deliver({ end: 'eof' });
    });
  }

  /** Shows the prompt and resolves with the next line, the end of input, or an interrupt. */
  next(): Promise<Read> {
    const queued = this.#lines.shift();
    if (queued !== undefined) return Promise.resolve({ line: queued });
    if (this.#closed) return Promise.resolve({ end: 'eof' });
    // The `> ` prompt is for a person at a terminal; piped in, it would only clutter the answers.
    if (this.rl.terminal) this.rl.prompt();
    return new Promise((resolve) => (this.#waiting = resolve));
  }

  /** Ctrl-C at the prompt: ends a pending `next()`; false when nobody waits (an answer streams). */
  interrupt(): boolean {
    return this.#deliver({ end: 'interrupt' });
  }

  #deliver(read: Read): boolean {
    const waiting = this.#waiting;
    this.#waiting = undefined;
    waiting?.(read);
    return waiting !== undefined;
  }
}
