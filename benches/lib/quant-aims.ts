/**
 * The aims of the quantized rows (issue 11), phoenix-local native against the faster llama.cpp build on the
 * same .gguf file and thread count:
 * - decode >= 1.2x llama.cpp; where that would ask for more than 85 % of the machine's measured read
 *   bandwidth (llama.cpp already streams near the limit), the aim is that 85 % instead: the decode rate at
 *   which phoenix's own weight bytes per token make 85 % of the bandwidth measured at that thread count.
 *   Weights that fit in the last-level cache have no DRAM limit, so for them the aim stays 1.2x;
 * - prefill >= 2x llama.cpp, with phoenix's default prompt (f32 activations) and with `int8Prompt` (8-bit
 *   activations, the arithmetic llama.cpp's prompt uses), each judged.
 */
import type { ResultRow } from './report.js';
import { round } from './stats.js';

export const QUANT_TARGETS = { decode_vs_llama_cpp: 1.2, decode_bandwidth_share: 0.85, prefill_vs_llama_cpp: 2.0 } as const;

export interface QuantAim {
  model: string;
  dtype: string;
  threads: number;
  decode: {
    phoenix_tps: number;
    llama_cpp_tps: number;
    /** The llama.cpp build compared against (the faster decode). */
    llama_cpp_backend: string;
    ratio: number;
    /** llama.cpp's weight GB/s over the measured read bandwidth (null: unknown or weights in cache). */
    llama_cpp_bandwidth_share: number | null;
    phoenix_bandwidth_share: number | null;
    /** What the aim asks of phoenix's decode, tok/s, and why. */
    needed_tps: number;
    basis: 'vs_llama_cpp' | 'read_bandwidth';
    pass: boolean;
    /** The same with an f16 KV cache (`kvCache: 'f16'`, llama.cpp's cache type), when timed. */
    kvF16?: { phoenix_tps: number; ratio: number; pass: boolean };
  };
  prefill: {
    phoenix_tps: number;
    llama_cpp_tps: number;
    llama_cpp_backend: string;
    ratio: number;
    target: number;
    pass: boolean;
    /** The same with `int8Prompt`, when timed. */
    int8?: { phoenix_tps: number; ratio: number; pass: boolean };
  };
}

const fastest = (rows: readonly ResultRow[], key: 'prefill_tps' | 'decode_tps') =>
  rows.reduce<ResultRow | undefined>((best, r) => (best === undefined || r[key] > best[key] ? r : best), undefined);

/** The share of read bandwidth a row streams, where the DRAM limit applies to it. */
const dramShare = (r: ResultRow) => (r.weights_fit_in_cache ? null : r.bandwidth_share);

