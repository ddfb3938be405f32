/**
 * Entry point of the `phoenix-local` command.
 */
import { once } from 'node:events';
import { readFileSync } from 'node:fs';

import { toPhoenixError } from '../binding/errors.js';
import { checkFlagsFor, checkPositionals, inFlagTerms, parseCommandLine } from './args.js';
import { chatCommand } from './chat.js';
import { infoCommand, listCommand, runCommand, scoreCommand } from './commands.js';
import { CliContext, type CliIO } from './context.js';
import { printable } from './printable.js';
import { workerCommand } from './worker.js';
import { commandUsage, isCommand, USAGE } from './usage.js';

// `phoenix-local … | head`: a closed pipe ends the output quietly instead of crashing.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(0);
  // A full disk (`> /dev/full`), a revoked terminal: said as every other failure, not a stack trace.
  process.stderr.write(`phoenix-local: E_INTERNAL: cannot write the output to stdout (${error.code ?? error.message})\n`);
  process.exit(1);
});

const defaultIO: CliIO = {
  stdout: {
    write: (text) => void process.stdout.write(text),
    drained: () => (process.stdout.writableNeedDrain ? once(process.stdout, 'drain').then(() => undefined) : Promise.resolve()),
  },
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
 * 0 success, 1 runtime error, 2 usage error, 130 interrupted (Ctrl-C in `run`, or at the `chat` prompt).
 */
export async function main(argv: string[], io: CliIO = defaultIO): Promise<number> {
  let ctx: CliContext | undefined;
  try {
    const { command, positionals, flags } = parseCommandLine(argv);
    if (flags.version) {
      io.stdout.write(`phoenix-local ${packageVersion()}\n`);
      return 0;
    }
    if (command === 'help') {
      const topic = positionals[0];
      io.stdout.write(isCommand(topic) ? commandUsage(topic) : USAGE);
      return 0;
    }
    if (command === undefined) {
      (flags.help ? io.stdout : io.stderr).write(USAGE);
      return flags.help ? 0 : 2;
    }
    if (!isCommand(command)) {
      io.stderr.write(`phoenix-local: E_INVALID_OPTION: unknown command ${JSON.stringify(command)}\n\n${USAGE}`);
      return 2;
    }
    if (flags.help) {
      io.stdout.write(commandUsage(command));
      return 0;
    }
    // Usage errors are found here, before any model folder is read or loaded.
    checkFlagsFor(command, flags);
    ctx = new CliContext(flags, io);
    const [model, ...rest] = positionals;
    switch (command) {
      case 'list':
        checkPositionals(command, positionals, 0);
        return await listCommand(ctx);
      case 'info':
        checkPositionals(command, positionals, 1);
        return await infoCommand(ctx, model);
      case 'run':
        return await runCommand(ctx, model, rest);
      case 'chat':
        checkPositionals(command, positionals, 1);
        return await chatCommand(ctx, model);
      case 'worker':
        checkPositionals(command, positionals, 0);
        return await workerCommand(ctx, flags);
      default:
        return await scoreCommand(ctx, model, rest);
    }
  } catch (thrown) {
    const error = toPhoenixError(thrown);
    const message = inFlagTerms(error.message);
    io.stderr.write(`phoenix-local: ${error.code}: ${printable(message.text)}\n`);
    // A value the library refuses for one of our flags is a usage error, wherever it was found.
    const flagRefused = error.code === 'E_INVALID_OPTION' && message.flags.length > 0;
    return error.details.usage || flagRefused ? 2 : 1;
  } finally {
    ctx?.manager.dispose();
  }
}
