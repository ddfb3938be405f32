/**
 * The benchmark prompt: fixed pseudo-random GPT-NeoX token ids (seeded), identical for every engine.
 * Ids avoid the special tokens (0, 1) and the whitespace tokens added at 50254+, so any tokenizer-
 * aware code path sees ordinary BPE tokens.
 */
const FIRST_ID = 2;
const END_ID = 50254;

/** mulberry32: a tiny, well-known 32-bit PRNG; enough for reproducible ids. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `count` ids in [2, min(vocabSize, 50254)): a smaller model (phoenix-ssm-lite: 4096) gets ids it has. */
export function promptIds(count: number, seed = 1234, vocabSize = END_ID): number[] {
  const end = Math.min(END_ID, vocabSize);
  if (end <= FIRST_ID) throw new Error(`promptIds: vocabulary of ${vocabSize} has no ordinary ids`);
  const next = mulberry32(seed);
  return Array.from({ length: count }, () => FIRST_ID + Math.floor(next() * (end - FIRST_ID)));
}
