// The tables both reports show, as rows of text: summary.md writes them as Markdown, report.html
// as HTML, so the two never disagree on what a number reads.
import {
  type Agreement,
  type CountByCause,
  type Estimate,
  type ExperimentResult,
  type GroupStats,
  HEADLINE_METRICS,
  isMetricName,
  METRICS,
  type PhaseSpan,
  type ThresholdOutcome,
} from '#experiments';
import {
  formatCount,
  formatFraction,
  formatMetric,
  formatMetricChange,
  formatSeconds,
  MISSING_VALUE,
} from './format-units.js';
import { runLabel, runsByVariant } from './result-runs.js';
import {
  type TableCell,
  type TableRow,
  type TextTable,
  type Verdict,
  verdictText,
} from './text-table.js';

const code = (text: string): TableCell => ({ code: text });

/** A headline estimate: the mean, and its 95% interval when there were repetitions to make one. */
export function estimateCell(metric: string, estimate: Estimate | undefined): TableCell {
  if (estimate === undefined) return MISSING_VALUE;
  const mean = formatMetric(metric, estimate.mean);
  if (estimate.values.length <= 1) return mean;
  const interval = `[${formatMetric(metric, estimate.low)}, ${formatMetric(metric, estimate.high)}]`;
  return { value: mean, interval };
}

/** The variable names swept over, in the order the variants first assign them. */
function sweptVariables(result: ExperimentResult): string[] {
  const names = new Set<string>();
  for (const variant of result.variants) {
    for (const name of Object.keys(variant.assignment)) names.add(name);
  }
  return [...names];
}

/** Variants × headline metrics (mean and 95% CI over repetitions) and whether its thresholds held. */
export function variantsTable(result: ExperimentResult): TextTable {
  const variables = sweptVariables(result);
  const headers = ['Variant', ...variables, 'Runs', ...HEADLINE_METRICS, 'Thresholds'];
  return {
    headers,
    headerNotes: headers.map((header) =>
      isMetricName(header) ? METRICS[header].description : undefined,
    ),
    verdictColumn: headers.length - 1,
    numeric: [
      false,
      ...variables.map(() => false),
      true,
      ...HEADLINE_METRICS.map(() => true),
      false,
    ],
    rows: result.variants.map((variant) => {
      const runs = result.runs.filter((run) => run.variant === variant.name).length;
      const verdict: Verdict = variant.passed ? 'pass' : 'fail';
      return {
        verdict,
        cells: [
          code(variant.name),
          ...variables.map((name) => {
            const value = variant.assignment[name];
            return value === undefined ? '' : code(String(value));
          }),
          formatCount(runs),
          ...HEADLINE_METRICS.map((metric) => estimateCell(metric, variant.estimates[metric])),
          verdictText(verdict),
        ],
      };
    }),
  };
}

function limitText(outcome: ThresholdOutcome): string {
  return `${outcome.bound === 'max' ? '≤' : '≥'} ${formatMetric(outcome.metric, outcome.limit)}`;
}

/** The values a threshold took over some runs: one value, or the lowest and highest. */
function valuesText(outcomes: readonly ThresholdOutcome[]): string {
  const first = outcomes[0];
  if (first === undefined) return MISSING_VALUE;
  const known = outcomes.flatMap((outcome) => (outcome.value === null ? [] : [outcome.value]));
  if (outcomes.length === 1 || known.length === 0) return formatMetric(first.metric, first.value);
  const low = formatMetric(first.metric, Math.min(...known));
  const high = formatMetric(first.metric, Math.max(...known));
  const missing =
    known.length < outcomes.length
      ? ` (${MISSING_VALUE} in ${outcomes.length - known.length})`
      : '';
  return `${low === high ? low : `${low} – ${high}`}${missing}`;
}

/**
 * The thresholds: one row per run and threshold when every variant ran once, else one row per
 * variant and threshold with the range of its values and how many runs it held in.
 */
