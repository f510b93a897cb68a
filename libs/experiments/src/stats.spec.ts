/**
 * Statistics: percentiles by linear interpolation, distributions, bootstrap intervals of a mean
 * and of a difference of means, and the permutation test, exact for few repetitions and seeded
 * beyond.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  bootstrapMeanDifferenceInterval,
  bootstrapMeanInterval,
  distributionOf,
  estimateOf,
  percentile,
  permutationTest,
} from './stats.js';

/** Finite values of a size metrics take, so that sums stay exact enough to reason about. */
const value = fc.double({ min: -1e9, max: 1e9, noNaN: true, noDefaultInfinity: true });
const values = (minLength: number, maxLength: number) => fc.array(value, { minLength, maxLength });
const sortedValues = values(1, 30).map((list) => [...list].sort((x, y) => x - y));
const fraction = fc.double({ min: 0, max: 1, noNaN: true });
const seed = fc.integer({ min: 0, max: 2 ** 32 - 1 });

describe('percentile', () => {
  it('interpolates linearly between the closest ranks', () => {
    const sorted = [1, 2, 3, 4];
    assert.equal(percentile(sorted, 0), 1);
    assert.equal(percentile(sorted, 0.25), 1.75);
    assert.equal(percentile(sorted, 0.5), 2.5);
    assert.equal(percentile(sorted, 1), 4);
    assert.equal(percentile([10], 0.3), 10);
  });

  it('is 0 for an empty list and refuses q outside [0, 1]', () => {
    assert.equal(percentile([], 0.5), 0);
    assert.throws(() => percentile([1], 1.5), RangeError);
    assert.throws(() => percentile([1], -0.1), RangeError);
    assert.throws(() => percentile([1], Number.NaN), RangeError);
  });

  it('is monotone in q', () => {
    fc.assert(
      fc.property(sortedValues, fraction, fraction, (sorted, q1, q2) => {
        const [low, high] = q1 <= q2 ? [q1, q2] : [q2, q1];
        assert.ok(percentile(sorted, low) <= percentile(sorted, high));
      }),
    );
  });

  it('stays within [min, max]', () => {
    fc.assert(
      fc.property(sortedValues, fraction, (sorted, q) => {
        const result = percentile(sorted, q);
        assert.ok(result >= (sorted[0] ?? 0) && result <= (sorted.at(-1) ?? 0));
      }),
    );
  });
});

describe('distributionOf', () => {
  it('gives count, mean, percentiles and max', () => {
    const oneToHundred = Array.from({ length: 100 }, (_, index) => 100 - index);
    const distribution = distributionOf(oneToHundred);
    assert.equal(distribution.count, 100);
    assert.equal(distribution.mean, 50.5);
    assert.equal(distribution.p50, 50.5);
    assert.ok(Math.abs(distribution.p95 - 95.05) < 1e-9);
    assert.ok(Math.abs(distribution.p99 - 99.01) < 1e-9);
    assert.equal(distribution.max, 100);
  });

  it('is all zeros for an empty list', () => {
    assert.deepEqual(distributionOf([]), { count: 0, mean: 0, p50: 0, p95: 0, p99: 0, max: 0 });
  });
});

describe('bootstrapMeanInterval', () => {
  it('collapses to the mean for one value or identical values', () => {
    assert.deepEqual(bootstrapMeanInterval([7], { seed: 1 }), { mean: 7, low: 7, high: 7 });
    assert.deepEqual(bootstrapMeanInterval([0.1, 0.1, 0.1], { seed: 1 }), {
      mean: (0.1 + 0.1 + 0.1) / 3,
      low: (0.1 + 0.1 + 0.1) / 3,
      high: (0.1 + 0.1 + 0.1) / 3,
    });
    assert.deepEqual(bootstrapMeanInterval([], { seed: 1 }), { mean: 0, low: 0, high: 0 });
  });

  it('spans the extremes of two values at 95%', () => {
    // Resample means are 0, 5 or 10 with chances 1/4, 1/2, 1/4: both tails are beyond 2.5%.
    assert.deepEqual(bootstrapMeanInterval([0, 10], { seed: 3 }), { mean: 5, low: 0, high: 10 });
  });

  it('narrows as the level drops', () => {
    const sample = [3, 9, 4, 12, 5, 7, 8, 1];
    const wide = bootstrapMeanInterval(sample, { seed: 5, level: 0.99 });
    const narrow = bootstrapMeanInterval(sample, { seed: 5, level: 0.5 });
    assert.ok(wide.low < narrow.low && narrow.high < wide.high);
  });

  it('contains the mean', () => {
    fc.assert(
      fc.property(values(0, 12), seed, (sample, s) => {
        const { mean, low, high } = bootstrapMeanInterval(sample, { seed: s, resamples: 200 });
        assert.ok(low <= mean && mean <= high);
      }),
    );
  });

  it('gives the same numbers for the same seed', () => {
    fc.assert(
      fc.property(values(0, 12), seed, (sample, s) => {
        const options = { seed: s, resamples: 200 };
        assert.deepEqual(
          bootstrapMeanInterval(sample, options),
          bootstrapMeanInterval(sample, options),
        );
      }),
    );
  });

  it('refuses a level outside (0, 1) and a resample count that is not a positive integer', () => {
    assert.throws(() => bootstrapMeanInterval([1, 2], { seed: 1, level: 1 }), RangeError);
    assert.throws(() => bootstrapMeanInterval([1, 2], { seed: 1, resamples: 0 }), RangeError);
  });
});

