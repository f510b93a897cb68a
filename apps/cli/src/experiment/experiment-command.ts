// `tdx-fleet experiment`: load experiments from scenario files or built-ins, on the offline
// engine or a live daemon, with reports; comparisons of two results; the safe-concurrency search.
// Exit codes: 0 every threshold held, 1 a threshold failed, 2 the experiment could not run (bad
// arguments, a bad scenario, a daemon that cannot be reached).
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import {
  BUILTIN_NAMES,
  type ConcurrencyResult,
  type ExperimentResult,
  ExperimentError,
  ScenarioError,
  builtinDocument,
  builtinScenario,
  compareResults,
  runExperiment,
  scenarioJsonSchema,
  searchConcurrency,
} from '#experiments';
import { stringify as toYaml } from 'yaml';
import { compareHtml, compareMarkdown, compareTable } from './compare-render.js';
import { formatMetric } from './format-units.js';
import { runDaemonExperiment } from './daemon-experiment.js';
import { type Progress, startProgress } from './progress.js';
import { recordCommand } from './record-command.js';
import { replayCommand } from './replay-command.js';
import { gitRevision, packageVersion } from './provenance.js';
import {
  ResultFileError,
  readResultFile,
  resultJsonText,
  writeResultDirectory,
} from './result-files.js';
import { type LoadedScenario, loadScenario } from './scenario-source.js';

/** Bad command-line input: one line on stderr, exit code 2. */
export class ExperimentUsageError extends Error {}

interface Subcommand {
  readonly usage: string;
  readonly about: string;
  readonly run: (args: string[], name: string) => Promise<number>;
}

/** The subcommands, declared once: dispatch and usage derive from them. */
const SUBCOMMANDS: Record<string, Subcommand> = {
  run: {
    usage:
      'run SCENARIO [--target offline|daemon] [--api URL] [--token T] [--seed N] [--repeat N] [--out DIR] [--json] [--quiet]',
    about:
      'run a scenario (a YAML or JSON file, or a built-in) and write result.json, summary.md and report.html',
    run: runCommand,
  },
  list: {
    usage: 'list',
    about: 'the built-in scenarios, one line each',
    run: listCommand,
  },
  show: {
    usage: 'show NAME [--json]',
    about: "a built-in scenario's document, to start a file of your own from",
    run: showCommand,
  },
  schema: {
    usage: 'schema',
    about: 'the JSON Schema of scenario files',
    run: schemaCommand,
  },
  compare: {
    usage: 'compare A B [--markdown FILE] [--html FILE] [--json]',
    about: 'two results (result.json or their directories) metric by metric, with significance',
    run: compareCommand,
  },
  concurrency: {
    usage: 'concurrency SCENARIO [--seed N] [--repeat N] [--max N] [--json] [--quiet]',
    about: "the largest per-host reboot concurrency that meets the scenario's thresholds",
    run: concurrencyCommand,
  },
  record: {
    usage: 'record --api URL [--token T] [--seconds N] [--host-prefix P] --out FILE',
    about:
      "a live daemon's hosts, VMs and requests (until N seconds or SIGINT) as a fleet file for sim fleet and replay",
    run: recordCommand,
  },
  replay: {
    usage:
      'replay FILE [--strategy cold|terminate|reuse] [--terminate-vm none|v4|aug2025] [--link-guest-memfd on|off] [--private-page-size 4K|2M] [--json]',
    about:
      'a fleet file (a recording) offline as written and with another reboot strategy or kernel, side by side',
    run: replayCommand,
  },
};

/** The usage of `tdx-fleet experiment`. */
export function experimentUsage(prefix: string): string {
  const lines = Object.values(SUBCOMMANDS).map(
    (command) => `  ${prefix} ${command.usage}\n      ${command.about}`,
  );
  return `usage:\n${lines.join('\n')}\n\nexit codes: 0 thresholds held, 1 a threshold failed, 2 could not run\nbuilt-in scenarios: ${BUILTIN_NAMES.join(', ')}`;
}

