/**
 * compareResults: variants paired by name, metrics in headline-then-METRICS order, the change,
 * its interval and p-value, significance only with repetitions on both sides, the verdict by
 * the metric's direction, and notes on results that do not compare like for like.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type Comparison, type MetricComparison, compareResults } from './compare.js';
import { HEADLINE_METRICS } from './metrics.js';
import { resultOf } from './testing/comparable-result.js';

function metricOf(comparison: Comparison, variant: string, metric: string): MetricComparison {
  const found = comparison.variants
    .find((candidate) => candidate.variant === variant)
    ?.metrics.find((candidate) => candidate.metric === metric);
  assert.ok(found, `${variant} ${metric} compared`);
  return found;
}

const before = resultOf({
  baseline: {
    'downtime.p99': [100, 102, 98, 101, 99],
    makespan: [500, 510, 490, 505, 495],
    'memory.free.minFraction': [0.2, 0.21, 0.19, 0.2, 0.2],
    'operations.failed': [3],
  },
});
const after = resultOf({
  baseline: {
    'downtime.p99': [130, 128, 131, 129, 132],
    makespan: [503, 497, 508, 494, 500],
    'memory.free.minFraction': [0.3, 0.31, 0.29, 0.3, 0.32],
    'operations.failed': [5],
  },
});

describe('compareResults', () => {
  const comparison = compareResults(before, after);

  it('finds a metric clearly worse across 5 repetitions worse and significant', () => {
    const downtime = metricOf(comparison, 'baseline', 'downtime.p99');
    assert.deepEqual(downtime.a, { mean: 100, runs: 5 });
    assert.deepEqual(downtime.b, { mean: 130, runs: 5 });
    assert.deepEqual(downtime.change, { absolute: 30, relative: 0.3 });
    assert.equal(downtime.pValue, 2 / 252);
    assert.equal(downtime.significant, true);
    assert.equal(downtime.untested, null);
    assert.equal(downtime.verdict, 'worse');
    assert.ok(downtime.interval && downtime.interval.low > 0 && downtime.interval.high < 60);
  });

  it('finds a metric within the spread of its repetitions the same', () => {
    const makespan = metricOf(comparison, 'baseline', 'makespan');
    assert.ok(makespan.pValue !== null && makespan.pValue > 0.5);
    assert.equal(makespan.significant, false);
    assert.equal(makespan.verdict, 'same');
    assert.ok(makespan.interval && makespan.interval.low < 0 && makespan.interval.high > 0);
  });

  it('reads the direction from the metric: more free memory is better', () => {
    const freeMemory = metricOf(comparison, 'baseline', 'memory.free.minFraction');
    assert.equal(freeMemory.better, 'higher');
    assert.equal(freeMemory.significant, true);
    assert.equal(freeMemory.verdict, 'better');
  });

  it('does not test a metric with one value each', () => {
    const failed = metricOf(comparison, 'baseline', 'operations.failed');
    assert.deepEqual(failed.change, { absolute: 2, relative: 2 / 3 });
    assert.deepEqual(failed.interval, { low: 2, high: 2 });
    assert.equal(failed.pValue, null);
    assert.equal(failed.significant, false);
    assert.equal(failed.untested, 'n/a: one run each');
    assert.equal(failed.verdict, 'same');
  });

  it('says which side lacks repetitions when only one does', () => {
    const oneAgainstThree = compareResults(
      resultOf({ v: { makespan: [10] } }),
      resultOf({ v: { makespan: [20, 21, 22] } }),
    );
    assert.equal(metricOf(oneAgainstThree, 'v', 'makespan').untested, 'n/a: one run in a');
  });

  it('lists headline metrics first, then the rest, in METRICS order', () => {
    const values = [1, 2];
    const scrambled = {
      'hkids.zombie.end': values,
      makespan: values,
      'reclaim.mean': values,
      'downtime.p99': values,
      'downtime.p50': values,
    };
    const order = compareResults(
      resultOf({ v: scrambled }),
      resultOf({ v: scrambled }),
    ).variants[0]?.metrics.map((metric) => metric.metric);
    assert.deepEqual(order, [
      'downtime.p50',
      'downtime.p99',
      'makespan',
      'reclaim.mean',
      'hkids.zombie.end',
    ]);
    assert.deepEqual(
      order?.slice(0, 3),
      HEADLINE_METRICS.filter((name) => Object.hasOwn(scrambled, name)),
    );
  });

  it('pairs variants by name and lists the unmatched ones', () => {
    const metrics = { makespan: [1, 2] };
    const paired = compareResults(
      resultOf({ x: metrics, y: metrics, z: metrics }),
      resultOf({ z: metrics, w: metrics, x: metrics }),
    );
    assert.deepEqual(
      paired.variants.map((variant) => variant.variant),
      ['x', 'z'],
    );
    assert.deepEqual(paired.unmatched, { onlyInA: ['y'], onlyInB: ['w'] });
  });

  it('has no notes for results of the same scenario and target', () => {
    assert.deepEqual(comparison.notes, []);
  });

  it('notes different scenarios, different targets and an aborted result', () => {
    const other = {
      ...resultOf({ v: { makespan: [1, 2] } }, { scenarioHash: 'b'.repeat(64), target: 'daemon' }),
      aborted: { run: 'v#2', threshold: 'makespan <= 100' },
    };
    const notes = compareResults(resultOf({ v: { makespan: [1, 2] } }), other).notes;
    assert.equal(notes.length, 3);
    assert.match(notes[0] ?? '', /different scenarios.*aaaaaaaaaaaa.*bbbbbbbbbbbb/);
    assert.match(notes[1] ?? '', /different targets: a ran on offline, b on daemon/);
    assert.match(notes[2] ?? '', /b was aborted at v#2/);
  });

  it('notes metrics on one side only and metrics it does not know', () => {
    const notes = compareResults(
      resultOf({ v: { makespan: [1, 2], 'future.metric': [1, 2] } }),
      resultOf({ v: { 'downtime.p99': [1, 2], 'future.metric': [1, 2] } }),
    ).notes;
    assert.deepEqual(notes, [
      'v: only a has makespan',
      'v: only b has downtime.p99',
      'v: future.metric not known to this version, not compared',
    ]);
  });

  it('gives a relative change of 0 from 0 to 0 and none from 0 to something', () => {
    const fromZero = compareResults(
      resultOf({ v: { 'hkids.zombie.end': [0, 0], 'hkids.zombie.peak': [0, 0] } }),
      resultOf({ v: { 'hkids.zombie.end': [0, 0], 'hkids.zombie.peak': [2, 2] } }),
    );
    assert.equal(metricOf(fromZero, 'v', 'hkids.zombie.end').change.relative, 0);
    assert.equal(metricOf(fromZero, 'v', 'hkids.zombie.peak').change.relative, null);
  });

  it('gives the same comparison for the same seed', () => {
    assert.deepEqual(
      compareResults(before, after, { seed: 42 }),
      compareResults(before, after, { seed: 42 }),
    );
    assert.equal(compareResults(before, after, { seed: 42 }).seed, 42);
  });
});
