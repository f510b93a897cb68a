import { randomBytes } from 'node:crypto';
import {
  type Agreement,
  type ExperimentResult,
  type ProvenanceInput,
  type RunResult,
  type Scenario,
  ExperimentError,
  assembleResult,
  repetitionSeed,
  resultOfRun,
  runMetrics,
  simulateRun,
  variantProblem,
  variantsOf,
} from '#experiments';
import { runOnDaemon } from './daemon-target.js';

// An experiment on a live daemon: every variant and repetition through the daemon's API, each
// beside the same run offline, so that the result says how far live and offline differ.

export interface DaemonExperimentOptions {
  api: string;
  token: string | null;
  seed?: number | undefined;
  repeat?: number | undefined;
  onProgress?:
    | ((p: { run: number; runs: number; variant: string; issued: number; ended: number }) => void)
    | undefined;
}

/** The metrics whose live and offline values a daemon result puts side by side. */
export const AGREEMENT_METRICS = ['downtime.p50', 'downtime.p95', 'downtime.p99', 'makespan'];

export async function runDaemonExperiment(
  scenario: Scenario,
  provenance: ProvenanceInput,
  options: DaemonExperimentOptions,
): Promise<ExperimentResult> {
  if (scenario.sweep.hostConcurrency !== undefined) {
    throw new ExperimentError(
      "sweep.hostConcurrency: a live daemon's per-host limit is its HOST_CONCURRENCY setting; sweep it with --target offline",
    );
  }
  const seed = options.seed ?? scenario.seed;
  const repeat = options.repeat ?? scenario.repeat;
  const skipped: ExperimentResult['skipped'] = [];
  const variants = variantsOf(scenario).filter((variant) => {
    const reason = variantProblem(scenario, variant);
    if (reason !== null) skipped.push({ name: variant.name, reason });
    return reason === null;
  });
  // One prefix per experiment: its hosts and VMs never meet another run's.
  const experimentId = randomBytes(3).toString('hex');
  const runs: RunResult[] = [];
  const offline: Record<string, number>[] = [];
  let aborted: ExperimentResult['aborted'] = null;
  const total = variants.length * repeat;
  outer: for (const [variantIndex, variant] of variants.entries()) {
    for (let repetition = 0; repetition < repeat; repetition += 1) {
      const runSeed = repetitionSeed(seed, repetition);
      const index = runs.length;
      const record = await runOnDaemon(scenario, variant, runSeed, {
        api: options.api,
        token: options.token,
        runPrefix: `x${experimentId}-${variantIndex}-${repetition}-`,
        onProgress: (p) =>
          options.onProgress?.({ ...p, run: index, runs: total, variant: variant.name }),
      });
      const run = resultOfRun(scenario, record, {
        variant: variant.name,
        repetition,
        seed: runSeed,
      });
      runs.push(run);
      offline.push(runMetrics(simulateRun(scenario, variant, runSeed)));
      const stop = run.thresholds.find((t) => t.abortOnFail && !t.passed);
      if (stop !== undefined) {
        aborted = { run: `${variant.name} #${repetition}`, threshold: stop.label };
        break outer;
      }
    }
  }
  const result = assembleResult(scenario, variants, runs, aborted, skipped, {
    ...provenance,
    scenarioDocument: scenario,
    seed,
    repeat,
    target: 'daemon',
    api: options.api,
  });
  return { ...result, agreement: agreementOf(runs, offline) };
}

/** Live against offline, each metric as the mean over the runs. */
export function agreementOf(
  live: readonly RunResult[],
  offline: readonly Record<string, number>[],
): Agreement[] {
  const mean = (values: readonly number[]) =>
    values.length === 0 ? 0 : values.reduce((a, b) => a + b, 0) / values.length;
  return AGREEMENT_METRICS.map((metric) => {
    const liveValue = mean(live.map((run) => run.metrics[metric] ?? 0));
    const offlineValue = mean(offline.map((metrics) => metrics[metric] ?? 0));
    return {
      metric,
      live: liveValue,
      offline: offlineValue,
      relativeDifference:
        offlineValue === 0
          ? liveValue === 0
            ? 0
            : Infinity
          : (liveValue - offlineValue) / offlineValue,
    };
  });
}
