import type { ExperimentResult, Provenance, RunResult, VariantResult } from './result.js';
import { RESULT_SCHEMA } from './result.js';
import { type RunProgress, resultOfRun, simulateRun } from './run-offline.js';
import type { Scenario } from './scenario.js';
import { kernelEffects } from './kernel-effects.js';
import { estimateOf } from './stats.js';
import { type Variant, variantProblem, variantsOf } from './sweep.js';

// A whole experiment on the offline engine: every variant of the sweep, each repeated with
// seeds seed, seed + 1, ... (the same seeds for every variant, so that variants are compared on
// the same draws), thresholds checked after each run.

/** Where the caller's provenance comes from: what a pure library cannot know. */
export interface ProvenanceInput {
  scenario: string;
  scenarioHash: string;
  version: string;
  gitRevision: string | null;
}

export interface ExperimentOptions {
  seed?: number | undefined;
  repeat?: number | undefined;
  /** Called as runs progress: the run's index (from 0) of `runs`, and the run's own progress. */
  onProgress?: ((progress: ExperimentProgress) => void) | undefined;
  /** Only these variants (by name); default all. */
  variants?: readonly Variant[] | undefined;
}

export interface ExperimentProgress extends RunProgress {
  run: number;
  runs: number;
  variant: string;
  repetition: number;
}

/** The seed of a repetition. */
export function repetitionSeed(seed: number, repetition: number): number {
  return (seed + repetition) >>> 0;
}

/** Runs every variant and repetition of `scenario` offline. */
export function runExperiment(
  scenario: Scenario,
  provenance: ProvenanceInput,
  options: ExperimentOptions = {},
): ExperimentResult {
  const seed = options.seed ?? scenario.seed;
  const repeat = options.repeat ?? scenario.repeat;
  const skipped: ExperimentResult['skipped'] = [];
  const variants = (options.variants ?? variantsOf(scenario)).filter((variant) => {
    const reason = variantProblem(scenario, variant);
    if (reason !== null) skipped.push({ name: variant.name, reason });
    return reason === null;
  });
  const runs: RunResult[] = [];
  let aborted: ExperimentResult['aborted'] = null;
  const total = variants.length * repeat;
  outer: for (const variant of variants) {
    for (let repetition = 0; repetition < repeat; repetition += 1) {
      const runSeed = repetitionSeed(seed, repetition);
      const index = runs.length;
      const record = simulateRun(scenario, variant, runSeed, {
        onProgress: (p) =>
          options.onProgress?.({
            ...p,
            run: index,
            runs: total,
            variant: variant.name,
            repetition,
          }),
      });
      const run = resultOfRun(scenario, record, {
        variant: variant.name,
        repetition,
        seed: runSeed,
      });
      runs.push(run);
      const stop = run.thresholds.find((t) => t.abortOnFail && !t.passed);
      if (stop !== undefined) {
        aborted = { run: `${variant.name} #${repetition}`, threshold: stop.label };
        break outer;
      }
    }
  }
  return assembleResult(scenario, variants, runs, aborted, skipped, {
    ...provenance,
    scenarioDocument: scenario,
    seed,
    repeat,
    target: 'offline',
    api: null,
  });
}

/** The result of runs already made: variants' estimates and the verdict. */
export function assembleResult(
  scenario: Scenario,
  variants: readonly Variant[],
  runs: readonly RunResult[],
  aborted: ExperimentResult['aborted'],
  skipped: ExperimentResult['skipped'],
  provenance: Provenance,
): ExperimentResult {
  const variantResults: VariantResult[] = [];
  for (const variant of variants) {
    const mine = runs.filter((r) => r.variant === variant.name);
    if (mine.length === 0) continue;
    const names = Object.keys((mine[0] as RunResult).metrics);
    const estimates = Object.fromEntries(
      names.map((name) => [
        name,
        estimateOf(
          mine.map((r) => r.metrics[name] ?? 0),
          provenance.seed,
        ),
      ]),
    );
    variantResults.push({
      name: variant.name,
      assignment: variant.assignment,
      estimates,
      passed: mine.every((r) => r.thresholds.every((t) => t.passed)),
    });
  }
  return {
    schema: RESULT_SCHEMA,
    provenance,
    variants: variantResults,
    runs: [...runs],
    passed: aborted === null && runs.every((r) => r.thresholds.every((t) => t.passed)),
    aborted,
    skipped: [...skipped],
    kernelEffects: kernelEffects(scenario, variants, runs),
    agreement: null,
  };
}
