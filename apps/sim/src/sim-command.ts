// The `sim` command: the simulator for people and scripts, run by `apps/sim/src/main.ts` (`npm run
// sim`) and by `tdx-fleet sim`. Exit codes: 0 done, 1 a plan the chosen kernel cannot run (or a
// failed script expectation), 2 bad arguments or input.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import {
  COST_MODELS,
  KERNEL_SWITCHES,
  KERNEL_SWITCH_NAMES,
  type KernelFeatures,
  type KernelSwitchName,
  isFlagSwitch,
} from '#tdx-sim';
import { type PlanRun, REBOOT_STRATEGIES, type RebootStrategy } from '#vmm';
import { runFleet } from '#fleet';
import { ScriptError, parseScript, runScript } from './exec-script.js';
import {
  BootFailedError,
  PlanRefusedError,
  outsideCalibratedRange,
  reclaimTable,
  rebootOnce,
  simulateReclaim,
} from './experiments.js';
import { FleetFileError, fleetInput, parseFleetText } from './fleet-file.js';
import {
  formatExec,
  formatFleet,
  formatReboot,
  formatReclaim,
  formatReclaimTable,
} from './format.js';

/** The option of a kernel switch: its name in kebab case (`terminateVm`: `terminate-vm`). */
function switchOption(name: KernelSwitchName): string {
  return name.replace(/[A-Z]/g, (letter) => `-${letter.toLowerCase()}`);
}

/** A kernel switch's option as usage shows it: a flag alone, a choice with its values. */
function switchUsage(name: KernelSwitchName): string {
  const values = KERNEL_SWITCHES[name].values.map(String).join('|');
  return isFlagSwitch(name) ? `[--${switchOption(name)}]` : `[--${switchOption(name)} ${values}]`;
}

const MODEL_VALUES = COST_MODELS.join('|');

/** One of sim's commands: its arguments as usage shows them (a line each), what it does, its run. */
interface SimCommand {
  readonly usage: readonly string[];
  readonly about: readonly string[];
  readonly run: (args: string[]) => number;
}

/** The commands, declared once: dispatch, usage and the error messages derive from them. */
const SIM_COMMANDS = {
  'reclaim-table': {
    usage: [`[--model ${MODEL_VALUES}] [--json]`],
    about: ["the seed's reclaim table beside the simulation of each row"],
    run: reclaimTableCommand,
  },
  reclaim: {
    usage: [`--vcpus N --memory-gib G [--model ${MODEL_VALUES}] [--json]`],
    about: ['reclaim seconds of one VM size, mainline path and terminate path'],
    run: reclaimCommand,
  },
  reboot: {
    usage: [
      `--strategy ${REBOOT_STRATEGIES.join('|')} --vcpus N --memory-gib G`,
      KERNEL_SWITCH_NAMES.map(switchUsage).join(' '),
      `[--model ${MODEL_VALUES}] [--host-memory-gib G] [--hkids N] [--other-vms N] [--preallocate]`,
      '[--json]',
    ],
    about: ['boot a VM, reboot it, print the step timeline and summary'],
    run: rebootCommand,
  },
  exec: {
    usage: ['FILE|- [--json]'],
    about: [
      'run a scripted sequence of calls against one simulated host (see README); - reads the',
      'script from standard input',
    ],
    run: execCommand,
  },
  fleet: {
    usage: ['FILE [--json]'],
    about: [
      'run a fleet (hosts, VMs, timed requests, batches, limits; JSON or YAML, see README) in the',
      "offline engine: one virtual clock, the daemon's rules; summary, or everything with --json",
    ],
    run: fleetCommand,
  },
} as const satisfies Record<string, SimCommand>;

type SimCommandName = keyof typeof SIM_COMMANDS;

/** The command names, in the order usage lists them. */
export const SIM_COMMAND_NAMES = Object.keys(SIM_COMMANDS) as SimCommandName[];

function isSimCommand(name: string): name is SimCommandName {
  return Object.hasOwn(SIM_COMMANDS, name);
}

/** A command's arguments after its name, continuation lines aligned under the first. */
function commandLines(prefix: string, name: SimCommandName): string {
  const [first, ...more] = SIM_COMMANDS[name].usage;
  const indent = ' '.repeat(prefix.length + name.length + 1);
  return [`${prefix}${name} ${first}`, ...more.map((line) => `${indent}${line}`)].join('\n');
}

/** Usage of every command (`sim --help`), naming the program as it was called. */
function usage(program: string): string {
  const commands = SIM_COMMAND_NAMES.map((name) =>
    [commandLines('  ', name), ...SIM_COMMANDS[name].about.map((line) => `      ${line}`)].join(
      '\n',
    ),
  );
  return `usage: ${program} <command> [options]\n\ncommands:\n${commands.join('\n')}`;
}

