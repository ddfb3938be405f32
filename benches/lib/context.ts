/**
 * Decode speed deep into a context: each engine generates `decode` greedy tokens after a prompt of
 * `contextTokens` tokens. A transformer's KV cache grows with the context, so each step reads more; an SSM's
 * state is constant, so its decode speed should not move; a hybrid pays only for its few attention layers.
 * Rows sit next to the same engine's decode speed after the short bench prompt (the main rows).
 */
import type { WorkerResult } from '../engines/types.js';
import { round } from './stats.js';
import type { ResultRow } from './report.js';

export interface ContextRow {
  model: string;
  /** transformer / ssm / hybrid. */
  kind: string;
  engine: string;
  backend: string;
  threads: number;
  context_tokens: number;
  /** Greedy tokens/s after the long prompt. */
  decode_tps: number;
  /** context_tokens / time to the first token (the prefill of the long prompt). */
  prefill_tps: number;
  /** The same engine's decode tokens/s after the short bench prompt, when it ran (main rows). */
  short_decode_tps: number | null;
  short_prompt_tokens: number | null;
  /** decode_tps / short_decode_tps: 1.0 = no slowdown with depth. */
  vs_short: number | null;
  /** phoenix-local over the faster llama.cpp build at this depth (phoenix rows only). */
  vs_llama_cpp: number | null;
}

/** One context row from a context-mode worker result, matched with the main row of the same engine. */
export function contextRow(
  result: WorkerResult,
  model: string,
  kind: string,
  contextTokens: number,
  mainRows: readonly ResultRow[],
): ContextRow {
  const g = result.generations[0];
  if (!g) throw new Error(`${result.engine} context run returned no generation`);
  const decode = (g.decodeSteps / g.decodeMs) * 1000;
  const short = mainRows.find(
    (r) => r.engine === result.engine && r.backend === result.backend && r.model === model && r.dtype === 'f32' && r.threads === result.threads,
  );
  return {
    model,
    kind,
    engine: result.engine,
    backend: result.backend,
    threads: result.threads,
    context_tokens: contextTokens,
    decode_tps: round(decode, 2),
    prefill_tps: round((contextTokens / g.ttftMs) * 1000, 1),
    short_decode_tps: short ? short.decode_tps : null,
    short_prompt_tokens: short ? short.detail.prompt_tokens : null,
    vs_short: short ? round(decode / short.decode_tps, 3) : null,
    vs_llama_cpp: null,
  };
}

/** Fills vs_llama_cpp of each phoenix row: over the faster llama.cpp build on the same model and threads. */
export function withLlamaRatios(rows: readonly ContextRow[]): ContextRow[] {
  return rows.map((row) => {
    if (row.engine !== 'phoenix-local') return row;
    const llama = rows.filter((r) => r.engine === 'llama.cpp' && r.model === row.model && r.threads === row.threads);
    const best = llama.reduce<ContextRow | undefined>((b, r) => (b === undefined || r.decode_tps > b.decode_tps ? r : b), undefined);
    return { ...row, vs_llama_cpp: best ? round(row.decode_tps / best.decode_tps, 3) : null };
  });
}

export function formatContextTable(rows: readonly ContextRow[]): string {
  const header = ['model', 'kind', 'engine', 'backend', 'threads', 'context', 'prefill tok/s', 'decode tok/s', 'short-prompt decode', 'vs short', 'vs llama.cpp'];
  const body = rows.map((r) => [
    r.model,
    r.kind,
    r.engine,
    r.backend,
    String(r.threads),
    String(r.context_tokens),
    r.prefill_tps.toFixed(1),
    r.decode_tps.toFixed(1),
    r.short_decode_tps === null ? 'n/a' : `${r.short_decode_tps.toFixed(1)} @ ${r.short_prompt_tokens}`,
    r.vs_short === null ? 'n/a' : `${r.vs_short.toFixed(2)}x`,
    r.vs_llama_cpp === null ? '' : `${r.vs_llama_cpp.toFixed(2)}x`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const pad = (cells: readonly string[]) => cells.map((c, i) => (i < 4 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [pad(header), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(pad)].join('\n');
}
