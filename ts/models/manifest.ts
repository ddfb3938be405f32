/**
 * The manifest `<modelsDir>/.phoenix-manifest.json`: recorded checksums (keyed by folder path, with
 * each covered file's size, times and inode) and measured performance profiles. When the file cannot
 * be written the manifest lives on in memory and says so through `warning`.
 *
 * Several processes may share one models dir: a save takes an exclusive lock file, re-reads the file,
 * merges in the entries this process changed, and replaces the file atomically through a temporary
 * file created exclusively under a random name (O_EXCL | O_NOFOLLOW: a planted file or symlink makes
 * the save fail, it is never written through).
 */
import { randomUUID } from 'node:crypto';
import { constants } from 'node:fs';
import { lstat, mkdir, open, rename, unlink } from 'node:fs/promises';
import path from 'node:path';

import { readRegularText, RegularFileError } from '../fs/regular-file.js';
import type { PerformanceProfile, WeightFileInfo } from './metadata.js';

/** What is remembered about one model folder. */
export interface ManifestEntry {
  /** Weight files with the size/times at which their sha256 was computed. */
  files: WeightFileInfo[];
  /** config.json, tokenizer.json, the shard index: digests recorded like the weights' (absent in old manifests). */
  sideFiles?: WeightFileInfo[];
  /** The trusted checksum of the weights (first seen, or explicitly accepted). */
  checksum: string;
  /** Measured for `checksum` on this machine. */
  performance?: PerformanceProfile;
  updatedAt: string;
}

interface ManifestFile {
  version: 1;
  models: Record<string, ManifestEntry>;
}

/** File name of the manifest inside a models dir. */
export const MANIFEST_FILE_NAME = '.phoenix-manifest.json';

/** A manifest bigger than this is not read (thousands of models fit in a few MB). */
export const MANIFEST_MAX_BYTES = 64 << 20;
/** How long a save waits for another process's lock before giving up (the manifest then stays in memory). */
const LOCK_WAIT_MS = 15_000;
/** A lock older than this is left over by a crashed process (a save takes milliseconds). */
const LOCK_STALE_MS = 30_000;
/** How far in the future a lock's mtime may lie (clock steps, coarse timestamps) and still be live. */
const LOCK_CLOCK_SKEW_MS = 5_000;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function isFileInfo(value: unknown): value is WeightFileInfo {
  const f = value as WeightFileInfo | null;
  return typeof f === 'object' && f !== null && typeof f.name === 'string' && typeof f.sha256 === 'string' && Number.isFinite(f.sizeBytes) && Number.isFinite(f.mtimeMs);
}

/** Whether `value` has the shape of an entry; anything else in the file (hand-edited, damaged) is dropped. */
function isEntry(value: unknown): value is ManifestEntry {
  const e = value as ManifestEntry | null;
  return (
    typeof e === 'object' &&
    e !== null &&
    typeof e.checksum === 'string' &&
    Array.isArray(e.files) &&
    e.files.every(isFileInfo) &&
    (e.sideFiles === undefined || (Array.isArray(e.sideFiles) && e.sideFiles.every(isFileInfo)))
  );
}

function parseManifest(text: string): ManifestFile | undefined {
  const parsed = JSON.parse(text) as Partial<ManifestFile> | null;
  if (parsed?.version !== 1 || !parsed.models || typeof parsed.models !== 'object' || Array.isArray(parsed.models)) return undefined;
  const models: Record<string, ManifestEntry> = Object.create(null) as Record<string, ManifestEntry>;
  for (const [folder, entry] of Object.entries(parsed.models)) if (isEntry(entry)) models[folder] = entry;
  return { version: 1, models };
}

/** The manifest on disk; `undefined` when absent. Throws for unreadable / malformed ones. */
async function readManifest(file: string): Promise<ManifestFile | undefined> {
  let text: string;
  try {
    text = await readRegularText(file, MANIFEST_MAX_BYTES);
  } catch (error) {
    if (error instanceof RegularFileError && error.problem === 'missing') return undefined;
    throw error;
  }
  const parsed = parseManifest(text);
  if (!parsed) throw new Error(`manifest ${file} has an unknown layout`);
  return parsed;
}

