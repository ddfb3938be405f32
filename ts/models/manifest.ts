/**
 * The manifest `<modelsDir>/.phoenix-manifest.json`: recorded checksums (keyed by folder path, with
 * each weight file's size and mtime) and measured performance profiles. When the file cannot be
 * written the manifest lives on in memory and says so through `warning`.
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';

import type { PerformanceProfile, WeightFileInfo } from './metadata.js';

/** What is remembered about one model folder. */
export interface ManifestEntry {
  /** Weight files with the size/mtime at which their sha256 was computed. */
  files: WeightFileInfo[];
  /** The trusted checksum (first seen, or explicitly accepted). */
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

/** The manifest file of a models dir, cached in memory; see the module comment. */
export class Manifest {
  readonly file: string;
  #data: ManifestFile = { version: 1, models: {} };
  #warning: string | undefined;
  #saving: Promise<void> = Promise.resolve();
  /** Folders this process changed: merged into the file's current content on save, so managers sharing a dir do not erase each other's entries. */
  readonly #dirty = new Set<string>();

  private constructor(file: string) {
    this.file = file;
  }

  /** Opens (or starts) the manifest at `file`. An unreadable or malformed file starts empty, with a warning. */
  static async open(file: string): Promise<Manifest> {
    const manifest = new Manifest(file);
    try {
      const parsed = JSON.parse(await readFile(file, 'utf8')) as Partial<ManifestFile>;
      if (parsed.version === 1 && parsed.models && typeof parsed.models === 'object') manifest.#data = parsed as ManifestFile;
      else manifest.#warning = `manifest ${file} has an unknown layout; starting a new one`;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT') manifest.#warning = `manifest ${file} could not be read (${code ?? (error as Error).message}); starting a new one`;
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

  /** Writes the manifest atomically (temp file + rename). Never throws. */
  save(): Promise<void> {
    this.#saving = this.#saving.then(async () => {
      const temp = `${this.file}.${process.pid}.tmp`;
      try {
        const onDisk = await readFile(this.file, 'utf8').then((text) => JSON.parse(text) as Partial<ManifestFile>, () => undefined);
        if (onDisk?.version === 1 && onDisk.models && typeof onDisk.models === 'object') {
          const merged = { ...onDisk.models };
          for (const key of this.#dirty) if (this.#data.models[key]) merged[key] = this.#data.models[key] as ManifestEntry;
          this.#data = { version: 1, models: merged };
        }
        await mkdir(path.dirname(this.file), { recursive: true });
        await writeFile(temp, JSON.stringify(this.#data, null, 2) + '\n');
        await rename(temp, this.file);
        if (this.#warning?.includes('in memory')) this.#warning = undefined;
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code ?? (error as Error).message;
        this.#warning = `manifest ${this.file} is not writable (${code}); checksums and profiles are kept in memory only`;
      }
    });
    return this.#saving;
  }
}