/** Runs `tdx-fleet experiment ...`; resolves to the exit code. */
export async function runExperimentCommand(args: string[], prefix: string): Promise<number> {
  const [name, ...rest] = args;
  try {
    if (name === undefined) {
      throw new ExperimentUsageError(
        `missing subcommand (${Object.keys(SUBCOMMANDS).join(', ')}; try --help)`,
      );
    }
    if (name === '--help' || name === '-h' || name === 'help') {
      process.stdout.write(`${experimentUsage(prefix)}\n`);
      return 0;
    }
    const command = Object.hasOwn(SUBCOMMANDS, name) ? SUBCOMMANDS[name] : undefined;
    if (command === undefined) {
      throw new ExperimentUsageError(
        `unknown subcommand "${name}" (${Object.keys(SUBCOMMANDS).join(', ')}; try --help)`,
      );
    }
    if (rest.includes('--help') || rest.includes('-h')) {
      process.stdout.write(`usage: ${prefix} ${command.usage}\n  ${command.about}\n`);
      return 0;
    }
    return await command.run(rest, `${prefix} ${name}`);
  } catch (error) {
    if (
      error instanceof ExperimentUsageError ||
      error instanceof ScenarioError ||
      error instanceof ExperimentError ||
      error instanceof ResultFileError
    ) {
      process.stderr.write(`${prefix}: ${error.message}\n`);
      return 2;
    }
    throw error;
  }
}

type OptionSpec = Record<string, { type: 'string' | 'boolean'; short?: string }>;

function parse(args: string[], options: OptionSpec, positionals: number, name: string) {
  let parsed;
  try {
    parsed = parseArgs({ args, options, strict: true, allowPositionals: true });
  } catch (error) {
    throw new ExperimentUsageError((error as Error).message.split('\n')[0] ?? 'bad arguments');
  }
  if (parsed.positionals.length !== positionals) {
    throw new ExperimentUsageError(
      `${name} takes ${positionals} argument${positionals === 1 ? '' : 's'}, got ${parsed.positionals.length} (try --help)`,
    );
  }
  return parsed;
}

function integer(
  value: string | boolean | undefined,
  option: string,
  min: number,
): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (typeof value !== 'string' || !Number.isSafeInteger(n) || n < min) {
    throw new ExperimentUsageError(
      `--${option}: expected an integer >= ${min}, got "${String(value)}"`,
    );
  }
  return n;
}

function text(value: string | boolean | undefined): string | undefined {
  return typeof value === 'string' ? value : undefined;
}

/** Progress of runs as one bar: each run a thousandth-grained share of it. */
function runProgress(progress: Progress) {
  return (p: { run: number; runs: number; variant: string; issued: number; ended: number }) => {
    const within = p.issued === 0 ? 0 : Math.min(1, p.ended / p.issued);
    progress.update({
      done: p.run * 1000 + Math.floor(within * 1000),
      total: p.runs * 1000,
      label: `run ${p.run + 1}/${p.runs} ${p.variant}: ${p.ended}/${p.issued} operations`,
    });
  };
}

async function runCommand(args: string[], name: string): Promise<number> {
  const { values, positionals } = parse(
    args,
    {
      target: { type: 'string' },
      api: { type: 'string' },
      token: { type: 'string' },
      seed: { type: 'string' },
      repeat: { type: 'string' },
      out: { type: 'string' },
      json: { type: 'boolean' },
      quiet: { type: 'boolean' },
    },
    1,
    name,
  );
  const target = text(values.target) ?? 'offline';
  if (target !== 'offline' && target !== 'daemon') {
    throw new ExperimentUsageError(`--target: expected offline or daemon, got "${target}"`);
  }
  if (target === 'offline' && values.api !== undefined) {
    throw new ExperimentUsageError('--api is for --target daemon');
  }
  const loaded = loadScenario(positionals[0] as string);
  const seed = integer(values.seed, 'seed', 0);
  const repeat = integer(values.repeat, 'repeat', 1);
  const progress = startProgress(process.stderr, values.quiet === true);
  const provenance = {
    scenario: loaded.name,
    scenarioHash: loaded.hash,
    version: packageVersion(),
    gitRevision: gitRevision(),
  };
  let result: ExperimentResult;
  try {
    result =
      target === 'offline'
        ? runExperiment(loaded.scenario, provenance, {
            seed,
            repeat,
            onProgress: runProgress(progress),
          })
        : await runDaemonExperiment(loaded.scenario, provenance, {
            api: text(values.api) ?? 'http://127.0.0.1:3000',
            token: text(values.token) ?? process.env.API_TOKEN ?? null,
            seed,
            repeat,
            onProgress: runProgress(progress),
          });
  } finally {
    progress.stop();
  }
  const directory = text(values.out) ?? join('experiment-results', loaded.name);
  const written = await writeResultDirectory(directory, result);
  if (values.json === true) {
    process.stdout.write(resultJsonText(result));
  } else {
    process.stdout.write(terminalSummary(result, loaded));
    process.stdout.write(
      `\nwrote ${written.resultJson}, ${written.summaryMarkdown} and ${written.reportHtml}\n`,
    );
  }
  return result.passed ? 0 : 1;
}