/** Usage of one command (`sim reboot --help`). */
function commandUsage(program: string, name: SimCommandName): string {
  return `${commandLines(`usage: ${program} `, name)}\n\n${SIM_COMMANDS[name].about.join('\n')}`;
}

/** `--help` or `-h` among a command's options (not after `--`, where a FILE could be named so). */
function asksForHelp(args: readonly string[]): boolean {
  const end = args.indexOf('--');
  const options = end === -1 ? args : args.slice(0, end);
  return options.includes('--help') || options.includes('-h');
}

/** Bad command-line input: one line on stderr, exit code 2. */
class UsageError extends Error {}

function main(argv: string[], program: string): number {
  const [command, ...rest] = argv;
  const names = SIM_COMMAND_NAMES.join(', ');
  if (command === undefined) throw new UsageError(`missing command (${names}; try --help)`);
  if (command === 'help' || command === '--help' || command === '-h') {
    process.stdout.write(`${usage(program)}\n`);
    return 0;
  }
  if (!isSimCommand(command)) throw new UsageError(`unknown command "${command}" (${names})`);
  if (asksForHelp(rest)) {
    process.stdout.write(`${commandUsage(program, command)}\n`);
    return 0;
  }
  return SIM_COMMANDS[command].run(rest);
}

type OptionSpec = Record<string, { type: 'string' | 'boolean' }>;

function parse<const T extends OptionSpec>(args: string[], options: T, allowPositionals = false) {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals });
  } catch (error) {
    throw new UsageError((error as Error).message.split('\n')[0] ?? 'bad arguments');
  }
}

function oneOf<T extends string>(
  value: string | undefined,
  allowed: readonly T[],
  name: string,
  fallback: T,
): T {
  if (value === undefined) return fallback;
  if ((allowed as readonly string[]).includes(value)) return value as T;
  throw new UsageError(`--${name} must be one of ${allowed.join(', ')}, got "${value}"`);
}

function positiveInteger(value: string | undefined, name: string): number {
  if (value === undefined) throw new UsageError(`--${name} is required`);
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 1)
    throw new UsageError(`--${name} must be a positive integer, got "${value}"`);
  return n;
}

function optionalCount(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 0)
    throw new UsageError(`--${name} must be a non-negative integer, got "${value}"`);
  return n;
}

/** GiB as given on the command line: positive, a multiple of 2 MiB. */
function gib(value: string | undefined, name: string): number {
  if (value === undefined) throw new UsageError(`--${name} is required`);
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0 || !Number.isInteger(n * 512)) {
    throw new UsageError(
      `--${name} must be a positive number of GiB in steps of 2 MiB, got "${value}"`,
    );
  }
  return n;
}

const MODELS = COST_MODELS;
const DEFAULT_MODEL = COST_MODELS[0];

/** An option for each kernel switch: a flag (boolean switches) or a choice of its values. */
const KERNEL_OPTIONS: OptionSpec = Object.fromEntries(
  KERNEL_SWITCH_NAMES.map((name) => [
    switchOption(name),
    { type: isFlagSwitch(name) ? 'boolean' : 'string' },
  ]),
);

/** The kernel the options ask for: each switch left out is mainline's. */
function kernelOf(values: Readonly<Record<string, string | boolean | undefined>>): KernelFeatures {
  const kernel: Record<string, string | boolean> = {};
  for (const name of KERNEL_SWITCH_NAMES) {
    const option = switchOption(name);
    const { values: allowed, mainline } = KERNEL_SWITCHES[name];
    const value = values[option];
    kernel[name] =
      typeof mainline === 'boolean'
        ? value === true
        : oneOf(
            typeof value === 'string' ? value : undefined,
            (allowed as readonly (string | boolean)[]).map(String),
            option,
            mainline,
          );
  }
  return kernel as KernelFeatures;
}

function print(json: boolean, value: unknown, text: () => string): void {
  process.stdout.write(json ? `${JSON.stringify(value, null, 2)}\n` : `${text()}\n`);
}

function reclaimTableCommand(args: string[]): number {
  const { values } = parse(args, { model: { type: 'string' }, json: { type: 'boolean' } });
  const model = oneOf(values.model, MODELS, 'model', DEFAULT_MODEL);
  const table = reclaimTable(model);
  print(values.json === true, table, () => formatReclaimTable(table));
  return 0;
}

function reclaimCommand(args: string[]): number {
  const { values } = parse(args, {
    vcpus: { type: 'string' },
    'memory-gib': { type: 'string' },
    model: { type: 'string' },
    json: { type: 'boolean' },
  });
  const vcpus = positiveInteger(values.vcpus, 'vcpus');
  const memoryGiB = gib(values['memory-gib'], 'memory-gib');
  const model = oneOf(values.model, MODELS, 'model', DEFAULT_MODEL);
  if (outsideCalibratedRange(vcpus, memoryGiB)) {
    process.stderr.write(
      `warning: ${vcpus} vCPUs / ${memoryGiB} GiB is outside the seed's table (4-64 vCPUs, 18-400 GiB); the model extrapolates\n`,
    );
  }
  const result = simulateReclaim(vcpus, memoryGiB, model);
  print(values.json === true, result, () => formatReclaim(vcpus, memoryGiB, model, result));
  return 0;
}

