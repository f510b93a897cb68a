import { buildFleet } from './fleet-builder.js';
import { repetitionSeed } from './experiment.js';
import type { ThresholdOutcome } from './result.js';
import { resultOfRun, simulateRun } from './run-offline.js';
import type { Scenario } from './scenario.js';
import { type Variant, variantProblem, variantsOf } from './sweep.js';

// Safe concurrency: the largest per-host reboot concurrency at which every run of a scenario
// meets its thresholds. What is varied is the rolling phases' maxPerHost when the scenario has a
// rolling phase, else the per-host limit of the engine (how many operations a host runs at once).
// Every value from 1 to the most VMs any host holds is tried, offline runs being cheap, so the
// answer does not assume that more concurrency is always worse; where it is not, the result
// says so.

export type ConcurrencyKnob = 'maxPerHost' | 'hostConcurrency';

/** One concurrency tried for one variant. */
export interface ConcurrencyTrial {
  concurrency: number;
  passed: boolean;
  /** The thresholds that failed on some repetition, worst value kept. */
  failed: ThresholdOutcome[];
  /** The headline numbers at this concurrency (mean over repetitions). */
  downtimeP99: number;
  makespan: number;
}

export interface ConcurrencyRow {
  /** The variant of the other swept variables. */
  variant: string;
  /** The largest concurrency that passed with every smaller one passing too; null if 1 fails. */
  safe: number | null;
  /** The threshold that fails just above `safe` (the one that binds), if any. */
  binding: ThresholdOutcome | null;
  /** True when a larger concurrency passes again after a failure (not monotone). */
  passesAgainAbove: boolean;
  trials: ConcurrencyTrial[];
}

export interface ConcurrencyResult {
  knob: ConcurrencyKnob;
  /** The largest concurrency tried: the most VMs on one host. */
  upper: number;
  rows: ConcurrencyRow[];
  skipped: { name: string; reason: string }[];
}

export interface ConcurrencyOptions {
  seed?: number | undefined;
  repeat?: number | undefined;
  /** Try at most this concurrency (default: the most VMs on one host). */
  max?: number | undefined;
  onProgress?: ((done: number, total: number, label: string) => void) | undefined;
}

/** Searches the safe concurrency of every variant of the scenario's other swept variables. */
export function searchConcurrency(
  scenario: Scenario,
  options: ConcurrencyOptions = {},
): ConcurrencyResult {
  const knob: ConcurrencyKnob = scenario.phases.some((p) => p.kind === 'rolling')
    ? 'maxPerHost'
    : 'hostConcurrency';
  // The knob is what the search varies: a sweep of it is replaced, other variables stay.
  const others: Scenario = { ...scenario, sweep: { ...scenario.sweep, [knob]: undefined } };
  const seed = options.seed ?? scenario.seed;
  const repeat = options.repeat ?? scenario.repeat;
  const skipped: ConcurrencyResult['skipped'] = [];
  const variants = variantsOf(others).filter((variant) => {
    const reason = variantProblem(others, variant);
    if (reason !== null) skipped.push({ name: variant.name, reason });
    return reason === null;
  });
  const upper = Math.max(
    1,
    Math.min(
      options.max ?? Infinity,
      ...variants.map((variant) => mostVmsOnOneHost(others, variant, seed)),
    ),
  );
  const total = variants.length * upper * repeat;
  let done = 0;
  const rows = variants.map((variant) => {
    const trials: ConcurrencyTrial[] = [];
    for (let concurrency = 1; concurrency <= upper; concurrency += 1) {
      const tried: Variant =
        knob === 'maxPerHost'
          ? { ...variant, maxPerHost: concurrency }
          : { ...variant, hostConcurrency: concurrency };
      const failed = new Map<string, ThresholdOutcome>();
      let downtime = 0;
      let makespan = 0;
      for (let repetition = 0; repetition < repeat; repetition += 1) {
        options.onProgress?.(done, total, `${variant.name} ${knob}=${concurrency}`);
        const runSeed = repetitionSeed(seed, repetition);
        const run = resultOfRun(others, simulateRun(others, tried, runSeed), {
          variant: variant.name,
          repetition,
          seed: runSeed,
        });
        done += 1;
        downtime += (run.metrics['downtime.p99'] ?? 0) / repeat;
        makespan += (run.metrics.makespan ?? 0) / repeat;
        for (const outcome of run.thresholds) {
          if (outcome.passed) continue;
          const seen = failed.get(outcome.label);
          if (seen === undefined || worse(outcome, seen)) failed.set(outcome.label, outcome);
        }
      }
      trials.push({
        concurrency,
        passed: failed.size === 0,
        failed: [...failed.values()],
        downtimeP99: downtime,
        makespan,
      });
    }
    const firstFailure = trials.findIndex((t) => !t.passed);
    const safe = firstFailure === -1 ? upper : firstFailure === 0 ? null : firstFailure;
    const binding = firstFailure === -1 ? null : (trials[firstFailure]?.failed[0] ?? null);
    const passesAgainAbove =
      firstFailure !== -1 && trials.slice(firstFailure + 1).some((t) => t.passed);
    return { variant: variant.name, safe, binding, passesAgainAbove, trials };
  });
  options.onProgress?.(done, total, 'done');
  return { knob, upper, rows, skipped };
}

/** The further outcome from its limit. */
function worse(a: ThresholdOutcome, b: ThresholdOutcome): boolean {
  const excess = (o: ThresholdOutcome) => (o.bound === 'max' ? 1 : -1) * ((o.value ?? 0) - o.limit);
  return excess(a) > excess(b);
}

/** The most VMs the scenario puts on one host under the variant. */
function mostVmsOnOneHost(scenario: Scenario, variant: Variant, seed: number): number {
  const counts = new Map<string, number>();
  for (const vm of buildFleet(scenario, variant, seed).vms) {
    counts.set(vm.hostId, (counts.get(vm.hostId) ?? 0) + 1);
  }
  return Math.max(1, ...counts.values());
}