/** A short summary for the terminal: the verdict, each variant's headline numbers, failures. */
function terminalSummary(result: ExperimentResult, loaded: LoadedScenario): string {
  const lines: string[] = [];
  const verdict = result.passed ? 'PASSED' : result.aborted !== null ? 'ABORTED' : 'FAILED';
  lines.push(
    `${loaded.name} (${result.provenance.target}, seed ${result.provenance.seed}, ${result.provenance.repeat} repetition(s)): ${verdict}`,
  );
  const shown = [
    'downtime.p50',
    'downtime.p99',
    'makespan',
    'memory.headroomBytes',
    'operations.failed',
  ];
  const header = ['variant', ...shown];
  const rows = result.variants.map((variant) => [
    variant.name + (variant.passed ? '' : ' (failed)'),
    ...shown.map((metric) => {
      const estimate = variant.estimates[metric];
      return estimate === undefined ? '-' : formatMetric(metric, estimate.mean);
    }),
  ]);
  lines.push(...alignColumns([header, ...rows]));
  for (const run of result.runs) {
    for (const reference of run.references) {
      const percent = (reference.relativeDifference * 100).toFixed(1);
      lines.push(
        `  ${reference.label}: ${formatMetric(reference.metric, reference.value)} (published ${formatMetric(reference.metric, reference.reference)}, ${Number(percent) >= 0 ? '+' : ''}${percent}%)`,
      );
    }
    for (const threshold of run.thresholds.filter((t) => !t.passed)) {
      lines.push(
        `  threshold failed on ${run.variant} #${run.repetition}: ${threshold.label} (was ${formatMetric(threshold.metric, threshold.value ?? 0)})`,
      );
    }
  }
  for (const skipped of result.skipped) lines.push(`  skipped ${skipped.name}: ${skipped.reason}`);
  for (const row of result.agreement ?? []) {
    const percent = (row.relativeDifference * 100).toFixed(2);
    lines.push(
      `  live against offline, ${row.metric}: ${formatMetric(row.metric, row.live)} against ${formatMetric(row.metric, row.offline)} (${row.relativeDifference >= 0 ? '+' : ''}${percent}%)`,
    );
  }
  if (result.aborted !== null) {
    lines.push(`  aborted after ${result.aborted.run}: ${result.aborted.threshold} failed`);
  }
  return `${lines.join('\n')}\n`;
}

/** Rows of cells as lines with aligned columns. */
function alignColumns(rows: readonly (readonly string[])[]): string[] {
  const widths: number[] = [];
  for (const row of rows)
    row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return rows.map((row) =>
    row
      .map((cell, i) => cell.padEnd(widths[i] ?? 0))
      .join('  ')
      .trimEnd(),
  );
}

async function listCommand(args: string[], name: string): Promise<number> {
  parse(args, {}, 0, name);
  const width = Math.max(...BUILTIN_NAMES.map((n) => n.length));
  for (const builtin of BUILTIN_NAMES) {
    process.stdout.write(`${builtin.padEnd(width)}  ${builtinScenario(builtin).answers}\n`);
  }
  return Promise.resolve(0);
}

