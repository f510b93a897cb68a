// The statistics of experiment results: percentiles and distributions of per-operation quantities,
// bootstrap intervals of a mean over repetitions, and a permutation test between two sets of
// repetitions.
//
// Written by hand rather than taken from a library: the one well-kept candidate, simple-statistics,
// has no bootstrap interval, defines quantiles differently, and its permutationTest (even with
// the random source 7.8 accepts) splits the pooled sample in two halves whatever the group sizes,
// leaves out the +1 correction and never enumerates exactly, which is what 2 to 5 repetitions
// need. Randomness comes from a seed only, so the same inputs always give the same numbers.
import { seededRandom } from '#fleet';
import type { Distribution, Estimate } from './result.js';

/**
 * The q-quantile (q in [0, 1]) of values sorted in ascending order, by linear interpolation
 * between the closest ranks (Hyndman and Fan's type 7, the default of R and NumPy): with n values
 * x[0..n-1] and h = (n - 1)·q, it is x[⌊h⌋] + (h - ⌊h⌋)·(x[⌊h⌋+1] - x[⌊h⌋]). So q = 0 is the
 * minimum, q = 1 the maximum and q = 0.5 the usual median. An empty list gives 0, as in
 * `distributionOf`.
 */
export function percentile(sortedValues: readonly number[], q: number): number {
  if (!(q >= 0 && q <= 1)) throw new RangeError(`percentile: q must be in [0, 1], got ${q}`);
  if (sortedValues.length === 0) return 0;
  const rank = (sortedValues.length - 1) * q;
  const below = Math.floor(rank);
  const lower = sortedValues[below] ?? 0;
  const upper = sortedValues[Math.min(below + 1, sortedValues.length - 1)] ?? lower;
  if (lower === upper) return lower;
  const interpolated = lower + (rank - below) * (upper - lower);
  // Rounding could step an ulp outside the two ranks; keeping inside keeps q ↦ value monotone.
  return Math.min(Math.max(interpolated, lower), upper);
}

/**
 * Count, mean, median, 95th and 99th percentiles (as `percentile`) and maximum of a quantity
 * over operations. All are 0 for an empty list, so that a group without succeeded operations
 * still has a row.
 */
export function distributionOf(values: readonly number[]): Distribution {
  if (values.length === 0) return { count: 0, mean: 0, p50: 0, p95: 0, p99: 0, max: 0 };
  const sorted = [...values].sort((x, y) => x - y);
  return {
    count: sorted.length,
    mean: meanOf(values),
    p50: percentile(sorted, 0.5),
    p95: percentile(sorted, 0.95),
    p99: percentile(sorted, 0.99),
    max: sorted[sorted.length - 1] ?? 0,
  };
}

export interface BootstrapOptions {
  seed: number;
  /** How many resamples; 2000 by default. */
  resamples?: number;
  /** The interval's confidence level in (0, 1); 0.95 by default. */
  level?: number;
}

/**
 * The mean of `values` and a percentile-bootstrap confidence interval of it: resample the values
 * with replacement, take each resample's mean, and read the interval off those means' (1 - level)/2
 * and (1 + level)/2 percentiles. One value, or values all the same, give low = high = mean; an
 * empty list gives zeros. The interval always contains the mean.
 */
export function bootstrapMeanInterval(
  values: readonly number[],
  options: BootstrapOptions,
): { mean: number; low: number; high: number } {
  assertFinite(values, 'bootstrapMeanInterval');
  const settings = bootstrapSettings(options);
  const mean = meanOf(values);
  if (allSame(values)) return { mean, low: mean, high: mean };
  const random = seededRandom(options.seed);
  const { low, high } = bootstrapInterval(settings, () => resampledMean(values, random), mean);
  return { mean, low, high };
}

