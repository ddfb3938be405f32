/**
 * Command-line parsing (node:util parseArgs) and typed conversion of flag values.
 */
import { parseArgs } from 'node:util';

import { PhoenixError } from '../binding/errors.js';
import { nearest } from '../engines/known-keys.js';
import type { CommandName } from './usage.js';

/** Every flag the CLI knows; each command reads the ones it uses. */
const OPTIONS = {
  'models-dir': { type: 'string' },
  backend: { type: 'string' },
  threads: { type: 'string' },
  json: { type: 'boolean' },
  quiet: { type: 'boolean', short: 'q' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'v' },
  'no-load': { type: 'boolean' },
  'max-tokens': { type: 'string', short: 'n' },
  temperature: { type: 'string', short: 't' },
  'top-k': { type: 'string' },
  'top-p': { type: 'string' },
  'min-p': { type: 'string' },
  'repeat-penalty': { type: 'string' },
  seed: { type: 'string' },
  stop: { type: 'string', multiple: true },
  'save-state': { type: 'string' },
  state: { type: 'string' },
  ids: { type: 'string' },
  text: { type: 'string' },
  chat: { type: 'string' },
  system: { type: 'string' },
  verbose: { type: 'boolean' },
  'int8-prompt': { type: 'boolean' },
  'kv-cache': { type: 'string' },
  'no-mmap': { type: 'boolean' },
  redis: { type: 'string' },
  queue: { type: 'string' },
  concurrency: { type: 'string' },
  preload: { type: 'string' },
} as const;

export type ParsedFlags = ReturnType<typeof parse>['values'];
type FlagName = keyof typeof OPTIONS;

export interface ParsedCommandLine {
  command: string | undefined;
  positionals: string[];
  flags: ParsedFlags;
}

/** Flags every command accepts. */
const GLOBAL_FLAGS: readonly FlagName[] = ['models-dir', 'backend', 'quiet', 'help', 'version'];

/** Flags each command reads besides the global ones; any other flag is a usage error. */
const COMMAND_FLAGS: Record<CommandName, readonly FlagName[]> = {
  list: ['json'],
  info: ['json', 'no-load', 'threads', 'kv-cache', 'no-mmap'],
  run: ['threads', 'max-tokens', 'temperature', 'top-k', 'top-p', 'min-p', 'repeat-penalty', 'seed', 'stop', 'save-state', 'state', 'ids', 'chat', 'system', 'verbose', 'int8-prompt', 'kv-cache', 'no-mmap'],
  chat: ['threads', 'max-tokens', 'temperature', 'top-k', 'top-p', 'min-p', 'repeat-penalty', 'seed', 'stop', 'system', 'verbose', 'int8-prompt', 'kv-cache', 'no-mmap'],
  score: ['threads', 'ids', 'text', 'json', 'kv-cache', 'no-mmap'],
  worker: ['threads', 'redis', 'queue', 'concurrency', 'preload', 'kv-cache', 'no-mmap'],
};

/** The library option each flag sets (`generationOptions`, the engines' `kvCache`), for messages. */
const OPTION_FLAGS: Readonly<Record<string, FlagName>> = {
  maxTokens: 'max-tokens',
  temperature: 'temperature',
  topK: 'top-k',
  topP: 'top-p',
  minP: 'min-p',
  repeatPenalty: 'repeat-penalty',
  seed: 'seed',
  stop: 'stop',
  int8Prompt: 'int8-prompt',
  kvCache: 'kv-cache',
};

/**
 * A library message as a command-line user reads it: "option `maxTokens` must be…" becomes "--max-tokens
 * must be…", "the `kvCache` load option" "the --kv-cache flag"; other text is kept. `flags` lists the
 * flags it named (a refused value of one of them is a usage error).
 */
export function inFlagTerms(message: string): { text: string; flags: FlagName[] } {
  const flags: FlagName[] = [];
  const flagOf = (option: string): FlagName | undefined => {
    if (!Object.hasOwn(OPTION_FLAGS, option)) return undefined;
    const flag = OPTION_FLAGS[option]!;
    flags.push(flag);
    return flag;
  };
  const text = message
    .replace(/`([A-Za-z0-9]+)` load option/g, (whole, option: string) => {
      const flag = flagOf(option);
      return flag ? `--${flag} flag` : whole;
    })
    .replace(/(?:\b\w+: )?option `([A-Za-z0-9]+)`/g, (whole, option: string) => {
      const flag = flagOf(option);
      return flag ? `--${flag}` : whole;
    })
    // The core's own wording: "maxTokens: 1 token of context plus maxTokens 9000 exceed…".
    .replace(/^([A-Za-z0-9]+): /, (whole, option: string) => {
      const flag = flagOf(option);
      return flag ? `--${flag}: ` : whole;
    })
    .replace(/\b([A-Za-z0-9]+) (?=-?\d)/g, (whole, option: string) => {
      const flag = Object.hasOwn(OPTION_FLAGS, option) ? flagOf(option) : undefined;
      return flag ? `--${flag} ` : whole;
    });
  return { text, flags };
}

/** Whether `command` reads `flag` (its help lists only those). */
export function commandTakes(command: CommandName, flag: FlagName): boolean {
  return GLOBAL_FLAGS.includes(flag) || COMMAND_FLAGS[command].includes(flag);
}

function parse(argv: string[]) {
  return parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
}

const SHORT_TO_LONG = new Map<string, FlagName>(
  Object.entries(OPTIONS).flatMap(([name, spec]) => ('short' in spec ? [[`-${spec.short}`, name as FlagName] as const] : [])),
);

