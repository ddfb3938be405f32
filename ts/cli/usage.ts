/**
 * Help texts: the global usage and one per command (`phoenix-local <command> --help`).
 */
import { commandTakes } from './args.js';

export const COMMANDS = ['list', 'info', 'run', 'chat', 'score', 'worker'] as const;
export type CommandName = (typeof COMMANDS)[number];

export function isCommand(name: string | undefined): name is CommandName {
  return (COMMANDS as readonly (string | undefined)[]).includes(name);
}

const THREADS_OPTION = '  --threads <n>                worker threads of the core (0 = all cores; not for list)\n';

/** The options every command takes; `--threads` only where it means something (not `list`). */
function globalOptions(threads: boolean): string {
  return `Global options:
  --models-dir <dir>           models dir (default: $PHOENIX_MODELS_DIR, else ./models, else the
                               package's bundled models)
  --backend native|wasm|auto   force a binding backend (default: $PHOENIX_BACKEND, else auto: native, then WASM)
${threads ? THREADS_OPTION : ''}  -q, --quiet                  no progress on stderr
  -h, --help    -v, --version`;
}

const MODEL_ARG = '<model> is a name in the models dir, or a path to a model folder or a .gguf file.';

const EXIT_STATUS = 'Exit status: 0 success, 1 runtime error, 2 usage error, 130 interrupted (Ctrl-C in run or at the chat prompt). Errors print "phoenix-local: E_CODE: message" on stderr.';

export const USAGE = `Usage: phoenix-local <command> [options]

Commands:
  list                         models in the models dir (name, type, format, size, status)
  info <model>                 metadata, architecture, performance profile, backend chosen and why
  run <model> "<prompt>"       generate: text streams to stdout, stats to stderr
  run <model> --chat "<question>"
                               the assistant's answer, through the model's chat template
  chat <model>                 an interactive conversation (/reset, /exit; Ctrl-C stops an answer)
  score <model> (--ids 1,2,3 | --text "…" | "<text>") [--json]
                               next-token logits of every position (--json: {"ids":[…],"logits":[[…],…]})
  worker --redis <url>         serve a queue of pipeline requests (BullMQ on Redis) with these models

${MODEL_ARG}
"phoenix-local <command> --help" describes one command.

${globalOptions(true)}

${EXIT_STATUS}
`;

