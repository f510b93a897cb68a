import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { downsampleMinMax } from './downsample.js';

describe('downsampleMinMax', () => {
  it('keeps every sample of a short series', () => {
    assert.deepEqual(downsampleMinMax([0, 10, 20], [5, 7, 6], 10), [
      [0, 5],
      [10, 7],
      [20, 6],
    ]);
  });

  it('thins a long series but keeps its peak, its dip and its last sample, in time order', () => {
    const t = Array.from({ length: 10_000 }, (_, i) => i);
    const values = t.map((i) => (i === 4321 ? 1000 : i === 8765 ? -1000 : Math.sin(i / 50)));
    const points = downsampleMinMax(t, values, 500);
    assert.ok(points.length <= 501, `${points.length} points`);
    assert.ok(points.some(([time, value]) => time === 4321 && value === 1000));
    assert.ok(points.some(([time, value]) => time === 8765 && value === -1000));
    assert.deepEqual(points.at(-1), [9999, Math.sin(9999 / 50)]);
    for (let i = 1; i < points.length; i += 1) {
      assert.ok((points[i]?.[0] ?? 0) > (points[i - 1]?.[0] ?? 0), 'times increase');
    }
  });
});
