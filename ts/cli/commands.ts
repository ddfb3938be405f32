/**
 * The four CLI commands. Each is a thin layer over the public API.
 */

import { PhoenixError, toPhoenixError } from '../binding/errors.js';
import { toRawPrompt } from '../engines/options.js';
import { readStateFile } from '../engines/state-file.js';
import type { ChatMessage, GenerationInput, GenerationOptions, GenerationResult, InferenceEngine, LoadedModel } from '../engines/types.js';
import type { ModelMetadata } from '../models/metadata.js';
import { idsFlag, numberFlag } from './args.js';
import { formatBytes, type CliContext } from './context.js';
import { checkReadableFile, checkWritableFile, writeOutputFile } from './destination.js';
import { printable } from './printable.js';

/** `list`: every model folder of the models dir. */
export async function listCommand(ctx: CliContext): Promise<number> {
  // The library lists a missing folder as empty; on the command line that hides a wrong path.
  await ctx.requireModelsDir();
  // No backend (a forced one that cannot load, or none at all): nothing listed could run.
  await ctx.binding();
  const models = await ctx.manager.listModels();
  if (ctx.flags.json) {
    ctx.io.stdout.write(JSON.stringify(models, null, 2) + '\n');
    return 0;
  }
  if (models.length === 0) {
    ctx.io.stdout.write(`no models in ${ctx.manager.modelsDir}\n`);
    return 0;
  }
  const rows = models.map((m) =>
    [m.name, m.modelType, m.format, shownSize(m) ?? '?', m.status, m.version, m.family ?? '-', m.engine ?? '-', m.checksum.slice(0, 12)].map(printable),
  );
  const header = ['NAME', 'TYPE', 'FORMAT', 'SIZE', 'STATUS', 'VERSION', 'FAMILY', 'ENGINE', 'SHA256'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] as string).length)));
  for (const row of [header, ...rows]) ctx.io.stdout.write(row.map((c, i) => c.padEnd(widths[i] as number)).join('  ').trimEnd() + '\n');
  for (const m of models) if (m.error) ctx.io.stdout.write(printable(`  ${m.name}: ${m.error.code}: ${m.error.message}`) + '\n');
  return 0;
}