async function showCommand(args: string[], name: string): Promise<number> {
  const { values, positionals } = parse(args, { json: { type: 'boolean' } }, 1, name);
  const builtin = positionals[0] as string;
  if (!BUILTIN_NAMES.includes(builtin)) {
    throw new ExperimentUsageError(
      `no built-in scenario "${builtin}" (${BUILTIN_NAMES.join(', ')})`,
    );
  }
  const document = builtinDocument(builtin);
  process.stdout.write(
    values.json === true ? `${JSON.stringify(document, null, 2)}\n` : toYaml(document),
  );
  return Promise.resolve(0);
}

async function schemaCommand(args: string[], name: string): Promise<number> {
  parse(args, {}, 0, name);
  process.stdout.write(`${JSON.stringify(scenarioJsonSchema(), null, 2)}\n`);
  return Promise.resolve(0);
}

async function compareCommand(args: string[], name: string): Promise<number> {
  const { values, positionals } = parse(
    args,
    { markdown: { type: 'string' }, html: { type: 'string' }, json: { type: 'boolean' } },
    2,
    name,
  );
  const a = await readResultFile(positionals[0] as string);
  const b = await readResultFile(positionals[1] as string);
  const comparison = compareResults(a, b);
  const markdown = text(values.markdown);
  const html = text(values.html);
  if (markdown !== undefined) await writeFile(markdown, compareMarkdown(comparison));
  if (html !== undefined) await writeFile(html, compareHtml(comparison));
  process.stdout.write(
    values.json === true
      ? `${JSON.stringify(comparison, null, 2)}\n`
      : `${compareTable(comparison, { colour: process.stdout.isTTY })}\n`,
  );
  return 0;
}

function concurrencyCommand(args: string[], name: string): Promise<number> {
  const { values, positionals } = parse(
    args,
    {
      seed: { type: 'string' },
      repeat: { type: 'string' },
      max: { type: 'string' },
      json: { type: 'boolean' },
      quiet: { type: 'boolean' },
    },
    1,
    name,
  );
  const loaded = loadScenario(positionals[0] as string);
  if (loaded.scenario.thresholds.length === 0) {
    throw new ScenarioError('thresholds: the search needs at least one threshold to meet');
  }
  const progress = startProgress(process.stderr, values.quiet === true);
  let result: ConcurrencyResult;
  try {
    result = searchConcurrency(loaded.scenario, {
      seed: integer(values.seed, 'seed', 0),
      repeat: integer(values.repeat, 'repeat', 1),
      max: integer(values.max, 'max', 1),
      onProgress: (done, total, label) => progress.update({ done, total, label }),
    });
  } finally {
    progress.stop();
  }
  if (values.json === true) {
    process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  } else {
    process.stdout.write(concurrencySummary(loaded, result));
  }
  return Promise.resolve(result.rows.every((row) => row.safe !== null) ? 0 : 1);
}

function concurrencySummary(loaded: LoadedScenario, result: ConcurrencyResult): string {
  const lines = [
    `${loaded.name}: safe ${result.knob} (tried 1 to ${result.upper})`,
    ...alignColumns([
      [
        'variant',
        `safe ${result.knob}`,
        'binds above it',
        'downtime p99 at safe',
        'makespan at safe',
      ],
      ...result.rows.map((row) => {
        const atSafe = row.safe === null ? undefined : row.trials[row.safe - 1];
        return [
          row.variant,
          row.safe === null
            ? 'none (1 fails)'
            : String(row.safe) + (row.passesAgainAbove ? ' (passes again higher)' : ''),
          row.binding === null
            ? '-'
            : `${row.binding.label} (was ${formatMetric(row.binding.metric, row.binding.value ?? 0)})`,
          atSafe === undefined ? '-' : formatMetric('downtime.p99', atSafe.downtimeP99),
          atSafe === undefined ? '-' : formatMetric('makespan', atSafe.makespan),
        ];
      }),
    ]),
    ...result.skipped.map((s) => `  skipped ${s.name}: ${s.reason}`),
  ];
  return `${lines.join('\n')}\n`;
}