export function thresholdsTable(result: ExperimentResult): TextTable {
  const byVariant = runsByVariant(result);
  const repeated = [...byVariant.values()].some((runs) => runs.length > 1);
  const headers = [
    repeated ? 'Variant' : 'Run',
    'Threshold',
    repeated ? 'Values' : 'Value',
    'Limit',
    'Aborts',
    'Result',
  ];
  const numeric = [false, false, true, true, false, false];
  const rows: TableRow[] = [];
  if (!repeated) {
    for (const run of result.runs) {
      for (const outcome of run.thresholds) {
        const verdict: Verdict = outcome.passed ? 'pass' : 'fail';
        rows.push({
          verdict,
          cells: [
            code(runLabel(run)),
            code(outcome.label),
            formatMetric(outcome.metric, outcome.value),
            limitText(outcome),
            outcome.abortOnFail ? 'yes' : '',
            verdictText(verdict),
          ],
        });
      }
    }
    return { headers, numeric, rows, verdictColumn: headers.length - 1 };
  }
  for (const [variant, runs] of byVariant) {
    // Thresholds are the scenario's, the same on every run: group a variant's outcomes by label.
    const byLabel = new Map<string, ThresholdOutcome[]>();
    for (const run of runs) {
      for (const outcome of run.thresholds) {
        const outcomes = byLabel.get(outcome.label);
        if (outcomes === undefined) byLabel.set(outcome.label, [outcome]);
        else outcomes.push(outcome);
      }
    }
    for (const [label, outcomes] of byLabel) {
      const first = outcomes[0];
      if (first === undefined) continue;
      const held = outcomes.filter((outcome) => outcome.passed).length;
      const verdict: Verdict = held === outcomes.length ? 'pass' : 'fail';
      rows.push({
        verdict,
        cells: [
          code(variant),
          code(label),
          valuesText(outcomes),
          limitText(first),
          first.abortOnFail ? 'yes' : '',
          `${verdictText(verdict)} (held in ${held}/${outcomes.length} runs)`,
        ],
      });
    }
  }
  return { headers, numeric, rows, verdictColumn: headers.length - 1 };
}

/** Live against offline, metric by metric (daemon target). */
export function agreementTable(agreement: readonly Agreement[]): TextTable {
  return {
    headers: ['Metric', 'Live', 'Offline', 'Difference'],
    numeric: [false, true, true, true],
    rows: agreement.map((row) => ({
      cells: [
        code(row.metric),
        formatMetric(row.metric, row.live),
        formatMetric(row.metric, row.offline),
        `${row.relativeDifference > 0 ? '+' : ''}${formatFraction(row.relativeDifference)}`,
      ],
    })),
  };
}

/** Published figures beside each run's (the seed's table, say). */
export function referencesTable(result: ExperimentResult): TextTable {
  return {
    headers: ['Run', 'Figure', 'Metric', 'Published', 'Simulated', 'Difference', 'Source'],
    numeric: [false, false, false, true, true, true, false],
    rows: result.runs.flatMap((run) =>
      run.references.map((reference) => ({
        cells: [
          code(runLabel(run)),
          reference.label,
          code(reference.metric),
          formatMetric(reference.metric, reference.reference),
          formatMetric(reference.metric, reference.value),
          `${reference.relativeDifference > 0 ? '+' : ''}${formatFraction(reference.relativeDifference)}`,
          reference.source,
        ],
      })),
    ),
  };
}

/** What each kernel switch changes (mean over the variant pairs that differ in it alone). */
export function kernelEffectsTable(result: ExperimentResult): TextTable {
  const metrics = ['downtime.p99', 'makespan', 'memory.headroomBytes'];
  return {
    headers: [
      'Basis',
      'Switch',
      'From',
      'To',
      'Strategies',
      'Pairs',
      ...metrics.map((m) => `${m} change`),
    ],
    numeric: [false, false, false, false, false, true, ...metrics.map(() => true)],
    rows: result.kernelEffects.map((effect) => ({
      cells: [
        effect.basis,
        code(effect.switch),
        effect.from,
        effect.to,
        effect.strategies.join(', '),
        formatCount(effect.pairs),
        ...metrics.map((metric) => formatMetricChange(metric, effect.change[metric] ?? 0)),
      ],
    })),
  };
}

/** Variants of the sweep that did not run, and why. */
export function skippedTable(result: ExperimentResult): TextTable {
  return {
    headers: ['Variant', 'Why it did not run'],
    numeric: [false, false],
    rows: result.skipped.map((skipped) => ({ cells: [code(skipped.name), skipped.reason] })),
  };
}

/** A run's phases as they ran. */
export function phasesTable(phases: readonly PhaseSpan[]): TextTable {
  return {
    headers: ['Phase', 'Kind', 'Started', 'Ended', 'Operations'],
    numeric: [false, false, true, true, true],
    rows: phases.map((phase) => ({
      cells: [
        code(phase.name),
        phase.kind,
        formatSeconds(phase.startedAt),
        formatSeconds(phase.endedAt),
        formatCount(phase.operations),
      ],
    })),
  };
}