/**
 * The difference of means mean(b) - mean(a) and a percentile-bootstrap confidence interval of it,
 * resampling a and b each with replacement (as `bootstrapMeanInterval`). When each side's values
 * are all the same, low = high = difference. Both lists must have a value.
 */
export function bootstrapMeanDifferenceInterval(
  a: readonly number[],
  b: readonly number[],
  options: BootstrapOptions,
): { difference: number; low: number; high: number } {
  assertTwoSamples(a, b, 'bootstrapMeanDifferenceInterval');
  const settings = bootstrapSettings(options);
  const difference = meanOf(b) - meanOf(a);
  if (allSame(a) && allSame(b)) return { difference, low: difference, high: difference };
  const random = seededRandom(options.seed);
  const { low, high } = bootstrapInterval(
    settings,
    () => resampledMean(b, random) - resampledMean(a, random),
    difference,
  );
  return { difference, low, high };
}

/** A metric over a variant's repetitions: its mean, a 95% bootstrap interval and the values. */
export function estimateOf(values: readonly number[], seed: number): Estimate {
  return { ...bootstrapMeanInterval(values, { seed }), values: [...values] };
}

export interface PermutationOptions {
  seed: number;
  /**
   * How many random relabellings when there are more distinct splits than this (10000 by
   * default); with fewer, every split is enumerated and the seed is not used.
   */
  permutations?: number;
}

/**
 * Two-sided permutation test of the difference of means, `difference` = mean(b) - mean(a).
 *
 * The p-value is the share of relabellings of the pooled values (the same group sizes) whose
 * difference of means is at least as far from 0 as the observed one. When the number of distinct
 * splits, C(|a| + |b|, |a|), is at most `permutations`, every split is enumerated and the p-value
 * is exact (count / splits, the observed split among them); this is what 2 to 5 repetitions need:
 * 5 against 5 have only 252 splits, so the smallest p-value is 2/252, while 3 against 3 cannot go
 * below 0.1. Otherwise `permutations` random relabellings are drawn and the p-value is
 * (count + 1) / (permutations + 1), counting the observed labelling once, so it is never 0.
 *
 * Either way it is in (0, 1], identical samples give 1, and swapping a and b gives the same
 * p-value (the draws depend on the pooled values and the group sizes only). Differences within
 * the rounding of a sum are treated as ties, which count as extreme. Both lists must have a value.
 */
export function permutationTest(
  a: readonly number[],
  b: readonly number[],
  options: PermutationOptions,
): { difference: number; pValue: number } {
  assertTwoSamples(a, b, 'permutationTest');
  const permutations = options.permutations ?? 10_000;
  if (!Number.isInteger(permutations) || permutations < 1) {
    throw new RangeError(`permutationTest: permutations must be a positive integer`);
  }
  const difference = meanOf(b) - meanOf(a);

  // Label-free: the pooled values in order, and the smaller group drawn from them.
  const pooled = [...a, ...b].sort((x, y) => x - y);
  const drawnSize = Math.min(a.length, b.length);
  const restSize = pooled.length - drawnSize;
  const pooledSum = sumOf(pooled);
  const largest = pooled.reduce((most, value) => Math.max(most, Math.abs(value)), 0);
  // A bound on the rounding of two means of at most pooled.length terms.
  const tolerance = 8 * pooled.length * Number.EPSILON * largest;
  const threshold = Math.abs(difference) - tolerance;
  const isExtreme = (drawnSum: number): boolean =>
    Math.abs((pooledSum - drawnSum) / restSize - drawnSum / drawnSize) >= threshold;

  const splits = countSplits(pooled.length, drawnSize, permutations);
  if (splits !== undefined) {
    let extreme = 0;
    forEachSplit(pooled.length, drawnSize, (indices) => {
      let drawnSum = 0;
      for (const index of indices) drawnSum += pooled[index] ?? 0;
      if (isExtreme(drawnSum)) extreme += 1;
    });
    return { difference, pValue: extreme / splits };
  }

  const random = seededRandom(options.seed);
  const shuffled = [...pooled];
  let extreme = 0;
  for (let permutation = 0; permutation < permutations; permutation += 1) {
    // A partial Fisher-Yates shuffle: the first drawnSize places become a uniform random subset.
    let drawnSum = 0;
    for (let place = 0; place < drawnSize; place += 1) {
      const pick = place + Math.floor(random() * (shuffled.length - place));
      const value = shuffled[pick] ?? 0;
      shuffled[pick] = shuffled[place] ?? 0;
      shuffled[place] = value;
      drawnSum += value;
    }
    if (isExtreme(drawnSum)) extreme += 1;
  }
  return { difference, pValue: (extreme + 1) / (permutations + 1) };
}

