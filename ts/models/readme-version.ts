/**
 * The version a model's README.md states (`version: 1.2`, `**Version**: v3`, `- version = 2`).
 * A README is untrusted text: it is scanned line by line in linear time (no backtracking regex over
 * the whole text) and only its first {@link README_SCAN_BYTES} bytes are looked at.
 */

/** Bytes of a README examined for a version line. */
export const README_SCAN_BYTES = 64 * 1024;

const LEADING = new Set([' ', '\t', '\r', '*', '_', '-']);
const EMPHASIS = new Set(['*', '_']);
const SPACE = new Set([' ', '\t', '\r']);

function isVersionChar(c: string): boolean {
  return /^[\w.+-]$/.test(c);
}

/** The version on one line, if the line is a version line. */
function versionOnLine(line: string): string | undefined {
  let i = 0;
  while (i < line.length && LEADING.has(line[i] as string)) i++;
  if (line.slice(i, i + 7).toLowerCase() !== 'version') return undefined;
  i += 7;
  while (i < line.length && EMPHASIS.has(line[i] as string)) i++;
  while (i < line.length && SPACE.has(line[i] as string)) i++;
  if (line[i] !== ':' && line[i] !== '=') return undefined;
  i++;
  while (i < line.length && SPACE.has(line[i] as string)) i++;
  if (line[i] === '`') i++;
  if (line[i] === 'v' || line[i] === 'V') i++;
  const start = i;
  if (!/^[0-9]$/.test(line[i] ?? '')) return undefined;
  while (i < line.length && isVersionChar(line[i] as string)) i++;
  return line.slice(start, i);
}

/** The first version line's version in `text` (only its first {@link README_SCAN_BYTES} characters). */
export function versionFromReadme(text: string): string | undefined {
  const scanned = text.length > README_SCAN_BYTES ? text.slice(0, README_SCAN_BYTES) : text;
  let start = 0;
  while (start <= scanned.length) {
    let end = scanned.indexOf('\n', start);
    if (end < 0) end = scanned.length;
    const version = versionOnLine(scanned.slice(start, end));
    if (version) return version;
    start = end + 1;
  }
  return undefined;
}