/** Per phase and VM group: the operations and their downtime percentiles. */
export function groupsTable(groups: readonly GroupStats[]): TextTable {
  return {
    headers: [
      'Phase',
      'VM group',
      'Action',
      'Strategy',
      'Size',
      'Succeeded',
      'Failed',
      'Cancelled',
      'Downtime p50',
      'p95',
      'p99',
      'max',
    ],
    numeric: [false, false, false, false, false, true, true, true, true, true, true, true],
    rows: groups.map((group) => {
      // Percentiles of no succeeded operation are no number at all.
      const downtime = (value: number) =>
        group.downtime.count === 0 ? MISSING_VALUE : formatSeconds(value);
      return {
        cells: [
          code(group.phase),
          code(group.vmGroup),
          group.action,
          group.strategy === null ? '' : code(group.strategy),
          `${group.vcpus} vCPU, ${group.memoryGiB} GiB`,
          formatCount(group.succeeded),
          formatCount(group.failed),
          formatCount(group.cancelled),
          downtime(group.downtime.p50),
          downtime(group.downtime.p95),
          downtime(group.downtime.p99),
          downtime(group.downtime.max),
        ],
      };
    }),
  };
}

/** Waits or failures by cause; waits also say how long they took. */
export function causesTable(causes: readonly CountByCause[], withSeconds: boolean): TextTable {
  return {
    headers: ['Cause', 'Step', 'Count', ...(withSeconds ? ['Seconds'] : [])],
    numeric: [false, false, true, ...(withSeconds ? [true] : [])],
    rows: causes.map((cause) => ({
      cells: [
        code(cause.cause),
        cause.step === null ? '' : code(cause.step),
        formatCount(cause.count),
        ...(withSeconds ? [formatSeconds(cause.seconds)] : []),
      ],
    })),
  };
}

/** The headline metrics and what each means, for a legend under the variants table. */
export function headlineGlossary(): [metric: string, description: string][] {
  return HEADLINE_METRICS.map((metric) => [metric, METRICS[metric].description]);
}

/** Where the result came from, as label and value pairs. */
export function provenanceFacts(result: ExperimentResult): [label: string, value: TableCell][] {
  const p = result.provenance;
  return [
    ['Scenario', code(p.scenario)],
    ['Target', p.api === null ? p.target : `${p.target} (${p.api})`],
    ['Seed', String(p.seed)],
    ['Repeat', String(p.repeat)],
    ['Version', p.version],
    ['Git revision', p.gitRevision === null ? 'unknown' : code(p.gitRevision)],
    ['Scenario hash', code(p.scenarioHash)],
  ];
}

/** How many threshold checks there were over all runs, and how many failed and in how many runs. */
export function thresholdCounts(result: ExperimentResult): {
  checks: number;
  failed: number;
  failedRuns: number;
} {
  let checks = 0;
  let failed = 0;
  let failedRuns = 0;
  for (const run of result.runs) {
    checks += run.thresholds.length;
    const failedHere = run.thresholds.filter((outcome) => !outcome.passed).length;
    failed += failedHere;
    if (failedHere > 0) failedRuns += 1;
  }
  return { checks, failed, failedRuns };
}

/** The verdict in one sentence. */
export function outcomeSentence(result: ExperimentResult): string {
  const { checks, failed, failedRuns } = thresholdCounts(result);
  const runs = result.runs.length;
  if (result.passed && checks === 0)
    return `PASSED: the scenario sets no thresholds (${runs} runs).`;
  if (result.passed) {
    return `PASSED: every threshold held on every run (${checks} checks over ${runs} runs).`;
  }
  const failedVariants = result.variants.filter((v) => !v.passed).map((v) => v.name);
  const which = failedVariants.length === 0 ? '' : ` (variants: ${failedVariants.join(', ')})`;
  return `FAILED: ${failed} of ${checks} threshold checks failed, in ${failedRuns} of ${runs} runs${which}.`;
}

/** Whether the run stopped early, in one sentence. */
export function abortSentence(result: ExperimentResult): string {
  if (result.aborted === null) return 'Not aborted: no abort-on-fail threshold failed.';
  return `ABORTED after run ${result.aborted.run}: threshold "${result.aborted.threshold}" failed and the remaining runs were skipped.`;
}