function sumOf(values: readonly number[]): number {
  let sum = 0;
  for (const value of values) sum += value;
  return sum;
}

function meanOf(values: readonly number[]): number {
  return values.length === 0 ? 0 : sumOf(values) / values.length;
}

function allSame(values: readonly number[]): boolean {
  return values.every((value) => value === values[0]);
}

function resampledMean(values: readonly number[], random: () => number): number {
  let sum = 0;
  for (let draw = 0; draw < values.length; draw += 1) {
    sum += values[Math.floor(random() * values.length)] ?? 0;
  }
  return sum / values.length;
}

function bootstrapSettings(options: BootstrapOptions): { resamples: number; level: number } {
  const resamples = options.resamples ?? 2000;
  const level = options.level ?? 0.95;
  if (!Number.isInteger(resamples) || resamples < 1) {
    throw new RangeError('bootstrap: resamples must be a positive integer');
  }
  if (!(level > 0 && level < 1)) throw new RangeError('bootstrap: level must be in (0, 1)');
  return { resamples, level };
}

/** The percentile interval of `resamples` draws of a statistic, widened to hold `estimate`. */
function bootstrapInterval(
  { resamples, level }: { resamples: number; level: number },
  drawStatistic: () => number,
  estimate: number,
): { low: number; high: number } {
  const statistics = Array.from({ length: resamples }, drawStatistic).sort((x, y) => x - y);
  const tail = (1 - level) / 2;
  // The resampled means add the same values in another order, so on a tight interval rounding
  // alone can leave the estimate an ulp outside; an interval of the mean must hold the mean.
  return {
    low: Math.min(percentile(statistics, tail), estimate),
    high: Math.max(percentile(statistics, 1 - tail), estimate),
  };
}

/** C(total, chosen), or undefined when it is above `limit` (computed no further than that). */
function countSplits(total: number, chosen: number, limit: number): number | undefined {
  let count = 1;
  for (let step = 1; step <= chosen; step += 1) {
    // After this step count is C(total - chosen + step, step), an integer.
    count = (count * (total - chosen + step)) / step;
    if (count > limit) return undefined;
  }
  return count;
}

/** Calls `visit` with every set of `chosen` indices out of 0..total-1, in lexicographic order. */
function forEachSplit(
  total: number,
  chosen: number,
  visit: (indices: readonly number[]) => void,
): void {
  const indices = Array.from({ length: chosen }, (_, index) => index);
  for (;;) {
    visit(indices);
    let position = chosen - 1;
    while (position >= 0 && indices[position] === total - chosen + position) position -= 1;
    if (position < 0) return;
    let next = (indices[position] ?? 0) + 1;
    for (; position < chosen; position += 1) indices[position] = next++;
  }
}

function assertFinite(values: readonly number[], caller: string): void {
  if (!values.every(Number.isFinite)) throw new RangeError(`${caller}: values must be finite`);
}

function assertTwoSamples(a: readonly number[], b: readonly number[], caller: string): void {
  if (a.length === 0 || b.length === 0) {
    throw new RangeError(`${caller}: both samples need at least one value`);
  }
  assertFinite(a, caller);
  assertFinite(b, caller);
}
