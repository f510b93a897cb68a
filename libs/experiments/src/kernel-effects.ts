import {
  KERNEL_SWITCHES,
  KERNEL_SWITCH_NAMES,
  type KernelFeatures,
  type KernelSwitchName,
} from '#tdx-sim';
import type { KernelEffect, RunResult } from './result.js';
import type { Scenario } from './scenario.js';
import type { Variant } from './sweep.js';

// Kernel what-if: from one experiment that sweeps kernels, what each kernel switch changes. Two
// variants that differ in exactly one switch (and in nothing else: the same strategy, the same
// other variables) are a pair; a switch's effect from one value to another is the mean over its
// pairs of the change in a few headline metrics.

/** The metrics a kernel effect reports. */
export const EFFECT_METRICS = ['downtime.p99', 'makespan', 'memory.headroomBytes'] as const;

/** Every variable of a variant but the kernel, as one key. */
function restKey(variant: Variant): string {
  return JSON.stringify([
    variant.strategy,
    variant.maxPerHost,
    variant.hostConcurrency,
    variant.vmSize,
  ]);
}

/**
 * The effect of each switch change seen in the experiment, in switch order then value order.
 * The kernel of a variant is the first host group's with the variant's switches over it (with
 * host groups of different kernels, the effect is that of the switch the sweep sets on all).
 */
export function kernelEffects(
  scenario: Scenario,
  variants: readonly Variant[],
  runs: readonly RunResult[],
): KernelEffect[] {
  const base = scenario.fleet.hosts[0]?.kernel;
  if (base === undefined) return [];
  const mean = (variant: Variant, metric: string): number | null => {
    const mine = runs.filter((run) => run.variant === variant.name);
    if (mine.length === 0) return null;
    return mine.reduce((sum, run) => sum + (run.metrics[metric] ?? 0), 0) / mine.length;
  };
  const kernelOf = (variant: Variant): KernelFeatures => ({ ...base, ...variant.kernel });
  const ran = variants.filter((variant) => mean(variant, 'downtime.p99') !== null);
  // A kernel's best strategy: of the variants that differ from each other in strategy alone,
  // the one with the least p99 downtime. A feature that makes a better strategy possible shows
  // there, where the same strategy on both kernels would show nothing.
  const best = new Map<string, Variant>();
  for (const variant of ran) {
    const key = JSON.stringify([kernelOf(variant), restKey({ ...variant, strategy: null })]);
    const seen = best.get(key);
    if (
      seen === undefined ||
      (mean(variant, 'downtime.p99') ?? 0) < (mean(seen, 'downtime.p99') ?? 0)
    ) {
      best.set(key, variant);
    }
  }
  return [
    ...effectsOf(ran, 'same strategy', restKey, kernelOf, mean),
    ...effectsOf(
      [...best.values()],
      'best strategy',
      (v) => restKey({ ...v, strategy: null }),
      kernelOf,
      mean,
    ),
  ];
}

function effectsOf(
  variants: readonly Variant[],
  basis: KernelEffect['basis'],
  rest: (variant: Variant) => string,
  kernelOf: (variant: Variant) => KernelFeatures,
  mean: (variant: Variant, metric: string) => number | null,
): KernelEffect[] {
  const effects = new Map<string, KernelEffect & { sums: number[] }>();
  for (const a of variants) {
    for (const b of variants) {
      if (a === b || rest(a) !== rest(b)) continue;
      const ka = kernelOf(a);
      const kb = kernelOf(b);
      const differing = KERNEL_SWITCH_NAMES.filter((name) => ka[name] !== kb[name]);
      if (differing.length !== 1) continue;
      const name = differing[0] as KernelSwitchName;
      if (!isForward(name, ka[name], kb[name])) continue;
      const values = EFFECT_METRICS.map((metric) => {
        const from = mean(a, metric);
        const to = mean(b, metric);
        return from === null || to === null ? 0 : to - from;
      });
      const key = `${name}\u0000${String(ka[name])}\u0000${String(kb[name])}`;
      const effect = effects.get(key) ?? {
        basis,
        switch: name,
        from: String(ka[name]),
        to: String(kb[name]),
        pairs: 0,
        strategies: [],
        change: {},
        sums: EFFECT_METRICS.map(() => 0),
      };
      effect.pairs += 1;
      const strategies = `${a.strategy ?? 'as written'} -> ${b.strategy ?? 'as written'}`;
      if (!effect.strategies.includes(strategies)) effect.strategies.push(strategies);
      values.forEach((v, i) => (effect.sums[i] = (effect.sums[i] ?? 0) + v));
      effects.set(key, effect);
    }
  }
  return [...effects.values()]
    .sort(
      (x, y) =>
        KERNEL_SWITCH_NAMES.indexOf(x.switch as KernelSwitchName) -
          KERNEL_SWITCH_NAMES.indexOf(y.switch as KernelSwitchName) ||
        x.from.localeCompare(y.from) ||
        x.to.localeCompare(y.to),
    )
    .map(({ sums, ...effect }) => ({
      ...effect,
      change: Object.fromEntries(
        EFFECT_METRICS.map((metric, i) => [metric, (sums[i] ?? 0) / effect.pairs]),
      ),
    }));
}

/** Each pair once, in the direction a kernel moves: the switch's values in declared order. */
function isForward(name: KernelSwitchName, from: unknown, to: unknown): boolean {
  const order: readonly unknown[] = KERNEL_SWITCHES[name].values;
  return order.indexOf(from) < order.indexOf(to);
}
