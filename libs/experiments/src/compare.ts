// Comparing two experiment results: variant by variant and metric by metric, how b moved from a,
// whether the move stands out from the spread between repetitions, and whether it is for better.
import {
  HEADLINE_METRICS,
  METRICS,
  METRIC_NAMES,
  isMetricName,
  type MetricName,
  type MetricUnit,
} from './metrics.js';
import type { Estimate, ExperimentResult, TargetName, VariantResult } from './result.js';
import { bootstrapMeanDifferenceInterval, permutationTest } from './stats.js';

/** A change is significant when the permutation test's p-value is below this. */
export const SIGNIFICANCE_LEVEL = 0.05;

/** The seed of the resampling when the caller gives none. */
export const DEFAULT_COMPARISON_SEED = 1;

/** Where one of the two compared results came from. */
export interface ComparedResult {
  scenario: string;
  scenarioHash: string;
  target: TargetName;
  seed: number;
  repeat: number;
  version: string;
  gitRevision: string | null;
}

/** One metric of one variant in both results; every change is b - a. */
export interface MetricComparison {
  metric: MetricName;
  unit: MetricUnit;
  better: 'lower' | 'higher';
  headline: boolean;
  /** The mean over a's repetitions and how many there were. */
  a: { mean: number; runs: number };
  b: { mean: number; runs: number };
  /** b's mean - a's mean, and that over |a's mean| (0 when both are 0, null when only a's is). */
  change: { absolute: number; relative: number | null };
  /**
   * 95% bootstrap interval of the change, resampling each side's repetitions; null when a side
   * has none.
   */
  interval: { low: number; high: number } | null;
  /** Two-sided permutation test of the change; null when it is untested. */
  pValue: number | null;
  /** pValue < SIGNIFICANCE_LEVEL, with at least 2 repetitions on each side. */
  significant: boolean;
  /** Why the change is not tested, e.g. `n/a: one run each`; null when it is. */
  untested: string | null;
  /** `better` or `worse` by the metric's direction when significant, else `same`. */
  verdict: 'better' | 'worse' | 'same';
}

/** A variant found in both results, by name. */
export interface VariantComparison {
  variant: string;
  /** Headline metrics first, then the rest, each in METRICS order. */
  metrics: MetricComparison[];
}

export interface Comparison {
  a: ComparedResult;
  b: ComparedResult;
  /** The seed the intervals and tests were drawn with. */
  seed: number;
  /** The variants of both results, in a's order. */
  variants: VariantComparison[];
  /** Variants present in one result only, not compared. */
  unmatched: { onlyInA: string[]; onlyInB: string[] };
  /** What to keep in mind reading the comparison: different scenarios or targets, gaps. */
  notes: string[];
}

/** The metrics in comparison order: headline first, then the rest, each in METRICS order. */
const COMPARISON_ORDER: readonly MetricName[] = [
  ...HEADLINE_METRICS,
  ...METRIC_NAMES.filter((name) => !METRICS[name].headline),
];

/**
 * Compares result b with result a: variants are paired by name (or, with one variant on each
 * side, with each other whatever their names), and within a pair each metric
 * with an estimate on both sides. Deterministic: the same results and seed give the same
 * comparison, and each metric's draws depend only on the seed, the variant and the metric.
 */
export function compareResults(
  a: ExperimentResult,
  b: ExperimentResult,
  options: { seed?: number } = {},
): Comparison {
  const seed = options.seed ?? DEFAULT_COMPARISON_SEED;
  const notes = provenanceNotes(a, b);
  const variantsOfB = new Map(b.variants.map((variant) => [variant.name, variant]));
  const namesOfA = new Set(a.variants.map((variant) => variant.name));

  const variants: VariantComparison[] = [];
  const [onlyOfA, onlyOfB] = [a.variants[0], b.variants[0]];
  if (a.variants.length === 1 && b.variants.length === 1 && onlyOfA && onlyOfB) {
    // One variant each (two scenario files, say): they are the two things compared.
    if (onlyOfA.name !== onlyOfB.name) {
      notes.push(
        `one variant each, compared whatever their names: ${onlyOfA.name} and ${onlyOfB.name}`,
      );
    }
    variants.push(compareVariant(onlyOfA, { ...onlyOfB, name: onlyOfA.name }, seed, notes));
    return {
      a: comparedResult(a),
      b: comparedResult(b),
      seed,
      variants,
      unmatched: { onlyInA: [], onlyInB: [] },
      notes,
    };
  }
  for (const variantOfA of a.variants) {
    const variantOfB = variantsOfB.get(variantOfA.name);
    if (variantOfB === undefined) continue;
    variants.push(compareVariant(variantOfA, variantOfB, seed, notes));
  }
  return {
    a: comparedResult(a),
    b: comparedResult(b),
    seed,
    variants,
    unmatched: {
      onlyInA: a.variants.filter((variant) => !variantsOfB.has(variant.name)).map(nameOf),
      onlyInB: b.variants.filter((variant) => !namesOfA.has(variant.name)).map(nameOf),
    },
    notes,
  };
}