/** `info <model>`: metadata, architecture (after loading), performance profile, backend and why. */
export async function infoCommand(ctx: CliContext, modelArg: string | undefined): Promise<number> {
  let metadata = await ctx.metadata(modelArg);
  let architecture: Record<string, unknown> | undefined;
  let loadError: PhoenixError | undefined;
  if (!ctx.flags['no-load'] && metadata.status !== 'error' && metadata.status !== 'corrupted') {
    try {
      const model = await ctx.load(modelArg);
      architecture = { ...model.info };
      metadata = await ctx.metadata(modelArg);
    } catch (error) {
      loadError = toPhoenixError(error);
    }
  }
  let backend: Record<string, unknown>;
  try {
    const s = await ctx.binding();
    // Read now, not at selection: --threads was applied since.
    backend = { kind: s.backend, path: s.path, reason: s.reason, ...s.binding.buildInfo() };
  } catch (error) {
    backend = { unavailable: toPhoenixError(error).message };
  }
  const manifest = await ctx.manager.manifestStatus();
  const report = { ...metadata, ...(architecture ? { architecture } : {}), backend, manifest };
  if (ctx.flags.json) {
    ctx.io.stdout.write(JSON.stringify(report, null, 2) + '\n');
  } else {
    const lines: [string, unknown][] = [
      ['name', metadata.name],
      ['path', metadata.path],
      ['status', metadata.status],
      ['model type', metadata.modelType],
      ['format', metadata.format],
      ...(metadata.family ? [['family', `${metadata.family} (${metadata.engine} engine)`] as [string, unknown]] : []),
      ['version', metadata.version],
      ['size', shownSize(metadata) === undefined ? 'unknown (the model could not be read: see error)' : `${shownSize(metadata)} (${metadata.sizeBytes} bytes)`],
      ['sha256', metadata.checksum],
      ['tokenizer', metadata.hasTokenizer ? 'yes' : 'no'],
    ];
    const g = metadata.gguf;
    if (g) {
      // Most common type first (ties by name), whatever order the record's keys came in.
      const types = Object.entries(g.tensorTypes)
        .sort(([ta, a], [tb, b]) => b - a || ta.localeCompare(tb))
        .map(([type, n]) => `${n} ${type}`)
        .join(', ');
      lines.push(['gguf', `${g.architecture}${g.name ? ` "${g.name}"` : ''}, ${g.quantization} (tensors: ${types}), ${g.paramCount} parameters, context ${g.contextLength === null || g.contextLength === undefined ? 'unlimited' : tokenCount(g.contextLength)}`]);
    }
    if (metadata.error) lines.push(['error', `${metadata.error.code}: ${metadata.error.message}`]);
    if (architecture) {
      const a = architecture as Record<string, unknown>;
      const family = Object.entries((a.architecture ?? {}) as Record<string, unknown>).map(([k, v]) => `${k} ${String(v)}`);
      if (!metadata.family) lines.push(['family', `${a.family} (${a.engine} engine)`]);
      lines.push(['architecture', [`${a.numLayers} layers`, `hidden ${a.hiddenSize}`, `vocab ${a.vocabSize}`, ...family].join(', ')]);
      lines.push(['chat', a.hasChatTemplate ? 'chat template (phoenix-local chat)' : 'no chat template']);
      lines.push(['context', a.contextLength === null ? 'unlimited (fixed-size state)' : `${tokenCount(Number(a.contextLength))} tokens`]);
      lines.push(['parameters', `${a.paramCount} (${a.dtype}, ${formatBytes(Number(a.weightBytes))} in memory, state ${formatBytes(Number(a.stateBytes))} per sequence${Number(a.stateBytesPerToken) > 0 ? ` + ${formatBytes(Number(a.stateBytesPerToken))} per token of context` : ''})`]);
    }
    const p = metadata.performance;
    if (p) lines.push(['performance', `load ${p.loadMs.toFixed(0)} ms, prefill ${p.prefillTokensPerSecond.toFixed(0)} tok/s, decode ${p.decodeTokensPerSecond.toFixed(0)} tok/s (measured ${p.measuredAt})`]);
    lines.push(['backend', 'kind' in backend ? `${backend.kind} (${backend.path})` : `unavailable: ${backend.unavailable}`]);
    if ('kind' in backend) lines.push(['backend why', backend.reason], ['core', `v${backend.version}, simd ${backend.simd}, ${backend.threads} thread${backend.threads === 1 ? '' : 's'}`]);
    if (manifest.warning) lines.push(['manifest', manifest.warning]);
    for (const [key, value] of lines) ctx.io.stdout.write(`${key.padEnd(13)} ${printable(String(value))}\n`);
  }
  // No backend is reported on the backend line above; any other load failure fails the command.
  if (loadError && loadError.code !== 'E_BACKEND_UNAVAILABLE') throw loadError;
  if (metadata.error && (metadata.status === 'error' || metadata.status === 'corrupted')) {
    throw new PhoenixError(metadata.error.code as PhoenixError['code'], metadata.error.message, { model: metadata.name });
  }
  return 0;
}

/** A model's size for display; `undefined` for a model in error whose files were never sized (not "0 B"). */
function shownSize(m: ModelMetadata): string | undefined {
  if (m.sizeBytes === 0 && m.status === 'error') return undefined;
  return formatBytes(m.sizeBytes);
}

/** The sampling and stopping flags of `run` and `chat` as generation options (absent ones left out). */
export function generationOptions(ctx: CliContext): GenerationOptions {
  const { flags } = ctx;
  const options: GenerationOptions = {
    maxTokens: numberFlag(flags, 'max-tokens'),
    temperature: numberFlag(flags, 'temperature'),
    topK: numberFlag(flags, 'top-k'),
    topP: numberFlag(flags, 'top-p'),
    minP: numberFlag(flags, 'min-p'),
    repeatPenalty: numberFlag(flags, 'repeat-penalty'),
    seed: numberFlag(flags, 'seed'),
    ...(flags.stop ? { stop: flags.stop } : {}),
    returnState: flags['save-state'] !== undefined,
    ...(flags['int8-prompt'] ? { int8Prompt: true } : {}),
  };
  for (const key of Object.keys(options) as (keyof GenerationOptions)[]) if (options[key] === undefined) delete options[key];
  return options;
}

