// `tdx-fleet experiment replay`: a fleet file (a recording, say) run offline as written and under
// other kernel switches or another reboot strategy, side by side: "what if this storm had used
// reuse".
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { ExperimentError } from '#experiments';
import { type OfflineInput } from '#fleet';
import { type KernelFeatures } from '#tdx-sim';
import { REBOOT_STRATEGIES, type RebootStrategy } from '#vmm';
import { FleetFileError, fleetInput, parseFleetText } from '../../../sim/src/fleet-file.js';
import { formatMetric } from './format-units.js';
import {
  REPLAY_METRICS,
  type ReplayOverrides,
  overriddenInput,
  replayRun,
  strategyProblem,
  summaryChange,
} from './replay.js';

function choice<T extends string>(
  value: string | undefined,
  option: string,
  allowed: readonly T[],
): T | undefined {
  if (value === undefined) return undefined;
  if (!(allowed as readonly string[]).includes(value)) {
    throw new ExperimentError(`--${option}: expected ${allowed.join(', ')}, got "${value}"`);
  }
  return value as T;
}

function replayOptions(args: string[]): {
  file: string;
  overrides: ReplayOverrides;
  json: boolean;
} {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: {
        strategy: { type: 'string' },
        'terminate-vm': { type: 'string' },
        'link-guest-memfd': { type: 'string' },
        'private-page-size': { type: 'string' },
        json: { type: 'boolean' },
      },
      strict: true,
      allowPositionals: true,
    });
  } catch (error) {
    throw new ExperimentError((error as Error).message.split('\n')[0] ?? 'bad arguments');
  }
  const { values, positionals } = parsed;
  if (positionals.length !== 1) {
    throw new ExperimentError(`replay takes one FILE, got ${positionals.length} (try --help)`);
  }
  const kernel: Partial<KernelFeatures> = {};
  const terminateVm = choice(values['terminate-vm'], 'terminate-vm', ['none', 'v4', 'aug2025']);
  if (terminateVm !== undefined) kernel.terminateVm = terminateVm;
  const link = choice(values['link-guest-memfd'], 'link-guest-memfd', ['on', 'off']);
  if (link !== undefined) kernel.linkGuestMemfd = link === 'on';
  const pages = choice(values['private-page-size'], 'private-page-size', ['4K', '2M']);
  if (pages !== undefined) kernel.privatePageSize = pages;
  const strategy = choice<RebootStrategy>(values.strategy, 'strategy', REBOOT_STRATEGIES) ?? null;
  return {
    file: positionals[0] as string,
    overrides: { strategy, kernel },
    json: values.json === true,
  };
}

/** The file's input, and when its requests start (before it, the VMs' own boots). */
function readReplayFile(file: string): { input: OfflineInput; from: number } {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new ExperimentError(`cannot read ${file}: ${(error as Error).message}`);
  }
  try {
    const document = parseFleetText(text, file);
    const input = fleetInput(document);
    const { requests = [], batches = [] } = document as {
      requests?: { at: number }[];
      batches?: { at: number }[];
    };
    const from = Math.min(...requests.map((r) => r.at), ...batches.map((b) => b.at));
    if (!Number.isFinite(from)) throw new ExperimentError(`${file} has no requests to replay`);
    return { input, from };
  } catch (error) {
    if (error instanceof FleetFileError) throw new ExperimentError(`${file}: ${error.message}`);
    throw error;
  }
}

/** Runs `replay`; resolves to the exit code. */
export function replayCommand(args: string[]): Promise<number> {
  const { file, overrides, json } = replayOptions(args);
  const { input, from } = readReplayFile(file);
  const whatIf = overriddenInput(input, overrides);
  const problem = strategyProblem(whatIf);
  if (problem !== null) throw new ExperimentError(problem);
  const recorded = replayRun(input, from);
  const replayed = replayRun(whatIf, from);
  const change = summaryChange(recorded.summary, replayed.summary);
  if (json) {
    process.stdout.write(
      `${JSON.stringify({ file, overrides, recorded, replayed, change }, null, 2)}\n`,
    );
    return Promise.resolve(0);
  }
  const rows = REPLAY_METRICS.map((metric) => {
    const { difference, relative } = change[metric];
    const sign = difference > 0 ? '+' : '';
    const percent = relative === null ? '' : ` (${sign}${(relative * 100).toFixed(1)}%)`;
    return [
      metric,
      formatMetric(metric, recorded.summary[metric]),
      formatMetric(metric, replayed.summary[metric]),
      difference === 0 ? '=' : `${sign}${formatMetric(metric, difference)}${percent}`,
    ];
  });
  const lines = [
    `${file}: ${recorded.summary['operations.total']} operations from ${from} s (virtual)`,
    ...sideBySide([['', 'as recorded', overridesLabel(overrides), 'change'], ...rows]),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
  return Promise.resolve(0);
}

/** `strategy=reuse terminateVm=v4`, or `as recorded` when nothing is overridden. */
function overridesLabel(overrides: ReplayOverrides): string {
  const parts = [
    ...(overrides.strategy === null ? [] : [`strategy=${overrides.strategy}`]),
    ...Object.entries(overrides.kernel).map(([name, value]) => `${name}=${String(value)}`),
  ];
  return parts.length === 0 ? 'as recorded' : parts.join(' ');
}

/** Rows as lines: the first column left-aligned, the numbers right-aligned. */
function sideBySide(rows: readonly (readonly string[])[]): string[] {
  const widths: number[] = [];
  for (const row of rows) {
    row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  }
  return rows.map((row) =>
    row
      .map((cell, i) => (i === 0 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0)))
      .join('  '),
  );
}
