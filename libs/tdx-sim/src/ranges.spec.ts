import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  type Ranges,
  addRange,
  clipRanges,
  countInside,
  countPages,
  removeRange,
  shiftRanges,
  subtractRanges,
  unionRanges,
} from './ranges.js';

// The model: a plain Set of page numbers. Page numbers stay small (0..63) so that every
// interesting overlap, adjacency and containment case turns up often.
const MAX_PAGE = 64;

/** The normal form of a set: sorted, disjoint, non-adjacent, non-empty `[start, end)` pairs. */
function toRanges(pages: Iterable<number>): Ranges {
  const sorted = [...new Set(pages)].sort((a, b) => a - b);
  const result: Ranges = [];
  for (const page of sorted) {
    const last = result[result.length - 1];
    if (last !== undefined && last[1] === page) last[1] = page + 1;
    else result.push([page, page + 1]);
  }
  return result;
}

function toSet(ranges: Ranges): Set<number> {
  const set = new Set<number>();
  for (const [s, e] of ranges) for (let p = s; p < e; p++) set.add(p);
  return set;
}

function span(start: number, end: number): number[] {
  const pages: number[] = [];
  for (let p = start; p < end; p++) pages.push(p);
  return pages;
}

/** Fails unless `ranges` is in normal form. */
function assertNormal(ranges: Ranges): void {
  for (const [i, [s, e]] of ranges.entries()) {
    assert.ok(Number.isInteger(s) && Number.isInteger(e), `non-integer bound in ${String(ranges)}`);
    assert.ok(s < e, `empty or reversed range [${s}, ${e}) in ${JSON.stringify(ranges)}`);
    const next = ranges[i + 1];
    if (next !== undefined) {
      assert.ok(e < next[0], `ranges touch or overlap: ${JSON.stringify(ranges)}`);
    }
  }
}

/** Fails unless `ranges` is the normal form of `expected`. */
function assertSameSet(ranges: Ranges, expected: Iterable<number>): void {
  assertNormal(ranges);
  assert.deepEqual(ranges, toRanges(expected));
}

const pageSet = fc.uniqueArray(fc.integer({ min: 0, max: MAX_PAGE - 1 }), {
  maxLength: MAX_PAGE,
});
const rangesArb = pageSet.map(toRanges);
/** A half-open interval; sometimes empty or reversed, which must change nothing. */
const interval = fc.tuple(
  fc.integer({ min: -2, max: MAX_PAGE + 2 }),
  fc.integer({ min: -2, max: MAX_PAGE + 2 }),
);

function snapshot(ranges: Ranges): Ranges {
  return ranges.map(([s, e]) => [s, e]);
}

describe('ranges: range sets behave like sets of page numbers', () => {
  it('countPages counts the members', () => {
    fc.assert(
      fc.property(pageSet, (pages) => {
        assert.equal(countPages(toRanges(pages)), pages.length);
      }),
    );
  });

  it('addRange is set union with [start, end), merges neighbours and keeps its input', () => {
    fc.assert(
      fc.property(rangesArb, interval, (ranges, [start, end]) => {
        const before = snapshot(ranges);
        const result = addRange(ranges, start, end);
        assertSameSet(result, [...toSet(ranges), ...span(start, end)]);
        assert.deepEqual(ranges, before, 'addRange mutated its input');
      }),
    );
  });

  it('removeRange is set difference with [start, end) and keeps its input', () => {
    fc.assert(
      fc.property(rangesArb, interval, (ranges, [start, end]) => {
        const before = snapshot(ranges);
        const removed = new Set(span(start, end));
        const result = removeRange(ranges, start, end);
        assertSameSet(
          result,
          [...toSet(ranges)].filter((p) => !removed.has(p)),
        );
        assert.deepEqual(ranges, before, 'removeRange mutated its input');
      }),
    );
  });

  it('clipRanges is intersection with [start, end); countInside counts it', () => {
    fc.assert(
      fc.property(rangesArb, interval, (ranges, [start, end]) => {
        const inside = [...toSet(ranges)].filter((p) => p >= start && p < end);
        assertSameSet(clipRanges(ranges, start, end), inside);
        assert.equal(countInside(ranges, start, end), inside.length);
      }),
    );
  });

  it('unionRanges is set union', () => {
    fc.assert(
      fc.property(rangesArb, rangesArb, (a, b) => {
        const [beforeA, beforeB] = [snapshot(a), snapshot(b)];
        assertSameSet(unionRanges(a, b), [...toSet(a), ...toSet(b)]);
        assert.deepEqual([a, b], [beforeA, beforeB], 'unionRanges mutated its input');
      }),
    );
  });

  it('subtractRanges is set difference', () => {
    fc.assert(
      fc.property(rangesArb, rangesArb, (a, b) => {
        const [beforeA, beforeB] = [snapshot(a), snapshot(b)];
        const drop = toSet(b);
        assertSameSet(
          subtractRanges(a, b),
          [...toSet(a)].filter((p) => !drop.has(p)),
        );
        assert.deepEqual([a, b], [beforeA, beforeB], 'subtractRanges mutated its input');
      }),
    );
  });

  it('shiftRanges moves every member by delta', () => {
    fc.assert(
      fc.property(rangesArb, fc.integer({ min: -MAX_PAGE, max: MAX_PAGE }), (ranges, delta) => {
        assertSameSet(
          shiftRanges(ranges, delta),
          [...toSet(ranges)].map((p) => p + delta),
        );
      }),
    );
  });

  it('any sequence of adds and removes matches the Set model', () => {
    const step = fc.tuple(fc.boolean(), interval);
    fc.assert(
      fc.property(fc.array(step, { maxLength: 30 }), (steps) => {
        let ranges: Ranges = [];
        const model = new Set<number>();
        for (const [add, [start, end]] of steps) {
          if (add) {
            ranges = addRange(ranges, start, end);
            for (const p of span(start, end)) model.add(p);
          } else {
            ranges = removeRange(ranges, start, end);
            for (const p of span(start, end)) model.delete(p);
          }
          assertSameSet(ranges, model);
          assert.equal(countPages(ranges), model.size);
        }
      }),
    );
  });

  it('adjacent ranges merge into one pair (a 400 GiB guest stays one pair)', () => {
    let ranges: Ranges = [];
    for (let i = 0; i < 100; i++) ranges = addRange(ranges, i * 1000, (i + 1) * 1000);
    assert.deepEqual(ranges, [[0, 100_000]]);
    assert.deepEqual(removeRange(ranges, 500, 600), [
      [0, 500],
      [600, 100_000],
    ]);
  });
});