/** `run <model> "<prompt>"`: streams text to stdout, stats to stderr. */
export async function runCommand(ctx: CliContext, modelArg: string | undefined, promptArgs: string[]): Promise<number> {
  const { flags } = ctx;
  if (flags.chat !== undefined) return runChatCommand(ctx, modelArg, promptArgs);
  if (flags.system !== undefined || flags.verbose) {
    throw new PhoenixError('E_INVALID_OPTION', `${flags.system !== undefined ? '--system' : '--verbose'} goes with --chat`, { usage: true });
  }
  const options = generationOptions(ctx);
  if (flags.ids !== undefined && promptArgs.length > 0) throw new PhoenixError('E_INVALID_OPTION', 'give the prompt as text or as --ids, not both', { usage: true });
  if (modelArg === undefined || (promptArgs.length === 0 && flags.ids === undefined && flags.state === undefined)) {
    throw new PhoenixError('E_INVALID_OPTION', `missing ${modelArg === undefined ? '<model> and ' : ''}"<prompt>" (or --ids, or --state to continue a saved state)`, { usage: true });
  }
  const input: GenerationInput = flags.ids !== undefined ? { ids: idsFlag(flags.ids) } : promptArgs.join(' ');
  asUsageError(() => toRawPrompt(input, flags.state !== undefined)); // an empty prompt, before loading
  const saveTo = flags['save-state'];
  if (saveTo !== undefined) await checkWritableFile('save-state', saveTo);
  if (flags.state !== undefined) await checkReadableFile('state', flags.state);
  await checkOptionsBeforeLoading(ctx, options);
  const model = await ctx.load(modelArg);
  if (flags.state !== undefined) options.state = await readStateFile(flags.state, model, '--state');

  const controller = new AbortController();
  const onSigint = (): void => controller.abort();
  process.once('SIGINT', onSigint);
  try {
    const stream = ctx.manager.engineFor(model).stream(model, input, { ...options, signal: controller.signal });
    for await (const chunk of stream) ctx.io.stdout.write(chunk.text);
    const result = await stream.result;
    if ((process.stdout.isTTY ?? false) && !result.text.endsWith('\n')) ctx.io.stdout.write('\n');
    if (result.state && saveTo !== undefined) await writeOutputFile('save-state', saveTo, result.state);
    ctx.io.stderr.write(`\n${statsLine(result)}${flags['save-state'] ? `, state saved to ${flags['save-state']}` : ''}\n`);
    return result.finishReason === 'abort' ? 130 : 0;
  } finally {
    process.removeListener('SIGINT', onSigint);
  }
}

/** `run <model> --chat "question"`: one user message (after `--system` when given), answered once. */
async function runChatCommand(ctx: CliContext, modelArg: string | undefined, promptArgs: string[]): Promise<number> {
  const { flags } = ctx;
  const conflicting = promptArgs.length > 0 ? '"<prompt>"' : (['ids', 'state', 'save-state'] as const).find((f) => flags[f] !== undefined);
  if (conflicting !== undefined) {
    throw new PhoenixError('E_INVALID_OPTION', `--chat takes the question itself; it does not go with ${conflicting.startsWith('"') ? conflicting : `--${conflicting}`}`, { usage: true });
  }
  if (modelArg === undefined) throw new PhoenixError('E_INVALID_OPTION', 'missing <model>', { usage: true });
  const options = generationOptions(ctx);
  await checkOptionsBeforeLoading(ctx, options);
  const model = await ctx.load(modelArg);
  requireChatTemplate(model);
  const engine = chatEngine(ctx.manager.engineFor(model));
  const messages: ChatMessage[] = [...systemMessage(ctx), { role: 'user', content: flags.chat as string }];
  if (flags.verbose) ctx.io.stderr.write(`prompt ${JSON.stringify(engine.renderChat(model, messages).text)}\n`);
  const controller = new AbortController();
  const onSigint = (): void => controller.abort();
  process.once('SIGINT', onSigint);
  try {
    const stream = engine.chatStream(model, messages, { ...options, signal: controller.signal });
    for await (const chunk of stream) ctx.io.stdout.write(chunk.text);
    const result = await stream.result;
    if ((process.stdout.isTTY ?? false) && !result.text.endsWith('\n')) ctx.io.stdout.write('\n');
    ctx.io.stderr.write(`\n${statsLine(result)}\n`);
    return result.finishReason === 'abort' ? 130 : 0;
  } finally {
    process.removeListener('SIGINT', onSigint);
  }
}

/** `chat` and `run --chat` need the model's chat template: without one, say what to do instead. */
export function requireChatTemplate(model: LoadedModel): void {
  if (model.info.hasChatTemplate) return;
  throw new PhoenixError('E_INVALID_OPTION', `model "${model.name}" has no chat template (tokenizer_config.json chat_template or chat_template.jinja): use phoenix-local run for plain text`, {
    model: model.name,
  });
}

/** The `--system` message, if given. */
export function systemMessage(ctx: CliContext): ChatMessage[] {
  return ctx.flags.system !== undefined ? [{ role: 'system', content: ctx.flags.system }] : [];
}

/** An engine that can chat (the binding engines all do). */
export function chatEngine(engine: InferenceEngine): Required<Pick<InferenceEngine, 'chatStream' | 'renderChat'>> {
  const { chatStream, renderChat } = engine;
  if (!chatStream || !renderChat) throw new PhoenixError('E_UNSUPPORTED_MODEL', `engine ${engine.name} does not support chat`);
  return { chatStream: chatStream.bind(engine), renderChat: renderChat.bind(engine) };
}

