/**
 * Text from a model folder (folder and file names, config fields, error messages that name them)
 * made safe for a terminal. A folder named `x\e[2J…` or `a\nfake-model  mamba  available` would
 * otherwise clear the screen, recolour it or forge rows of `list`; control characters and bidi
 * overrides are shown as `\u{…}` escapes instead. (Generated text is the model's output and is
 * written as it is; `--json` output is escaped by JSON itself.)
 */

/** C0 and C1 controls, DEL, and the bidirectional embeddings/overrides/isolates that reorder text. */
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/gu;

/** `text` with every control / bidi character replaced by a visible `\u{hex}` escape. */
export function printable(text: string): string {
  return text.replace(UNPRINTABLE, (c) => `\\u{${(c.codePointAt(0) as number).toString(16)}}`);
}
