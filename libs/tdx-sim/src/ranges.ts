/**
 * Sets of page numbers kept as sorted, disjoint, non-adjacent half-open ranges `[start, end)`.
 * A 400 GiB guest is 100 million 4 KiB pages; as ranges it is usually one pair.
 */
export type Ranges = Array<[number, number]>;

/** The number of pages in `ranges`. */
export function countPages(ranges: Ranges): number {
  let total = 0;
  for (const [start, end] of ranges) total += end - start;
  return total;
}

/** `ranges` plus `[start, end)`, merged. */
export function addRange(ranges: Ranges, start: number, end: number): Ranges {
  if (end <= start) return ranges;
  const result: Ranges = [];
  let newStart = start;
  let newEnd = end;
  let placed = false;
  for (const [s, e] of ranges) {
    if (e < newStart) {
      result.push([s, e]);
    } else if (s > newEnd) {
      if (!placed) {
        result.push([newStart, newEnd]);
        placed = true;
      }
      result.push([s, e]);
    } else {
      newStart = Math.min(newStart, s);
      newEnd = Math.max(newEnd, e);
    }
  }
  if (!placed) result.push([newStart, newEnd]);
  return result;
}

/** `ranges` without `[start, end)`. */
export function removeRange(ranges: Ranges, start: number, end: number): Ranges {
  if (end <= start) return ranges;
  const result: Ranges = [];
  for (const [s, e] of ranges) {
    if (e <= start || s >= end) {
      result.push([s, e]);
      continue;
    }
    if (s < start) result.push([s, start]);
    if (e > end) result.push([end, e]);
  }
  return result;
}

/** The part of `ranges` inside `[start, end)`. */
export function clipRanges(ranges: Ranges, start: number, end: number): Ranges {
  const result: Ranges = [];
  for (const [s, e] of ranges) {
    const from = Math.max(s, start);
    const to = Math.min(e, end);
    if (from < to) result.push([from, to]);
  }
  return result;
}

/** How many pages of `[start, end)` are in `ranges`. */
export function countInside(ranges: Ranges, start: number, end: number): number {
  let total = 0;
  for (const [s, e] of ranges) {
    const from = Math.max(s, start);
    const to = Math.min(e, end);
    if (from < to) total += to - from;
  }
  return total;
}

/** The union of two range sets. */
export function unionRanges(a: Ranges, b: Ranges): Ranges {
  let result = a;
  for (const [s, e] of b) result = addRange(result, s, e);
  return result;
}

/** `a` without every page of `b`. */
export function subtractRanges(a: Ranges, b: Ranges): Ranges {
  let result = a;
  for (const [s, e] of b) result = removeRange(result, s, e);
  return result;
}

/** Adds `delta` to every bound (moves a set from one address space to another). */
export function shiftRanges(ranges: Ranges, delta: number): Ranges {
  return ranges.map(([s, e]) => [s + delta, e + delta]);
}

/** Pages of `ranges` that lie in whole, aligned leaves of `leafPages` pages. */
export function wholeLeafPages(ranges: Ranges, leafPages: number): number {
  let pages = 0;
  for (const [start, end] of ranges) {
    const first = Math.ceil(start / leafPages);
    const last = Math.floor(end / leafPages);
    if (last > first) pages += (last - first) * leafPages;
  }
  return pages;
}
