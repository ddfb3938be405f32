// The manifests `npm run pack` publishes. The platform packages (npm/<platform>, napi-rs convention)
// become optionalDependencies of the main package only in its tarball, as `napi pre-publish` does:
// listed in the checked-in package.json they would be fetched (and 404) by every `npm ci` of this repo.
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';

const readJson = (file) => JSON.parse(readFileSync(file, 'utf8'));

/** The platform packages under `<root>/npm`: `{ dir, manifest }` each. */
export function platformPackages(root) {
  const npmDir = path.join(root, 'npm');
  return readdirSync(npmDir, { withFileTypes: true })
    .filter((entry) => entry.isDirectory())
    .map((entry) => ({ dir: path.join(npmDir, entry.name), manifest: readJson(path.join(npmDir, entry.name, 'package.json')) }))
    .sort((a, b) => a.manifest.name.localeCompare(b.manifest.name));
}

/**
 * The main package's manifest as published: every platform package as an optional dependency at the
 * main package's version. Throws when a platform package has another version (`npx napi version`
 * syncs them) or when its name does not follow `<main name>-<platform>`.
 */
export function publishedManifest(main, platforms) {
  const optionalDependencies = {};
  for (const { dir, manifest } of platforms) {
    if (!manifest.name.startsWith(`${main.name}-`)) {
      throw new Error(`${path.basename(dir)}: package name ${manifest.name} does not start with ${main.name}- (napi create-npm-dirs)`);
    }
    if (manifest.version !== main.version) {
      throw new Error(`npm/${path.basename(dir)}/package.json has version ${manifest.version}, the main package ${main.version}: run \`npx napi version\``);
    }
    optionalDependencies[manifest.name] = main.version;
  }
  // The repo's scripts (build, test, bench, the prepack guard) name files the tarball does not hold.
  const { scripts: _repoScripts, ...rest } = main;
  return { ...rest, optionalDependencies: { ...main.optionalDependencies, ...optionalDependencies } };
}
