/**
 * Entry point of the `phoenix-local` command.
 */
import { readFileSync } from 'node:fs';

import { toPhoenixError } from '../binding/errors.js';
import { parseCommandLine, USAGE } from './args.js';
import { infoCommand, listCommand, runCommand, scoreCommand } from './commands.js';
import { CliContext, type CliIO } from './context.js';

// `phoenix-local … | head`: a closed pipe ends the output quietly instead of crashing.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(0);
  throw error;
});

const defaultIO: CliIO = {
  stdout: { write: (text) => void process.stdout.write(text) },
  stderr: { write: (text) => void process.stderr.write(text) },
};

function packageVersion(): string {
  try {
    return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}

/**
 * Runs the CLI with `argv` (arguments after the script name) and returns the exit status:
 * 0 success, 1 runtime error, 2 usage error (130 when `run` was interrupted).
 */
export async function main(argv: string[], io: CliIO = defaultIO): Promise<number> {
  let ctx: CliContext | undefined;
  try {
    const { command, positionals, flags } = parseCommandLine(argv);
    if (flags.version) {
      io.stdout.write(`phoenix-local ${packageVersion()}\n`);
      return 0;
    }
    if (flags.help || command === undefined || command === 'help') {
      (command === undefined && !flags.help ? io.stderr : io.stdout).write(USAGE);
      return command === undefined && !flags.help ? 2 : 0;
    }
    ctx = new CliContext(flags, io);
    const [model, ...rest] = positionals;
    switch (command) {
      case 'list':
        return await listCommand(ctx);
      case 'info':
        return await infoCommand(ctx, model);
      case 'run':
        return await runCommand(ctx, model, rest);
      case 'score':
        return await scoreCommand(ctx, model, rest);
      default:
        io.stderr.write(`phoenix-local: E_INVALID_OPTION: unknown command ${JSON.stringify(command)}\n\n${USAGE}`);
        return 2;
    }
  } catch (thrown) {
    const error = toPhoenixError(thrown);
    io.stderr.write(`phoenix-local: ${error.code}: ${error.message}\n`);
    return error.details.usage ? 2 : 1;
  } finally {
    ctx?.manager.dispose();
  }
}
