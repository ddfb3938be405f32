/**
 * Whether a model's files may have changed since they were hashed. Size and mtime alone are not
 * enough (`touch -d` restores an mtime); the change time cannot be set back and a replaced file gets
 * a new inode, so all four are compared — any difference means: hash again.
 */
import path from 'node:path';

import type { ModelMetadata, WeightFileInfo } from './metadata.js';

/** Whether a file's size, mtime, ctime and inode are those recorded (any unknown → it may have changed). */
export function sameIdentity(a: WeightFileInfo, b: WeightFileInfo): boolean {
  return a.sizeBytes === b.sizeBytes && a.mtimeMs === b.mtimeMs && a.ctimeMs !== undefined && a.ctimeMs === b.ctimeMs && a.ino !== undefined && a.ino === b.ino;
}

/** Whether two lists name the same files with the same identities, in order. */
export function sameStats(a: readonly WeightFileInfo[], b: readonly WeightFileInfo[]): boolean {
  return a.length === b.length && a.every((f, i) => f.name === b[i]?.name && sameIdentity(f, b[i] as WeightFileInfo));
}

/** The first side file (config, tokenizer, index) that appeared, disappeared or changed bytes since recorded. */
export function sideFileChange(recorded: readonly WeightFileInfo[], now: readonly WeightFileInfo[], recordedAtMs = Number.NaN): string | undefined {
  for (const file of now) {
    const was = recorded.find((f) => f.name === file.name);
    // A file the record does not list but whose inode changed last before the record was written was
    // already there, unread by the version that wrote it (e.g. `tokenizer_config.json` before chat
    // templates): adopted, not a change. ctime cannot be set back from user space, unlike mtime.
    if (!was && file.ctimeMs !== undefined && file.ctimeMs < recordedAtMs) continue;
    if (was?.sha256 !== file.sha256) return file.name;
  }
  return recorded.find((f) => !now.some((n) => n.name === f.name))?.name;
}

/** Every file a model was described from, with full paths, for the cheap re-stat of a cached model. */
export function filesOf(folder: string, metadata: ModelMetadata): { file: string; info: WeightFileInfo }[] {
  return [...metadata.weightFiles, ...(metadata.sideFiles ?? [])].map((info) => ({ file: path.join(folder, info.name), info }));
}

