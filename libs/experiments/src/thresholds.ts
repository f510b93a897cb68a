import { metricValue, type RunRecord } from './measure.js';
import type { ThresholdOutcome } from './result.js';
import { type Threshold, thresholdLabel } from './scenario.js';

/** Checks each threshold on a run; a metric with nothing to measure is 0, as its count is. */
export function checkThresholds(
  run: RunRecord,
  thresholds: readonly Threshold[],
): ThresholdOutcome[] {
  return thresholds.map((threshold) => {
    const value = metricValue(run, threshold.metric, threshold.where ?? {});
    const bound = threshold.max !== undefined ? 'max' : 'min';
    const limit = (threshold.max ?? threshold.min) as number;
    return {
      label: thresholdLabel(threshold),
      metric: threshold.metric,
      value,
      limit,
      bound,
      passed: bound === 'max' ? value <= limit : value >= limit,
      abortOnFail: threshold.abortOnFail,
    };
  });
}
