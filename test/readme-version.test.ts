/**
 * The README version parser: the line forms it accepts, and linear time on hostile text.
 */
import { describe, expect, it } from 'vitest';

import { README_SCAN_BYTES, versionFromReadme } from '../ts/models/readme-version.js';

describe('versionFromReadme', () => {
  it('finds the first version line in its usual spellings', () => {
    expect(versionFromReadme('# Model\n\nVersion: 3.0.1\n')).toBe('3.0.1');
    expect(versionFromReadme('**Version**: v4.2-beta\n')).toBe('4.2-beta');
    expect(versionFromReadme('- version = `2.0+cpu`\r\n')).toBe('2.0+cpu');
    expect(versionFromReadme('__VERSION__ :V7\nversion: 8')).toBe('7');
  });

  it('ignores lines that only mention a version', () => {
    expect(versionFromReadme('versions: 3\nthe version: 2\nversion: latest\n')).toBeUndefined();
    expect(versionFromReadme('')).toBeUndefined();
  });

  it('looks only at the first README_SCAN_BYTES characters', () => {
    expect(versionFromReadme(`${'x'.repeat(README_SCAN_BYTES)}\nversion: 1.0\n`)).toBeUndefined();
  });

  it('is linear on text built to make a backtracking regex quadratic', () => {
    for (const hostile of ['\n'.repeat(1 << 20), ' \t*_-'.repeat(1 << 18), 'version'.repeat(1 << 17), 'version   \n'.repeat(1 << 17)]) {
      const started = performance.now();
      versionFromReadme(hostile);
      expect(performance.now() - started).toBeLessThan(500);
    }
  });
});
