// Fewer points for a long series, for a page that embeds it: the samples are cut into equal
// buckets and each bucket keeps its lowest and highest sample, in time order, so that a peak (the
// least free memory, the most orphaned) survives the cut where an average would flatten it.

/** A point of a line chart: [time, value]. */
export type Point = [t: number, value: number];

/** `t` and `values` as points, at most about `maxPoints` of them (every point when fewer). */
export function downsampleMinMax(
  t: readonly number[],
  values: readonly number[],
  maxPoints: number,
): Point[] {
  const length = Math.min(t.length, values.length);
  const points: Point[] = [];
  const at = (index: number): Point => [t[index] ?? 0, values[index] ?? 0];
  if (length <= maxPoints) {
    for (let index = 0; index < length; index += 1) points.push(at(index));
    return points;
  }
  const buckets = Math.max(1, Math.floor(maxPoints / 2));
  for (let bucket = 0; bucket < buckets; bucket += 1) {
    const start = Math.floor((bucket * length) / buckets);
    const end = Math.floor(((bucket + 1) * length) / buckets);
    let lowest = start;
    let highest = start;
    for (let index = start + 1; index < end; index += 1) {
      const value = values[index] ?? 0;
      if (value < (values[lowest] ?? 0)) lowest = index;
      if (value > (values[highest] ?? 0)) highest = index;
    }
    points.push(at(Math.min(lowest, highest)));
    if (lowest !== highest) points.push(at(Math.max(lowest, highest)));
  }
  // The last sample is where the run ended (what stayed orphaned, the drift): always keep it.
  if (points.at(-1)?.[0] !== t[length - 1]) points.push(at(length - 1));
  return points;
}
