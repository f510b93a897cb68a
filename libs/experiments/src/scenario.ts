import { z } from 'zod';
import { checkReleaseFaults, describeIssues } from '#fleet';
import { KERNEL_SWITCHES, type KernelFeatures, MAINLINE_KERNEL } from '#tdx-sim';
import { ALL_STRATEGIES, REBOOT_STRATEGIES, TERMINATE_STRATEGIES } from '#vmm';
import { METRIC_NAMES, METRICS, type MetricName } from './metrics.js';

// A scenario: the fleet, the phases that act on it, the variables to sweep and the thresholds,
// validated by one zod schema (the JSON Schema published beside it is generated from it). An
// error names the field that is wrong, as `phases[1].maxPerHost: expected an integer > 0`.

/** A scenario that cannot run, naming the field that is wrong. */
export class ScenarioError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ScenarioError';
  }
}

const count = z
  .number({ error: 'expected an integer > 0' })
  .int({ error: 'expected an integer > 0' })
  .positive({ error: 'expected an integer > 0' });
const positive = z
  .number({ error: 'expected a number > 0' })
  .positive({ error: 'expected a number > 0' });
const seconds = z
  .number({ error: 'expected virtual seconds >= 0' })
  .nonnegative({ error: 'expected virtual seconds >= 0' });
const name = z.string({ error: 'expected a name' }).regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, {
  error: 'expected a name of lower-case letters, digits, ".", "_" or "-" (at most 63)',
});

const rebootStrategy = z.enum(REBOOT_STRATEGIES, {
  error: `expected one of ${REBOOT_STRATEGIES.join(', ')}`,
});

/** The kernel switches, each from its declaration; a switch left out takes mainline's value. */
const kernel = z.strictObject({
  terminateVm: z
    .enum(KERNEL_SWITCHES.terminateVm.values, {
      error: `expected one of ${KERNEL_SWITCHES.terminateVm.values.join(', ')}`,
    })
    .default(KERNEL_SWITCHES.terminateVm.mainline),
  linkGuestMemfd: z
    .boolean({ error: 'expected true or false' })
    .default(KERNEL_SWITCHES.linkGuestMemfd.mainline),
  privatePageSize: z
    .enum(KERNEL_SWITCHES.privatePageSize.values, {
      error: `expected one of ${KERNEL_SWITCHES.privatePageSize.values.join(', ')}`,
    })
    .default(KERNEL_SWITCHES.privatePageSize.mainline),
  guestMemfdFlags: z
    .enum(KERNEL_SWITCHES.guestMemfdFlags.values, {
      error: `expected one of ${KERNEL_SWITCHES.guestMemfdFlags.values.join(', ')}`,
    })
    .default(KERNEL_SWITCHES.guestMemfdFlags.mainline),
  guestMemfdTree: z
    .enum(KERNEL_SWITCHES.guestMemfdTree.values, {
      error: `expected one of ${KERNEL_SWITCHES.guestMemfdTree.values.join(', ')}`,
    })
    .default(KERNEL_SWITCHES.guestMemfdTree.mainline),
}) satisfies z.ZodType<KernelFeatures>;

/**
 * Which HKID release attempts fail on the group's hosts (`{VPFLUSHDONE: {failNext: n}}`,
 * `{FREEID: {everyNth: k}}`): checked by the fleet model's own check, named by it.
 */
const hkidReleaseFaults = z.unknown().transform((value, context) => {
  try {
    return checkReleaseFaults(value);
  } catch (error) {
    context.addIssue({ code: 'custom', message: (error as Error).message });
    return z.NEVER;
  }
});

const hostGroup = z.strictObject({
  name,
  count: count.default(1),
  memoryGiB: positive,
  hkids: count.default(63),
  packages: count.default(2),
  cpus: count.default(128),
  kernel: kernel.default({ ...MAINLINE_KERNEL }),
  hkidReleaseFaults: hkidReleaseFaults.optional(),
});

const vmSize = z.strictObject({
  vcpus: count,
  memoryGiB: positive,
});

const sizeShare = vmSize.extend({
  /** Relative share of the group's VMs of this size. */
  weight: positive.default(1),
});

const vmGroup = z.strictObject({
  name,
  /** VMs in the group, or `perHost` on each host of the groups it may use. */
  count: count.optional(),
  perHost: count.optional(),
  /** The size mix: each VM's size is drawn by weight with the scenario's seed. */
  sizes: z.array(sizeShare).min(1, { error: 'expected at least one size' }),
  /** The host groups its VMs may go on (default: all). */
  hostGroups: z.array(name).optional(),
});

const selection = {
  /** The VM groups the phase acts on (default: all). */
  vmGroups: z.array(name).optional(),
};

/** What a phase does to each VM; the strategy defaults to the action's first one. */
const phaseAction = {
  action: z
    .enum(['reboot', 'terminate'], { error: 'expected reboot or terminate' })
    .default('reboot'),
  strategy: z
    .enum(ALL_STRATEGIES, { error: `expected one of ${ALL_STRATEGIES.join(', ')}` })
    .optional(),
};

