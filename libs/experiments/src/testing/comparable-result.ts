import { type ExperimentResult, type Provenance, RESULT_SCHEMA } from '../result.js';
import { estimateOf } from '../stats.js';

// A result for comparisons' tests: only its variants' per-repetition metric values matter.

/** A result with the given variants' per-repetition metric values; nothing else is read. */
export function resultOf(
  variants: Record<string, Record<string, number[]>>,
  provenance: Partial<Provenance> = {},
): ExperimentResult {
  return {
    schema: RESULT_SCHEMA,
    provenance: {
      scenario: 'rolling-reboot',
      scenarioHash: 'a'.repeat(64),
      scenarioDocument: {},
      seed: 7,
      repeat: 5,
      target: 'offline',
      api: null,
      version: '0.1.0',
      gitRevision: null,
      ...provenance,
    },
    variants: Object.entries(variants).map(([name, metrics]) => ({
      name,
      assignment: {},
      estimates: Object.fromEntries(
        Object.entries(metrics).map(([metric, values]) => [metric, estimateOf(values, 11)]),
      ),
      passed: true,
    })),
    runs: [],
    passed: true,
    aborted: null,
    skipped: [],
    kernelEffects: [],
    agreement: null,
  };
}