/** The name of a flag that takes a value (`--temperature`, `-t`), else undefined. */
function valueFlag(arg: string): FlagName | undefined {
  const name = arg.startsWith('--') ? arg.slice(2) : SHORT_TO_LONG.get(arg);
  return name !== undefined && Object.hasOwn(OPTIONS, name) && OPTIONS[name as FlagName].type === 'string' ? (name as FlagName) : undefined;
}

/** Whether `arg` is one of our flags (so it cannot be the value of the flag before it). */
function isKnownFlag(arg: string): boolean {
  if (SHORT_TO_LONG.has(arg)) return true;
  return arg.startsWith('--') && Object.hasOwn(OPTIONS, arg.slice(2).split('=')[0] as string);
}

/**
 * `--temperature -1` → `--temperature=-1`: a flag that takes a value takes the next argument, as
 * getopt does, so negative numbers reach the library's range checks (parseArgs alone refuses any value
 * starting with a dash). A missing value, or one of our flags in its place, is a usage error.
 */
function attachValues(argv: string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === '--') {
      out.push(...argv.slice(i));
      break;
    }
    const name = valueFlag(arg);
    if (name === undefined) {
      out.push(arg);
      continue;
    }
    const next = argv[i + 1];
    if (next === undefined || next === '--' || isKnownFlag(next)) {
      throw new PhoenixError('E_INVALID_OPTION', `${arg} needs a value`, { option: name, usage: true });
    }
    out.push(`--${name}=${next}`);
    i++;
  }
  return out;
}

/** Parses argv (without `node` and the script). Unknown flags, missing values → `E_INVALID_OPTION` (usage). */
export function parseCommandLine(argv: string[]): ParsedCommandLine {
  const args = attachValues(argv);
  try {
    const { values, positionals } = parse(args);
    const [command, ...rest] = positionals;
    return { command, positionals: rest, flags: values };
  } catch (error) {
    throw new PhoenixError('E_INVALID_OPTION', parseErrorMessage(error as Error & { code?: string }), { usage: true });
  }
}

/** parseArgs' refusal in this CLI's words: the nearest flag for a misspelt one. */
function parseErrorMessage(error: Error & { code?: string }): string {
  const unknown = error.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' ? /^Unknown option '([^']*)'/.exec(error.message)?.[1] : undefined;
  if (unknown === undefined) return error.message;
  const near = unknown.startsWith('--') ? nearest(unknown.slice(2), Object.keys(OPTIONS)) : undefined;
  if (near !== undefined) return `unknown flag ${unknown} (did you mean --${near}?)`;
  return `unknown flag ${unknown} (see phoenix-local --help; a prompt that starts with "-" goes after "--": phoenix-local run <model> -- "-5 degrees")`;
}

/** Refuses flags `command` does not read (e.g. `score --temperature`), which would be silently ignored. */
export function checkFlagsFor(command: CommandName, flags: ParsedFlags): void {
  const allowed = new Set<string>([...GLOBAL_FLAGS, ...COMMAND_FLAGS[command]]);
  const stray = Object.keys(flags).filter((name) => !allowed.has(name));
  if (stray.length > 0) {
    throw new PhoenixError('E_INVALID_OPTION', `${command} does not take ${stray.map((f) => `--${f}`).join(', ')} (see phoenix-local ${command} --help)`, {
      option: stray[0],
      usage: true,
    });
  }
}

/** Refuses positional arguments beyond the `max` a command takes. */
export function checkPositionals(command: CommandName, positionals: string[], max: number): void {
  if (positionals.length > max) {
    throw new PhoenixError('E_INVALID_OPTION', `${command} takes ${max === 0 ? 'no arguments' : `at most ${max} argument${max > 1 ? 's' : ''}`}, got ${JSON.stringify(positionals[max])} too`, {
      usage: true,
    });
  }
}

/** A decimal number, optionally signed, with an optional fraction and exponent (no hex, no Infinity). */
const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

/**
 * A numeric flag, or `undefined` when absent. Bad syntax → `E_INVALID_OPTION` naming the flag (a usage
 * error); any well-formed number, negative included, goes on to the library, which owns the ranges.
 */
export function numberFlag(flags: ParsedFlags, name: keyof ParsedFlags): number | undefined {
  const value = flags[name];
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || !DECIMAL.test(value.trim())) {
    throw new PhoenixError('E_INVALID_OPTION', `--${name} must be a number, got ${JSON.stringify(value)}`, { option: name, usage: true });
  }
  return Number(value);
}

/** A flag that counts something: a whole number ≥ 0, else a usage error quoting what was typed. */
export function countFlag(flags: ParsedFlags, name: keyof ParsedFlags): number | undefined {
  const value = numberFlag(flags, name);
  if (value !== undefined && (!Number.isSafeInteger(value) || value < 0)) {
    throw new PhoenixError('E_INVALID_OPTION', `--${name} must be a whole number ≥ 0, got ${JSON.stringify(flags[name])}`, { option: name, usage: true });
  }
  return value;
}

/** `--ids 1,2,3` → `[1, 2, 3]`. */
export function idsFlag(value: string): number[] {
  // Commas and/or spaces between ids; an empty entry (`1,,2`, a trailing comma) is a typo, not skipped.
  const trimmed = value.trim();
  const parts = trimmed === '' ? [] : trimmed.split(/\s*,\s*|\s+/);
  const ids = parts.map(Number);
  const bad = parts.find((part, i) => part === '' || !Number.isInteger(ids[i]) || (ids[i] as number) < 0);
  if (parts.length === 0 || bad !== undefined) {
    throw new PhoenixError('E_INVALID_OPTION', `--ids must be comma-separated non-negative integers, got ${JSON.stringify(value)}`, { option: 'ids', usage: true });
  }
  return ids;
}
