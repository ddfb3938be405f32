/**
 * Child process of the manifest concurrency test: describes the named models of a models dir (each
 * description records a checksum in the shared manifest), then prints how many it described.
 * Usage: node --import tsx test/manifest-writer.ts <startAtMs> <modelsDir> <name>...
 * All processes start describing at `startAtMs` (epoch ms), so their saves overlap.
 */
import { LocalModelManager } from '../ts/models/manager.js';

const [startAt, modelsDir, ...names] = process.argv.slice(2);
await new Promise((resolve) => setTimeout(resolve, Math.max(0, Number(startAt) - Date.now())));
let described = 0;
for (const name of names) {
  // One manager per model, as separate CLI runs would: each save carries just its own entry.
  const manager = new LocalModelManager({ modelsDir, measurePerformance: false });
  const metadata = await manager.getModelMetadata(name);
  if (metadata.status !== 'available') throw new Error(`${name}: ${metadata.status} ${metadata.error?.message ?? ''}`);
  const status = await manager.manifestStatus();
  if (!status.persistent) throw new Error(status.warning);
  described++;
}
console.log(described);
