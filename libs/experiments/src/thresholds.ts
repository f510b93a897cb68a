import { metricValue, type RunRecord } from './measure.js';
import type { ReferenceOutcome, ThresholdOutcome } from './result.js';
import { type Reference, type Threshold, thresholdLabel } from './scenario.js';

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

/** Each published figure beside the run's value of its metric. */
export function checkReferences(
  run: RunRecord,
  references: readonly Reference[],
): ReferenceOutcome[] {
  return references.map((reference) => {
    const value = metricValue(run, reference.metric, reference.where ?? {});
    return {
      label: reference.label,
      metric: reference.metric,
      reference: reference.value,
      value,
      relativeDifference:
        reference.value === 0
          ? value === 0
            ? 0
            : Infinity
          : (value - reference.value) / reference.value,
      source: reference.source,
    };
  });
}