function rebootCommand(args: string[]): number {
  const { values } = parse(args, {
    strategy: { type: 'string' },
    vcpus: { type: 'string' },
    'memory-gib': { type: 'string' },
    ...KERNEL_OPTIONS,
    model: { type: 'string' },
    'host-memory-gib': { type: 'string' },
    hkids: { type: 'string' },
    'other-vms': { type: 'string' },
    preallocate: { type: 'boolean' },
    json: { type: 'boolean' },
  });
  if (values.strategy === undefined)
    throw new UsageError(`--strategy is required (${REBOOT_STRATEGIES.join(', ')})`);
  const strategy: RebootStrategy = oneOf(values.strategy, REBOOT_STRATEGIES, 'strategy', 'cold');
  const vcpus = positiveInteger(values.vcpus, 'vcpus');
  const memoryGiB = gib(values['memory-gib'], 'memory-gib');
  const kernel = kernelOf(values);
  const hkids = optionalCount(values.hkids, 'hkids');
  if (hkids === 0) throw new UsageError('--hkids must be at least 1');
  const otherVms = optionalCount(values['other-vms'], 'other-vms') ?? 0;
  if (otherVms >= (hkids ?? 63)) {
    throw new UsageError(
      `--other-vms ${otherVms} leaves no HKID for the VM to reboot (--hkids ${hkids ?? 63})`,
    );
  }
  const options = {
    strategy,
    vcpus,
    memoryGiB,
    kernel,
    model: oneOf(values.model, MODELS, 'model', DEFAULT_MODEL),
    otherVms,
    preallocate: values.preallocate === true,
    ...(hkids === undefined ? {} : { hkids }),
    ...(values['host-memory-gib'] === undefined
      ? {}
      : { hostMemoryGiB: gib(values['host-memory-gib'], 'host-memory-gib') }),
  };
  let run: PlanRun;
  try {
    run = rebootOnce(options);
  } catch (error) {
    if (error instanceof PlanRefusedError) {
      process.stderr.write(`refused: ${error.refusal.message}\n`);
      if (values.json === true) print(true, { ok: false, refusal: error.refusal }, () => '');
      return 1;
    }
    if (error instanceof BootFailedError) throw new UsageError(error.message);
    throw error;
  }
  const report = {
    strategy,
    vcpus,
    memoryGiB,
    preallocate: options.preallocate,
    kernel,
    ok: run.ok,
    timeline: run.timeline,
    summary: run.summary,
    ...(run.failure === undefined ? {} : { failure: run.failure }),
  };
  print(values.json === true, report, () => formatReboot(report));
  return run.ok ? 0 : 1;
}

/** A command's input file (`-`: standard input), or a usage error that names it. */
function readInput(file: string): string {
  try {
    return readFileSync(file === '-' ? 0 : file, 'utf8');
  } catch (error) {
    throw new UsageError(
      `cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`,
    );
  }
}

function execCommand(args: string[]): number {
  const { values, positionals } = parse(args, { json: { type: 'boolean' } }, true);
  const [file, ...extra] = positionals;
  if (file === undefined) throw new UsageError('exec needs a script FILE');
  if (extra.length > 0) throw new UsageError(`exec takes one FILE, got ${positionals.length}`);
  const text = readInput(file);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new UsageError(`${file} is not JSON: ${(error as Error).message}`);
  }
  const report = runScript(parseScript(json));
  print(values.json === true, report, () => formatExec(report));
  return report.failedExpectations > 0 ? 1 : 0;
}

function fleetCommand(args: string[]): number {
  const { values, positionals } = parse(args, { json: { type: 'boolean' } }, true);
  const [file, ...extra] = positionals;
  if (file === undefined) throw new UsageError('fleet needs a FILE (JSON or YAML)');
  if (extra.length > 0) throw new UsageError(`fleet takes one FILE, got ${positionals.length}`);
  const input = fleetInput(parseFleetText(readInput(file), file));
  const output = runFleet(input);
  print(values.json === true, output, () => formatFleet(input, output));
  return 0;
}

/**
 * Runs the sim command on its arguments (`reboot --strategy ...`) and returns its exit code. Bad
 * arguments or input print one line, `sim: ...`, on stderr and give 2. `program` names the command
 * in usage (`sim`, or `tdx-fleet sim`).
 */
export function runSim(argv: string[], program = 'sim'): number {
  try {
    return main(argv, program);
  } catch (error) {
    if (
      error instanceof UsageError ||
      error instanceof ScriptError ||
      error instanceof FleetFileError
    ) {
      process.stderr.write(`sim: ${error.message}\n`);
      return 2;
    }
    throw error;
  }
}