const COMMAND_USAGE: Record<CommandName, string> = {
  worker: `Usage: phoenix-local worker --redis <url> [--queue <name>] [--models-dir <dir>] [--concurrency <n>] [--preload <a,b>]

Takes requests from a BullMQ queue on Redis (what LocalAIPipeline({ queue: { redis, name } }) sends) and
runs them through a pipeline over this models dir: same model selection, modes and deadlines. Redis is the
only host contacted. SIGTERM or SIGINT: stop taking jobs, finish the active ones, exit 0.

Options:
  --redis <url>                redis://host:port of the queue (required)
  --queue <name>               queue name (default phoenix)
  --concurrency <n>            jobs run at once (default 1)
  --preload <a,b>              models to load before taking jobs; jobs naming a model go to a worker
                               that holds it when one is free within 2 s
  --kv-cache f32|f16           KV cache type of the attention models it loads (default f32)
  --no-mmap                    read the weights into memory instead of mapping them (native; as llama.cpp:
                               a weight file overwritten in place then cannot crash the process)`,
  list: `Usage: phoenix-local list [--json]

Lists the models in the models dir: name, type, format, size, status, version, sha256.
Fails (exit 1) when the models dir does not exist.

Options:
  --json                       the metadata of every model as JSON`,
  info: `Usage: phoenix-local info <model> [--json] [--no-load]

Prints a model's metadata, its architecture and measured performance (after loading it), and the
backend chosen and why. ${MODEL_ARG}

Options:
  --json                       machine-readable output
  --no-load                    do not load the model (metadata only)
  --kv-cache f32|f16           load an attention model with this KV cache type (default f32)
  --no-mmap                    read the weights into memory instead of mapping them (native; as llama.cpp:
                               a weight file overwritten in place then cannot crash the process)`,
  run: `Usage: phoenix-local run <model> "<prompt>" [options]
       phoenix-local run <model> --ids 1,2,3 [options]
       phoenix-local run <model> --state <file> ["<more prompt>"] [options]

Generates text: it streams to stdout, the stats line goes to stderr. ${MODEL_ARG}
Out-of-range values (e.g. --temperature -1) are refused by the library with E_INVALID_OPTION.
A prompt that starts with "-" goes after "--": phoenix-local run <model> -n 20 -- "-5 degrees and falling"

Options:
  -n, --max-tokens <n>         most tokens to generate (default 256)
  -t, --temperature <t>        0 = greedy (the default)
  --top-k <k>  --top-p <p>  --min-p <p>  --repeat-penalty <r>  --seed <n>
  --stop <text>                stop before this text (repeatable)
  --save-state <file>          write the state after prompt + output (the folder must exist)
  --state <file>               continue from a saved state (the prompt may then be empty)
  --ids 1,2,3                  prompt as token ids instead of text
  --chat "<question>"          ask as one user message, rendered by the model's chat template
  --system "<text>"            with --chat: a system message before the question
  --verbose                    with --chat: print the rendered prompt (JSON string) on stderr
  --int8-prompt                quantized (GGUF) weights: process the prompt with 8-bit activations as
                               llama.cpp does (faster; logits move slightly)
  --kv-cache f32|f16           what an attention model's KV cache holds (default f32; f16, as llama.cpp,
                               halves its memory and speeds up long-context decode; logits move slightly)
  --no-mmap                    read the weights into memory instead of mapping them (native; as llama.cpp:
                               a weight file overwritten in place then cannot crash the process)`,
  chat: `Usage: phoenix-local chat <model> [options]

An interactive conversation with an instruct model, through its chat template. ${MODEL_ARG}
Type a message and Enter; the answer streams back. The conversation is kept until /reset.
  /reset                       forget the conversation (the system message stays)
  /exit                        quit (so do Ctrl-D and Ctrl-C at the prompt)
  Ctrl-C                       while an answer streams: stop that answer, keep chatting

Options:
  --system "<text>"            a system message opening the conversation
  -n, --max-tokens <n>         most tokens per answer (default: as much as the context holds)
  -t, --temperature <t>        0 = greedy (the default)
  --top-k <k>  --top-p <p>  --min-p <p>  --repeat-penalty <r>  --seed <n>
  --stop <text>                end an answer before this text (repeatable)
  --verbose                    before each answer the rendered prompt (JSON string), after it the stats, on stderr
  --int8-prompt                quantized (GGUF) weights: process each turn with 8-bit activations (faster)
  --kv-cache f32|f16           what an attention model's KV cache holds (default f32; f16, as llama.cpp,
                               halves its memory and speeds up long-context decode; logits move slightly)
  --no-mmap                    read the weights into memory instead of mapping them (native; as llama.cpp:
                               a weight file overwritten in place then cannot crash the process)`,
  score: `Usage: phoenix-local score <model> (--ids 1,2,3 | --text "…") [--json]
       phoenix-local score <model> "<text>" [--json]

Prints the next-token logits of every position: per position the log-probability of the next
token and the argmax, then the perplexity. ${MODEL_ARG}

Options:
  --ids 1,2,3                  the sequence as token ids
  --text "…"                   the sequence as text (tokenized with the model's tokenizer); the text may
                               also follow <model> as an argument
  --json                       {"ids":[…],"logits":[[…],…]}: every position, every vocabulary column
  --kv-cache f32|f16           what an attention model's KV cache holds (default f32; f16, as llama.cpp,
                               halves its memory and speeds up long-context decode; logits move slightly)
  --no-mmap                    read the weights into memory instead of mapping them (native; as llama.cpp:
                               a weight file overwritten in place then cannot crash the process)`,
};

/** The help of one command, with the global options and exit statuses. */
export function commandUsage(command: CommandName): string {
  return `${COMMAND_USAGE[command]}\n\n${globalOptions(commandTakes(command, 'threads'))}\n\n${EXIT_STATUS}\n`;
}
