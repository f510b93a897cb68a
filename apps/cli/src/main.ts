#!/usr/bin/env node
// `tdx-fleet`: the project's one executable (package.json `bin`). It only picks the command and
// hands it the rest of the arguments; each command parses its own options (sim with node:util
// parseArgs). The dispatch is a dozen lines by hand rather than a CLI library: the library would
// have to pass sim's options through untouched and would print its own error shapes, where ours
// keep one line on stderr and exit 2. Exit codes are the command's; 2 for bad arguments here.
import { readFileSync } from 'node:fs';
import { SIM_COMMAND_NAMES, runSim } from '../../sim/src/sim-command.js';
import { runExperimentCommand } from './experiment/experiment-command.js';

/** The commands, declared once: dispatch, usage and the error messages derive from them. */
const COMMANDS = {
  sim: {
    usage: 'sim <command> [options]',
    about: `the simulator on one host or an offline fleet: ${SIM_COMMAND_NAMES.join(', ')}`,
    run: (args: string[]) => Promise.resolve(runSim(args, 'tdx-fleet sim')),
  },
  experiment: {
    usage: 'experiment <run|list|show|schema|compare|concurrency|record|replay> [options]',
    about: 'load experiments on the offline engine or a live daemon, with reports',
    run: (args: string[]) => runExperimentCommand(args, 'tdx-fleet experiment'),
  },
} as const;

type CommandName = keyof typeof COMMANDS;

const COMMAND_NAMES = Object.keys(COMMANDS) as CommandName[];

const USAGE = `usage: tdx-fleet <command> [options]

commands:
${COMMAND_NAMES.map((name) => `  ${COMMANDS[name].usage}\n      ${COMMANDS[name].about}`).join('\n')}

options:
  -h, --help     this help (and \`tdx-fleet <command> --help\` for a command's)
  -V, --version  the package's version`;

/** Bad command-line input: one line on stderr, exit code 2. */
class UsageError extends Error {}

function isCommand(name: string): name is CommandName {
  return Object.hasOwn(COMMANDS, name);
}

/** The version in the package's package.json, found from this file in dist/apps/cli/src. */
function packageVersion(): string {
  const manifest = JSON.parse(
    readFileSync(new URL('../../../../package.json', import.meta.url), 'utf8'),
  ) as { version?: unknown };
  if (typeof manifest.version !== 'string') throw new Error('package.json has no version');
  return manifest.version;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  const names = COMMAND_NAMES.join(', ');
  switch (command) {
    case undefined:
      throw new UsageError(`missing command (${names}; try --help)`);
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(`${USAGE}\n`);
      return 0;
    case '--version':
    case '-V':
      process.stdout.write(`${packageVersion()}\n`);
      return 0;
    default:
      if (isCommand(command)) return await COMMANDS[command].run(rest);
      if (command.startsWith('-')) throw new UsageError(`unknown option "${command}" (try --help)`);
      throw new UsageError(`unknown command "${command}" (${names}; try --help)`);
  }
}

// Output piped into a reader that stops early (`| head`) ends the command quietly, as Unix tools do.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code !== 'EPIPE') throw error;
  process.exit(process.exitCode ?? 0);
});

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (error) {
  if (!(error instanceof UsageError)) throw error;
  process.stderr.write(`tdx-fleet: ${error.message}\n`);
  process.exitCode = 2;
}
