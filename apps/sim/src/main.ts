#!/usr/bin/env node
// The `sim` command: the simulator for people and scripts. Exit codes: 0 done, 1 a plan the
// chosen kernel cannot run (or a failed script expectation), 2 bad arguments or input.
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

const USAGE = `usage: sim <command> [options]

commands:
  reclaim-table [--model ${MODEL_VALUES}] [--json]
      the seed's reclaim table beside the simulation of each row
  reclaim --vcpus N --memory-gib G [--model ${MODEL_VALUES}] [--json]
      reclaim seconds of one VM size, mainline path and terminate path
  reboot --strategy ${REBOOT_STRATEGIES.join('|')} --vcpus N --memory-gib G
         ${KERNEL_SWITCH_NAMES.map(switchUsage).join(' ')}
         [--model ${MODEL_VALUES}] [--host-memory-gib G] [--hkids N] [--other-vms N] [--json]
      boot a VM, reboot it, print the step timeline and summary
  exec FILE [--json]
      run a scripted sequence of calls against one simulated host (see README)
  fleet FILE [--json]
      run a fleet (hosts, VMs, timed requests, batches, limits; JSON or YAML, see README) in the
      offline engine: one virtual clock, the daemon's rules; summary, or everything with --json`;

/** Bad command-line input: one line on stderr, exit code 2. */
class UsageError extends Error {}

function main(argv: string[]): number {
  const [command, ...rest] = argv;
  switch (command) {
    case 'reclaim-table':
      return reclaimTableCommand(rest);
    case 'reclaim':
      return reclaimCommand(rest);
    case 'reboot':
      return rebootCommand(rest);
    case 'exec':
      return execCommand(rest);
    case 'fleet':
      return fleetCommand(rest);
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(`${USAGE}\n`);
      return 0;
    case undefined:
      throw new UsageError(
        'missing command (reclaim-table, reclaim, reboot, exec, fleet; try --help)',
      );
    default:
      throw new UsageError(
        `unknown command "${command}" (reclaim-table, reclaim, reboot, exec, fleet)`,
      );
  }
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
    kernel,
    ok: run.ok,
    timeline: run.timeline,
    summary: run.summary,
    ...(run.failure === undefined ? {} : { failure: run.failure }),
  };
  print(values.json === true, report, () => formatReboot(report));
  return run.ok ? 0 : 1;
}

/** A command's input file, or a usage error that names it. */
function readInput(file: string): string {
  try {
    return readFileSync(file, 'utf8');
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

try {
  process.exitCode = main(process.argv.slice(2));
} catch (error) {
  if (
    error instanceof UsageError ||
    error instanceof ScriptError ||
    error instanceof FleetFileError
  ) {
    process.stderr.write(`sim: ${error.message}\n`);
    process.exitCode = 2;
  } else {
    throw error;
  }
}
