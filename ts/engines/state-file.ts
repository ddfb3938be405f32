/**
 * Reads a state snapshot file (`--state`, `GenerationOptions.state` from disk) for a loaded model.
 *
 * A state file is untrusted: it may be a FIFO, `/dev/zero`, a huge file or a snapshot of another
 * model. It is opened through `ts/fs/regular-file.ts` (regular files only, `fstat` on the descriptor),
 * its fixed header is read, and the core says from that header and the model how long the snapshot
 * is (`model.snapshotLength`): exactly that many bytes are read, never more, and a file of another
 * length is refused. The checksum and the rest are verified by the core when the state is used.
 */
import { PhoenixError } from '../binding/errors.js';
import { openRegularFile, readRange, RegularFileError } from '../fs/regular-file.js';
import type { LoadedModel } from './types.js';

/**
 * The bytes of the snapshot in `path`, checked against `model` by the core. A path that is not a
 * readable regular file → `E_INVALID_OPTION`; a file that is not a snapshot this model can continue, or
 * of another length than its header announces → `E_STATE_MISMATCH`. `label` names the source in
 * messages (the CLI passes `--state`).
 */
export async function readStateFile(path: string, model: Pick<LoadedModel, 'info' | 'snapshotLength'>, label = 'state file'): Promise<Uint8Array> {
  if (typeof path !== 'string') throw new PhoenixError('E_INVALID_OPTION', `readStateFile: the ${label} path must be a string`, { option: 'state' });
  // The model bounds the read (its state size) and checks the header: a snapshot means nothing without it.
  if (typeof model?.snapshotLength !== 'function' || typeof model.info !== 'object') {
    throw new PhoenixError('E_INVALID_OPTION', 'readStateFile(path, model): give the loaded model the state belongs to', { option: 'model' });
  }
  let opened;
  try {
    opened = await openRegularFile(path);
  } catch (error) {
    if (error instanceof RegularFileError) {
      const why = error.problem === 'not-regular' ? 'not a regular file' : (error.errno ?? error.problem);
      throw new PhoenixError('E_INVALID_OPTION', `${label} ${path} cannot be read (${why})`, { option: 'state' });
    }
    throw error;
  }
  const { handle, stats } = opened;
  try {
    const headerBytes = model.info.snapshotHeaderBytes;
    const head = await readRange(handle, 0, headerBytes);
    const total = model.snapshotLength(head);
    if (stats.size !== total) {
      throw new PhoenixError('E_STATE_MISMATCH', `${label} ${path} is ${stats.size} bytes, but its snapshot header says ${total}`, { option: 'state' });
    }
    // One byte more than announced tells a file that grew after the fstat.
    const bytes = await readRange(handle, 0, total + 1);
    if (bytes.length !== total) {
      throw new PhoenixError('E_STATE_MISMATCH', `${label} ${path} changed size while being read (snapshot header says ${total} bytes)`, { option: 'state' });
    }
    return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  } finally {
    await handle.close().catch(() => undefined);
  }
}