/** The aims of one quantized file at `threads`, or null without a phoenix row and a llama.cpp row. */
export function quantAim(rows: readonly ResultRow[], threads: number, dtype: string, model: string): QuantAim | null {
  const same = rows.filter((r) => r.model === model && r.dtype === dtype && r.threads === threads);
  const phoenix = same.find((r) => r.engine === 'phoenix-local' && r.backend === 'native');
  const llamas = same.filter((r) => r.engine === 'llama.cpp');
  const llamaDecode = fastest(llamas, 'decode_tps');
  const llamaPrefill = fastest(llamas, 'prefill_tps');
  if (!phoenix || !llamaDecode || !llamaPrefill) return null;

  let needed = QUANT_TARGETS.decode_vs_llama_cpp * llamaDecode.decode_tps;
  let basis: QuantAim['decode']['basis'] = 'vs_llama_cpp';
  const share = dramShare(phoenix);
  if (share !== null && share > 0) {
    // phoenix's decode rate at 85 % of the read bandwidth: its rate scaled by 0.85 / its share.
    const atLimit = (phoenix.decode_tps * QUANT_TARGETS.decode_bandwidth_share) / share;
    if (atLimit < needed) {
      needed = atLimit;
      basis = 'read_bandwidth';
    }
  }
  const prefillRatio = phoenix.prefill_tps / llamaPrefill.prefill_tps;
  const int8Ratio = phoenix.prefill_int8_tps === undefined ? undefined : phoenix.prefill_int8_tps / llamaPrefill.prefill_tps;
  return {
    model,
    dtype,
    threads,
    decode: {
      phoenix_tps: phoenix.decode_tps,
      llama_cpp_tps: llamaDecode.decode_tps,
      llama_cpp_backend: llamaDecode.backend,
      ratio: round(phoenix.decode_tps / llamaDecode.decode_tps, 3),
      llama_cpp_bandwidth_share: dramShare(llamaDecode),
      phoenix_bandwidth_share: share,
      needed_tps: round(needed, 2),
      basis,
      pass: phoenix.decode_tps >= needed,
      ...(phoenix.decode_kv_f16_tps === undefined
        ? {}
        : {
            kvF16: {
              phoenix_tps: phoenix.decode_kv_f16_tps,
              ratio: round(phoenix.decode_kv_f16_tps / llamaDecode.decode_tps, 3),
              pass: phoenix.decode_kv_f16_tps >= needed,
            },
          }),
    },
    prefill: {
      phoenix_tps: phoenix.prefill_tps,
      llama_cpp_tps: llamaPrefill.prefill_tps,
      llama_cpp_backend: llamaPrefill.backend,
      ratio: round(prefillRatio, 3),
      target: QUANT_TARGETS.prefill_vs_llama_cpp,
      pass: prefillRatio >= QUANT_TARGETS.prefill_vs_llama_cpp,
      ...(int8Ratio === undefined
        ? {}
        : { int8: { phoenix_tps: phoenix.prefill_int8_tps!, ratio: round(int8Ratio, 3), pass: int8Ratio >= QUANT_TARGETS.prefill_vs_llama_cpp } }),
    },
  };
}

const pct = (x: number | null) => (x === null ? 'n/a' : `${(x * 100).toFixed(0)}%`);
const verdict = (pass: boolean) => (pass ? 'HIT' : 'MISS');

/** One line per file and thread count: each aim, what it asks and whether it was hit. */
export function formatQuantAim(a: QuantAim): string {
  const d = a.decode;
  const aim =
    d.basis === 'vs_llama_cpp'
      ? `aim >= ${QUANT_TARGETS.decode_vs_llama_cpp}x = ${d.needed_tps.toFixed(1)} tok/s`
      : `aim >= ${pct(QUANT_TARGETS.decode_bandwidth_share)} of read BW = ${d.needed_tps.toFixed(1)} tok/s (llama.cpp streams ${pct(d.llama_cpp_bandwidth_share)} of it: ${QUANT_TARGETS.decode_vs_llama_cpp}x would exceed that)`;
  const p = a.prefill;
  return (
    `${a.model} ${a.dtype} @ ${a.threads} thread(s): decode ${d.phoenix_tps.toFixed(1)} vs ${d.llama_cpp_tps.toFixed(1)} tok/s (${d.llama_cpp_backend}) = ${d.ratio.toFixed(2)}x, ` +
    (d.phoenix_bandwidth_share === null ? '' : `phoenix at ${pct(d.phoenix_bandwidth_share)} of read BW; `) +
    `${aim}: ${verdict(d.pass)}` +
    (d.kvF16 ? `; kvCache f16 ${d.kvF16.phoenix_tps.toFixed(1)} tok/s = ${d.kvF16.ratio.toFixed(2)}x: ${verdict(d.kvF16.pass)}` : '') +
    '; ' +
    `prefill ${p.phoenix_tps.toFixed(1)} vs ${p.llama_cpp_tps.toFixed(1)} tok/s (${p.llama_cpp_backend}) = ${p.ratio.toFixed(2)}x (aim >= ${p.target}x): ${verdict(p.pass)}` +
    (p.int8 ? `; int8Prompt ${p.int8.phoenix_tps.toFixed(1)} tok/s = ${p.int8.ratio.toFixed(2)}x: ${verdict(p.int8.pass)}` : '')
  );
}
