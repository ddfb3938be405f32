/**
 * Command-line parsing (node:util parseArgs) and typed conversion of flag values.
 */
import { parseArgs } from 'node:util';

import { PhoenixError } from '../binding/errors.js';

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
} as const;

export type ParsedFlags = ReturnType<typeof parse>['values'];

export interface ParsedCommandLine {
  command: string | undefined;
  positionals: string[];
  flags: ParsedFlags;
}

function parse(argv: string[]) {
  return parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
}

/** Parses argv (without `node` and the script). Unknown flags → `E_INVALID_OPTION`. */
export function parseCommandLine(argv: string[]): ParsedCommandLine {
  try {
    const { values, positionals } = parse(argv);
    const [command, ...rest] = positionals;
    return { command, positionals: rest, flags: values };
  } catch (error) {
    throw new PhoenixError('E_INVALID_OPTION', (error as Error).message, { usage: true });
  }
}

/** A numeric flag, or `undefined` when absent. Non-numbers → `E_INVALID_OPTION` naming the flag (ranges are the core's job). */
export function numberFlag(flags: ParsedFlags, name: keyof ParsedFlags): number | undefined {
  const value = flags[name];
  if (value === undefined) return undefined;
  const parsed = typeof value === 'string' && value.trim() !== '' ? Number(value) : Number.NaN;
  if (Number.isNaN(parsed)) throw new PhoenixError('E_INVALID_OPTION', `--${name} must be a number, got ${JSON.stringify(value)}`, { option: name, usage: true });
  return parsed;
}

/** `--ids 1,2,3` → `[1, 2, 3]`. */
export function idsFlag(value: string): number[] {
  const parts = value.split(/[\s,]+/).filter(Boolean);
  const ids = parts.map(Number);
  const bad = parts.find((_, i) => !Number.isInteger(ids[i]) || (ids[i] as number) < 0);
  if (parts.length === 0 || bad !== undefined) {
    throw new PhoenixError('E_INVALID_OPTION', `--ids must be comma-separated non-negative integers, got ${JSON.stringify(value)}`, { option: 'ids', usage: true });
  }
  return ids;
}

export const USAGE = `Usage: phoenix-local <command> [options]

Commands:
  list                         models in the models dir (name, type, format, size, status)
  info <model>                 metadata, architecture, performance profile, backend chosen and why
  run <model> "<prompt>"       generate: text streams to stdout, stats to stderr
  score <model> (--ids 1,2,3 | --text "…") [--json]
                               next-token logits of every position (--json: {"ids":[…],"logits":[[…],…]})

<model> is a folder name in the models dir, or a path to a model folder.

Global options:
  --models-dir <dir>           models dir (default: $PHOENIX_MODELS_DIR, else ./models)
  --backend native|wasm        force a binding backend (default: $PHOENIX_BACKEND, else auto)
  --threads <n>                worker threads of the core (0 = all cores)
  --json                       machine-readable output (list, info, score)
  -q, --quiet                  no progress on stderr
  -h, --help    -v, --version

run options:
  -n, --max-tokens <n>  -t, --temperature <t>  --top-k <k>  --top-p <p>  --min-p <p>
  --repeat-penalty <r>  --seed <n>  --stop <text> (repeatable)
  --save-state <file>          write the state after prompt + output
  --state <file>               continue from a saved state (the prompt may then be empty)
  --ids 1,2,3                  prompt as token ids instead of text

info options:
  --no-load                    do not load the model (metadata only)

Exit status: 0 success, 1 runtime error, 2 usage error. Errors print "phoenix-local: E_CODE: message" on stderr.
`;