/** Whether the lock at `lock` was left by a dead process or is too old to be a live one. */
async function lockIsStale(lock: string): Promise<boolean> {
  const info = await lstat(lock).catch(() => undefined);
  if (!info) return false; // gone already: just retry
  const age = Date.now() - info.mtimeMs;
  // A lock "from the future" was not written by a save of this machine's clock (a planted one): stale.
  if (!info.isFile() || age > LOCK_STALE_MS || age < -LOCK_CLOCK_SKEW_MS) return true;
  const pid = Number.parseInt(await readRegularText(lock, 64).catch(() => ''), 10);
  if (!Number.isSafeInteger(pid) || pid <= 0) return Date.now() - info.mtimeMs > 1_000; // still being written, or junk
  try {
    process.kill(pid, 0);
    return false;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

/**
 * Runs `work` holding `<file>.lock` (created exclusively; stale locks of dead processes are removed),
 * waiting at most `waitMs` for another holder.
 */
async function withLock<T>(file: string, waitMs: number, work: () => Promise<T>): Promise<T> {
  const lock = `${file}.lock`;
  const deadline = Date.now() + waitMs;
  for (;;) {
    try {
      const handle = await open(lock, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
      try {
        await handle.writeFile(`${process.pid}\n`);
      } finally {
        await handle.close();
      }
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      if (await lockIsStale(lock)) {
        // A lock that cannot be removed (a folder planted there) would be waited on forever: give up now.
        const removed = await unlink(lock).then(() => true, (e: NodeJS.ErrnoException) => e.code === 'ENOENT');
        if (removed) continue;
        throw Object.assign(new Error(`lock ${lock} cannot be removed`), { code: 'ELOCKED' });
      }
      if (Date.now() >= deadline) throw Object.assign(new Error(`lock ${lock} is held`), { code: 'ELOCKED' });
      await sleep(5 + Math.random() * 20);
    }
  }
  try {
    return await work();
  } finally {
    await unlink(lock).catch(() => undefined);
  }
}

/** Writes `text` to `file` atomically: a fresh, exclusively created temp file beside it, then rename. */
async function replaceFile(file: string, text: string): Promise<void> {
  const temp = path.join(path.dirname(file), `.${path.basename(file)}.${randomUUID()}.tmp`);
  const handle = await open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o644);
  try {
    try {
      await handle.writeFile(text);
    } finally {
      await handle.close();
    }
    await rename(temp, file);
  } catch (error) {
    await unlink(temp).catch(() => undefined);
    throw error;
  }
}

/** The manifest file of a models dir, cached in memory; see the module comment. */
export class Manifest {
  readonly file: string;
  #data: ManifestFile = { version: 1, models: Object.create(null) as Record<string, ManifestEntry> };
  #warning: string | undefined;
  #saving: Promise<void> = Promise.resolve();
  /** Folders this process changed: merged into the file's current content on save, so managers sharing a dir do not erase each other's entries. */
  readonly #dirty = new Set<string>();
  /**
   * How long the next save waits for the lock. After one save gave up on a lock that never went away
   * (a live process holding it, or one planted), later saves only try once: otherwise every model of
   * a `list` would wait the full time again.
   */
  #lockWaitMs = LOCK_WAIT_MS;

  private constructor(file: string) {
    this.file = file;
  }

  /** Opens (or starts) the manifest at `file`. An unreadable or malformed file starts empty, with a warning. */
  static async open(file: string): Promise<Manifest> {
    const manifest = new Manifest(file);
    try {
      manifest.#data = (await readManifest(file)) ?? manifest.#data;
    } catch (error) {
      const why = error instanceof RegularFileError ? error.message : error instanceof SyntaxError ? 'not valid JSON' : (error as Error).message;
      manifest.#warning = `manifest ${file} could not be read (${why}); starting a new one`;
    }
    return manifest;
  }

  /** Set when the manifest could not be read or written (it is then kept in memory only). */
  get warning(): string | undefined {
    return this.#warning;
  }

  /** Whether the last save reached the disk. */
  get persistent(): boolean {
    return !this.#warning?.includes('in memory');
  }

  get(folder: string): ManifestEntry | undefined {
    return this.#data.models[folder];
  }

  /** Records `entry` for `folder` and writes the manifest (serialised; failures only set `warning`). */
  set(folder: string, entry: ManifestEntry): Promise<void> {
    this.#data.models[folder] = entry;
    this.#dirty.add(folder);
    return this.save();
  }

  /**
   * Drops the entries of models whose path no longer exists (a folder deleted, a `.gguf` named by path
   * and since removed): otherwise every model ever named, test dirs included, stayed recorded forever.
   */
  async #forgetGone(): Promise<void> {
    const models = this.#data.models;
    for (const key of Object.keys(models)) {
      const gone = await lstat(key).then(
        () => false,
        (error: NodeJS.ErrnoException) => error.code === 'ENOENT' || error.code === 'ENOTDIR',
      );
      if (gone) delete models[key];
    }
  }

  /** Writes the manifest atomically, merged with what other processes wrote meanwhile. Never throws. */
  save(): Promise<void> {
    this.#saving = this.#saving.then(async () => {
      try {
        await mkdir(path.dirname(this.file), { recursive: true });
        await withLock(this.file, this.#lockWaitMs, async () => {
          const onDisk = await readManifest(this.file).catch(() => undefined);
          if (onDisk) {
            const merged = onDisk.models;
            for (const key of this.#dirty) if (this.#data.models[key]) merged[key] = this.#data.models[key] as ManifestEntry;
            this.#data = { version: 1, models: merged };
          }
          await this.#forgetGone();
          await replaceFile(this.file, JSON.stringify(this.#data, null, 2) + '\n');
        });
        this.#lockWaitMs = LOCK_WAIT_MS;
        if (this.#warning?.includes('in memory')) this.#warning = undefined;
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code ?? (error as Error).message;
        if (code === 'ELOCKED') this.#lockWaitMs = 0;
        this.#warning = `manifest ${this.file} is not writable (${code}); checksums and profiles are kept in memory only`;
      }
    });
    return this.#saving;
  }
}
