// Types of scripts/pack-manifest.mjs (imported by test/package.test.ts).
export interface PackageManifest {
  name: string;
  version: string;
  main?: string;
  optionalDependencies?: Record<string, string>;
  [field: string]: unknown;
}
export interface PlatformPackage {
  dir: string;
  manifest: PackageManifest;
}
export function platformPackages(root: string): PlatformPackage[];
export function publishedManifest(main: PackageManifest, platforms: readonly PlatformPackage[]): PackageManifest & { optionalDependencies: Record<string, string> };