function compareVariant(
  a: VariantResult,
  b: VariantResult,
  seed: number,
  notes: string[],
): VariantComparison {
  const metrics: MetricComparison[] = [];
  for (const metric of COMPARISON_ORDER) {
    const estimateOfA = a.estimates[metric];
    const estimateOfB = b.estimates[metric];
    if (estimateOfA === undefined || estimateOfB === undefined) continue;
    metrics.push(compareMetric(metric, estimateOfA, estimateOfB, streamSeed(seed, a.name, metric)));
  }

  const onlyInA = Object.keys(a.estimates).filter((name) => !Object.hasOwn(b.estimates, name));
  const onlyInB = Object.keys(b.estimates).filter((name) => !Object.hasOwn(a.estimates, name));
  const unknown = Object.keys(a.estimates).filter(
    (name) => Object.hasOwn(b.estimates, name) && !isMetricName(name),
  );
  if (onlyInA.length > 0) notes.push(`${a.name}: only a has ${onlyInA.join(', ')}`);
  if (onlyInB.length > 0) notes.push(`${a.name}: only b has ${onlyInB.join(', ')}`);
  if (unknown.length > 0) {
    notes.push(`${a.name}: ${unknown.join(', ')} not known to this version, not compared`);
  }
  return { variant: a.name, metrics };
}

function compareMetric(
  metric: MetricName,
  a: Estimate,
  b: Estimate,
  seed: number,
): MetricComparison {
  const declaration = METRICS[metric];
  const absolute = b.mean - a.mean;
  const bothHaveRuns = a.values.length > 0 && b.values.length > 0;
  const untested = whyUntested(a.values.length, b.values.length);

  const interval = bothHaveRuns
    ? bootstrapMeanDifferenceInterval(a.values, b.values, { seed, level: 0.95 })
    : null;
  // Another stream than the interval's, so that the two draws are independent.
  const pValue =
    untested === null
      ? permutationTest(a.values, b.values, { seed: seed ^ 0x5bd1e995 }).pValue
      : null;
  const significant = pValue !== null && pValue < SIGNIFICANCE_LEVEL;

  return {
    metric,
    unit: declaration.unit,
    better: declaration.better,
    headline: declaration.headline,
    a: { mean: a.mean, runs: a.values.length },
    b: { mean: b.mean, runs: b.values.length },
    change: { absolute, relative: relativeChange(a.mean, b.mean) },
    interval: interval && { low: interval.low, high: interval.high },
    pValue,
    significant,
    untested,
    verdict: verdictOf(absolute, significant, declaration.better),
  };
}

/** Null when both sides have the 2 repetitions a test needs; else what is missing. */
function whyUntested(runsOfA: number, runsOfB: number): string | null {
  if (runsOfA >= 2 && runsOfB >= 2) return null;
  if (runsOfA === 1 && runsOfB === 1) return 'n/a: one run each';
  const missing = (runs: number, side: string) =>
    runs === 0 ? [`no runs in ${side}`] : runs === 1 ? [`one run in ${side}`] : [];
  return `n/a: ${[...missing(runsOfA, 'a'), ...missing(runsOfB, 'b')].join(', ')}`;
}

function relativeChange(meanOfA: number, meanOfB: number): number | null {
  if (meanOfA === 0) return meanOfB === 0 ? 0 : null;
  return (meanOfB - meanOfA) / Math.abs(meanOfA);
}

function verdictOf(
  change: number,
  significant: boolean,
  better: 'lower' | 'higher',
): MetricComparison['verdict'] {
  if (!significant || change === 0) return 'same';
  return change < 0 === (better === 'lower') ? 'better' : 'worse';
}

/** Differences between the results' origins that bear on reading the comparison. */
function provenanceNotes(a: ExperimentResult, b: ExperimentResult): string[] {
  const notes: string[] = [];
  const [origin, other] = [a.provenance, b.provenance];
  if (origin.scenarioHash !== other.scenarioHash) {
    notes.push(
      `different scenarios: a ran ${origin.scenario} (${shortHash(origin.scenarioHash)}), ` +
        `b ran ${other.scenario} (${shortHash(other.scenarioHash)}); ` +
        'a change may come from the scenario rather than the code',
    );
  }
  if (origin.target !== other.target) {
    notes.push(
      `different targets: a ran on ${origin.target}, b on ${other.target}; ` +
        'live and offline numbers differ even for the same scenario',
    );
  }
  for (const [side, result] of [
    ['a', a],
    ['b', b],
  ] as const) {
    if (result.aborted !== null) {
      notes.push(
        `${side} was aborted at ${result.aborted.run} (${result.aborted.threshold}); ` +
          'its later runs are missing',
      );
    }
  }
  return notes;
}

function comparedResult(result: ExperimentResult): ComparedResult {
  const { scenario, scenarioHash, target, seed, repeat, version, gitRevision } = result.provenance;
  return { scenario, scenarioHash, target, seed, repeat, version, gitRevision };
}

function nameOf(variant: VariantResult): string {
  return variant.name;
}

function shortHash(hash: string): string {
  return hash.slice(0, 12);
}

/** A seed for one variant's metric: FNV-1a of its names, mixed with the comparison's seed. */
function streamSeed(seed: number, variant: string, metric: string): number {
  let hash = 0x811c9dc5;
  for (const character of `${variant}\u0000${metric}`) {
    hash = Math.imul(hash ^ (character.codePointAt(0) ?? 0), 0x01000193) >>> 0;
  }
  return (hash ^ seed) >>> 0;
}