describe('bootstrapMeanDifferenceInterval', () => {
  it('contains the difference of means and repeats with the seed', () => {
    fc.assert(
      fc.property(values(1, 8), values(1, 8), seed, (a, b, s) => {
        const options = { seed: s, resamples: 200 };
        const result = bootstrapMeanDifferenceInterval(a, b, options);
        assert.ok(result.low <= result.difference && result.difference <= result.high);
        assert.deepEqual(result, bootstrapMeanDifferenceInterval(a, b, options));
      }),
    );
  });

  it('collapses to the difference when each side is constant', () => {
    assert.deepEqual(bootstrapMeanDifferenceInterval([2, 2], [5, 5, 5], { seed: 1 }), {
      difference: 3,
      low: 3,
      high: 3,
    });
  });

  it('keeps clear of 0 for clearly separated samples', () => {
    const result = bootstrapMeanDifferenceInterval([10, 11, 9, 10, 10], [20, 21, 19, 22, 18], {
      seed: 2,
    });
    assert.equal(result.difference, 10);
    assert.ok(result.low > 5 && result.high < 15);
  });
});

describe('estimateOf', () => {
  it('keeps a copy of the values next to the mean and its interval', () => {
    const input = [4, 6, 5];
    const estimate = estimateOf(input, 9);
    assert.equal(estimate.mean, 5);
    assert.ok(estimate.low <= 5 && estimate.high >= 5);
    assert.deepEqual(estimate.values, input);
    assert.notEqual(estimate.values, input);
  });
});

describe('permutationTest', () => {
  it('enumerates every split for few repetitions', () => {
    // 20 splits of 6 values into 3 and 3; only the observed one and its mirror reach |3|.
    assert.deepEqual(permutationTest([1, 2, 3], [4, 5, 6], { seed: 1 }), {
      difference: 3,
      pValue: 2 / 20,
    });
  });

  it('finds clearly separated samples of 5 against 5 significant', () => {
    const { difference, pValue } = permutationTest([10, 11, 9, 10, 10], [20, 21, 19, 22, 18], {
      seed: 1,
    });
    assert.equal(difference, 10);
    assert.equal(pValue, 2 / 252);
    assert.ok(pValue < 0.05);
  });

  it('gives 1 for identical samples and for one value each', () => {
    assert.equal(permutationTest([2, 2, 2, 2, 2], [2, 2, 2, 2, 2], { seed: 1 }).pValue, 1);
    assert.equal(permutationTest([0.1, 0.2, 0.3], [0.3, 0.1, 0.2], { seed: 1 }).pValue, 1);
    assert.equal(permutationTest([1], [100], { seed: 1 }).pValue, 1);
  });

  it('draws relabellings with the +1 correction when there are too many splits', () => {
    const a = Array.from({ length: 10 }, (_, index) => index);
    const b = a.map((x) => x + 100);
    const { pValue } = permutationTest(a, b, { seed: 4, permutations: 999 });
    // C(20, 10) = 184756 > 999; no relabelling but the observed one is that extreme.
    assert.equal(pValue, 1 / 1000);
  });

  it('gives a p-value in (0, 1] that repeats with the seed', () => {
    fc.assert(
      fc.property(values(1, 9), values(1, 9), seed, (a, b, s) => {
        const options = { seed: s, permutations: 300 };
        const result = permutationTest(a, b, options);
        assert.ok(result.pValue > 0 && result.pValue <= 1);
        assert.deepEqual(result, permutationTest(a, b, options));
      }),
    );
  });

  it('gives 1 when both samples are the same values', () => {
    fc.assert(
      fc.property(values(1, 9), seed, (sample, s) => {
        const reordered = [...sample].reverse();
        assert.equal(permutationTest(sample, reordered, { seed: s, permutations: 300 }).pValue, 1);
      }),
    );
  });

  it('gives the same p-value with the labels swapped', () => {
    fc.assert(
      fc.property(values(1, 9), values(1, 9), seed, (a, b, s) => {
        const options = { seed: s, permutations: 300 };
        const forward = permutationTest(a, b, options);
        const swapped = permutationTest(b, a, options);
        assert.equal(swapped.pValue, forward.pValue);
        assert.ok(swapped.difference === -forward.difference);
      }),
    );
  });

  it('refuses an empty sample', () => {
    assert.throws(() => permutationTest([], [1], { seed: 1 }), RangeError);
  });
});