const phaseCommon = {
  name,
  /** Virtual seconds after the previous phase ended (the first: after the fleet booted). */
  delaySeconds: seconds.default(0),
  ...selection,
  ...phaseAction,
};

const rate = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('constant'), perSecond: positive }),
  z.strictObject({ kind: z.literal('ramp'), fromPerSecond: positive, toPerSecond: positive }),
  z.strictObject({ kind: z.literal('poisson'), perSecond: positive }),
]);

const phase = z.discriminatedUnion('kind', [
  /** Every selected VM at once. */
  z.strictObject({ kind: z.literal('storm'), ...phaseCommon }),
  /** Host by host, at most `maxPerHost` VMs down per host and `maxInFleet` in the fleet. */
  z.strictObject({
    kind: z.literal('rolling'),
    ...phaseCommon,
    maxPerHost: count.default(1),
    maxInFleet: count.nullable().default(null),
  }),
  /** An open model: operations arrive at a rate for a while, on the next idle VM. */
  z.strictObject({
    kind: z.literal('arrivals'),
    ...phaseCommon,
    rate,
    durationSeconds: positive,
  }),
  /** A closed loop: `concurrency` operations in flight until `operations` have been issued. */
  z.strictObject({
    kind: z.literal('closed-loop'),
    ...phaseCommon,
    concurrency: count,
    operations: count,
  }),
]);

/** The variables a sweep can vary, each a list of values. */
const sweep = z.strictObject({
  strategy: z.array(rebootStrategy).min(1).optional(),
  /** Whole kernels (switches left out keep each host group's own). */
  kernel: z.array(kernel.partial()).min(1).optional(),
  'kernel.terminateVm': z.array(kernel.shape.terminateVm.unwrap()).min(1).optional(),
  'kernel.linkGuestMemfd': z.array(kernel.shape.linkGuestMemfd.unwrap()).min(1).optional(),
  'kernel.privatePageSize': z.array(kernel.shape.privatePageSize.unwrap()).min(1).optional(),
  /** Overrides every rolling phase's `maxPerHost`. */
  maxPerHost: z.array(count).min(1).optional(),
  /** Overrides the daemon's per-host limit (offline target only). */
  hostConcurrency: z.array(count).min(1).optional(),
  /** Gives every VM group this one size. */
  vmSize: z.array(vmSize).min(1).optional(),
});

/** The variables a sweep can vary. */
export type SweepVariable = keyof z.output<typeof sweep>;
export const SWEEP_VARIABLES = Object.keys(sweep.shape) as SweepVariable[];

const metric = z.enum(METRIC_NAMES as [MetricName, ...MetricName[]], {
  error: `expected a metric: ${METRIC_NAMES.join(', ')}`,
});

/** Narrows an operations metric to some operations; a fleet metric only by phase. */
const filter = z.strictObject({
  phase: name.optional(),
  vmGroup: name.optional(),
  action: z.enum(['reboot', 'terminate']).optional(),
  strategy: z.enum(ALL_STRATEGIES).optional(),
});

const threshold = z
  .strictObject({
    metric,
    /** The metric must be at most this... */
    max: z.number({ error: 'expected a number' }).optional(),
    /** ...or at least this. */
    min: z.number({ error: 'expected a number' }).optional(),
    /** Narrows an operations metric to some operations; a fleet metric only by phase. */
    where: filter.optional(),
    /** Stop the remaining runs as soon as a run fails this threshold. */
    abortOnFail: z.boolean({ error: 'expected true or false' }).default(false),
  })
  .refine((t) => (t.max === undefined) !== (t.min === undefined), {
    error: 'give exactly one of max or min',
  });

/** A published figure: what the metric should be, and where it comes from. */
const reference = z.strictObject({
  label: z.string().min(1),
  metric,
  where: filter.optional(),
  value: z.number(),
  source: z.string().default(''),
});

const scenario = z.strictObject({
  /** The schema this file is written against (optional; the JSON Schema's URL or name). */
  $schema: z.string().optional(),
  name,
  description: z.string().default(''),
  /** What question the scenario answers, shown in reports and `experiment list`. */
  answers: z.string().default(''),
  seed: z.number().int().nonnegative().default(1),
  repeat: count.default(1),
  fleet: z.strictObject({
    hosts: z.array(hostGroup).min(1, { error: 'expected at least one host group' }),
    vms: z.array(vmGroup).min(1, { error: 'expected at least one VM group' }),
    /** spread: each VM on the host with the most free memory; pack: the first with room. */
    placement: z.enum(['spread', 'pack']).default('spread'),
  }),
  limits: z
    .strictObject({
      hostConcurrency: count.default(4),
      globalConcurrency: count.nullable().default(null),
      maxWaitSeconds: positive.default(600_000),
    })
    .default({ hostConcurrency: 4, globalConcurrency: null, maxWaitSeconds: 600_000 }),
  phases: z.array(phase).min(1, { error: 'expected at least one phase' }),
  sweep: sweep.default({}),
  thresholds: z.array(threshold).default([]),
  /** Published figures to show beside the simulated ones (the seed's table, say). */
  references: z.array(reference).default([]),
  /** The grid of the time series, in virtual seconds. */
  sampleEverySeconds: positive.default(60),
});