/** The stats line of a generation. */
export function statsLine(result: GenerationResult): string {
  const ttft = result.timings.timeToFirstTokenMs;
  return (
    `${result.tokensPerSecond.toFixed(1)} tokens/s — ${result.generatedTokens} generated, ${result.promptTokens} prompt tokens` +
    `${result.restoredTokens ? ` (after ${result.restoredTokens} restored)` : ''}, ` +
    `ttft ${ttft === null ? 'n/a' : `${ttft.toFixed(1)} ms`}, prefill ${result.timings.prefillMs.toFixed(1)} ms, decode ${result.timings.decodeMs.toFixed(1)} ms, ` +
    `finish ${result.finishReason}`
  );
}

/** A count as written in a header: exact up to 2^53, beyond that (a hostile or placeholder value) approximate. */
function tokenCount(n: number): string {
  return Number.isSafeInteger(n) ? String(n) : `about ${n.toPrecision(4)}`;
}

/** `score <model> --ids … | --text …`: log-probs and perplexity; `--json`: ids and every position's logits. */
export async function scoreCommand(ctx: CliContext, modelArg: string | undefined, rest: string[]): Promise<number> {
  const { flags } = ctx;
  if (flags.text !== undefined && rest.length > 0) throw new PhoenixError('E_INVALID_OPTION', 'give the text as --text or as an argument, not both', { usage: true });
  const text = flags.text ?? (rest.length > 0 ? rest.join(' ') : undefined);
  if (modelArg === undefined) throw new PhoenixError('E_INVALID_OPTION', 'missing <model> (a name in the models dir or a path to a model folder)', { usage: true });
  if ((flags.ids === undefined) === (text === undefined)) {
    throw new PhoenixError('E_INVALID_OPTION', 'score needs exactly one of --ids 1,2,3 or --text "…"', { usage: true });
  }
  if (text === '') throw new PhoenixError('E_INVALID_OPTION', 'score needs a non-empty text', { option: 'text', usage: true });
  const input: GenerationInput = flags.ids !== undefined ? { ids: idsFlag(flags.ids) } : { text: text as string };
  const model = await ctx.load(modelArg);
  const scored = await ctx.manager.engineFor(model).score(model, input, { includeLogits: flags.json === true });
  if (flags.json) {
    // Row by row: a long sequence × a large vocabulary is too big for one JSON.stringify. Each row
    // waits for the last to drain: a pipe (`| jq`) takes writes asynchronously, and 600 rows of a 49k
    // vocabulary queued 1.5 GB of text in memory.
    ctx.io.stdout.write(`{"ids":${JSON.stringify(scored.ids)},"logits":[`);
    for (const [i, row] of (scored.logits ?? []).entries()) {
      ctx.io.stdout.write(`${i ? ',' : ''}${JSON.stringify(Array.from(row))}`);
      await ctx.io.stdout.drained?.();
    }
    ctx.io.stdout.write(']}\n');
    return 0;
  }
  ctx.io.stdout.write(`${scored.ids.length} tokens, vocabulary ${scored.vocabSize}\n`);
  scored.ids.forEach((id, i) => {
    const best = scored.nextArgmax[i] as number;
    const lp = i > 0 ? (scored.tokenLogprobs[i - 1] as number).toFixed(4) : '—';
    ctx.io.stdout.write(`${String(i).padStart(4)}  id ${String(id).padStart(6)}  logprob ${lp.padStart(9)}  next argmax ${best}\n`);
  });
  ctx.io.stdout.write(`perplexity ${scored.perplexity === null ? 'n/a (single token)' : scored.perplexity.toFixed(4)}\n`);
  return 0;
}

/** Option values out of range are usage errors (exit 2), found by the library before a model loads. */
export async function checkOptionsBeforeLoading(ctx: CliContext, options: GenerationOptions): Promise<void> {
  try {
    await ctx.anyEngine.checkOptions(options);
  } catch (thrown) {
    throw usage(thrown);
  }
}

/** Runs a check whose `E_INVALID_OPTION` is a usage error (exit 2). */
function asUsageError(check: () => unknown): void {
  try {
    check();
  } catch (thrown) {
    throw usage(thrown);
  }
}

function usage(thrown: unknown): PhoenixError {
  const error = toPhoenixError(thrown);
  return error.code === 'E_INVALID_OPTION' ? new PhoenixError(error.code, error.message, { ...error.details, usage: true }) : error;
}
