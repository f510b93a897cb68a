// The runs of a result as the reports group and name them.
import type { ExperimentResult, RunResult } from '#experiments';

/** A run as the reports name it: its variant and repetition. */
export function runLabel(run: Pick<RunResult, 'variant' | 'repetition'>): string {
  return `${run.variant} #${run.repetition}`;
}

/** The runs of each variant, in the variants' order (a run of an unlisted variant comes last). */
export function runsByVariant(result: ExperimentResult): Map<string, RunResult[]> {
  const byVariant = new Map<string, RunResult[]>(result.variants.map((v) => [v.name, []]));
  for (const run of result.runs) {
    const runs = byVariant.get(run.variant);
    if (runs === undefined) byVariant.set(run.variant, [run]);
    else runs.push(run);
  }
  return byVariant;
}