/** A scenario as validated, defaults filled in. */
export type Scenario = z.output<typeof scenario>;
export type HostGroup = Scenario['fleet']['hosts'][number];
export type VmGroup = Scenario['fleet']['vms'][number];
export type VmSize = z.output<typeof vmSize>;
export type Phase = Scenario['phases'][number];
export type PhaseKind = Phase['kind'];
export type Threshold = Scenario['thresholds'][number];
export type Reference = Scenario['references'][number];
export type Sweep = Scenario['sweep'];

/**
 * Validates a scenario (already parsed from YAML or JSON). Throws {@link ScenarioError} naming
 * the first field that is wrong, including what the schema alone cannot see: names used twice,
 * a VM group on an unknown host group, a threshold narrowed to an unknown phase or group, and a
 * fleet whose VMs cannot fit its hosts.
 */
export function parseScenario(value: unknown): Scenario {
  const parsed = scenario.safeParse(value);
  if (!parsed.success) {
    throw new ScenarioError(describeIssues(parsed.error.issues, '(the scenario)'));
  }
  const s = parsed.data;
  const hostGroups = uniqueNames(s.fleet.hosts, 'fleet.hosts');
  const vmGroups = uniqueNames(s.fleet.vms, 'fleet.vms');
  const phases = uniqueNames(s.phases, 'phases');
  s.fleet.vms.forEach((group, i) => {
    if ((group.count === undefined) === (group.perHost === undefined)) {
      throw new ScenarioError(`fleet.vms[${i}]: give exactly one of count or perHost`);
    }
    group.hostGroups?.forEach((h, j) => {
      if (!hostGroups.has(h)) {
        throw new ScenarioError(`fleet.vms[${i}].hostGroups[${j}]: no host group "${h}"`);
      }
    });
  });
  s.phases.forEach((p, i) => {
    const allowed: readonly string[] =
      p.action === 'reboot' ? REBOOT_STRATEGIES : TERMINATE_STRATEGIES;
    if (p.strategy !== undefined && !allowed.includes(p.strategy)) {
      throw new ScenarioError(
        `phases[${i}].strategy: ${p.action} takes ${allowed.join(', ')}, not ${p.strategy}`,
      );
    }
    p.vmGroups?.forEach((g, j) => {
      if (!vmGroups.has(g))
        throw new ScenarioError(`phases[${i}].vmGroups[${j}]: no VM group "${g}"`);
    });
  });
  const checkFilter = (where: Threshold['where'], metricName: MetricName, field: string): void => {
    if (where === undefined) return;
    if (where.phase !== undefined && !phases.has(where.phase)) {
      throw new ScenarioError(`${field}.where.phase: no phase "${where.phase}"`);
    }
    if (where.vmGroup !== undefined && !vmGroups.has(where.vmGroup)) {
      throw new ScenarioError(`${field}.where.vmGroup: no VM group "${where.vmGroup}"`);
    }
    const narrowsOperations =
      where.vmGroup !== undefined || where.action !== undefined || where.strategy !== undefined;
    if (narrowsOperations && METRICS[metricName].over === 'fleet') {
      throw new ScenarioError(
        `${field}.where: ${metricName} is a fleet metric; it can be narrowed by phase only`,
      );
    }
  };
  s.thresholds.forEach((t, i) => checkFilter(t.where, t.metric, `thresholds[${i}]`));
  s.references.forEach((r, i) => checkFilter(r.where, r.metric, `references[${i}]`));
  return s;
}

function uniqueNames(items: readonly { name: string }[], where: string): Set<string> {
  const names = new Set<string>();
  items.forEach((item, i) => {
    if (names.has(item.name)) {
      throw new ScenarioError(`${where}[${i}].name: "${item.name}" is used twice`);
    }
    names.add(item.name);
  });
  return names;
}

/** The scenario schema as JSON Schema (draft 2020-12), for editors and other tools. */
export function scenarioJsonSchema(): Record<string, unknown> {
  return z.toJSONSchema(scenario, { io: 'input', target: 'draft-2020-12' });
}

/** A threshold as a line: `downtime.p99 <= 150 (phase=storm, vmGroup=large)`. */
export function thresholdLabel(t: Threshold): string {
  const bound = t.max !== undefined ? `<= ${t.max}` : `>= ${t.min ?? 0}`;
  const where = Object.entries(t.where ?? {})
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${String(v)}`);
  return `${t.metric} ${bound}${where.length > 0 ? ` (${where.join(', ')})` : ''}`;
}
