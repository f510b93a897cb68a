import { z } from 'zod';
import { parse as parseYaml } from 'yaml';
import {
  OFFLINE_ACTIONS,
  describeIssues,
  type OfflineBatch,
  type OfflineHostSpec,
  type OfflineInput,
  type OfflineRequest,
  type OfflineVmSpec,
} from '#fleet';
import {
  KERNEL_SWITCHES,
  KERNEL_SWITCH_NAMES,
  type KernelFeatures,
  MAINLINE_KERNEL,
  isFlagSwitch,
  kernelSwitchValuesText,
} from '#tdx-sim';
import { REBOOT_STRATEGIES, TERMINATE_STRATEGIES } from '#vmm';

/** A fleet file `sim fleet` cannot run, naming the field that is wrong. */
export class FleetFileError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FleetFileError';
  }
}

const positive = z
  .number({ error: 'expected a number > 0' })
  .positive({ error: 'expected a number > 0' });
const count = z
  .number({ error: 'expected an integer > 0' })
  .int({ error: 'expected an integer > 0' })
  .positive({ error: 'expected an integer > 0' });
const time = z
  .number({ error: 'expected a number of virtual seconds >= 0' })
  .nonnegative({ error: 'expected a number of virtual seconds >= 0' });
const id = z.string({ error: 'expected a string' }).min(1, { error: 'expected a non-empty id' });
const strategies = [...new Set<string>([...REBOOT_STRATEGIES, ...TERMINATE_STRATEGIES])];
const strategy = z.enum(strategies as [string, ...string[]], {
  error: `expected one of ${strategies.join(', ')}`,
});

/** The kernel switches, each from its declaration; a switch left out takes mainline's value. */
const kernel = z.strictObject(
  Object.fromEntries(
    KERNEL_SWITCH_NAMES.map((name) => {
      const { values, mainline } = KERNEL_SWITCHES[name];
      const schema = isFlagSwitch(name)
        ? z.boolean({ error: 'expected true or false' })
        : z.enum(values as unknown as [string, ...string[]], {
            error: `expected ${kernelSwitchValuesText(name)}`,
          });
      return [name, (schema as z.ZodType<unknown>).default(mainline)];
    }),
  ),
) as unknown as z.ZodType<KernelFeatures, Partial<KernelFeatures> | undefined>;

/** When one step of the HKID release fails: the next n attempts, or every k-th one. */
const releaseFaultRule = z.union(
  [
    z.strictObject({
      failNext: z
        .number()
        .int({ error: 'expected an integer >= 0' })
        .nonnegative({ error: 'expected an integer >= 0' }),
    }),
    z.strictObject({ everyNth: count }),
  ],
  { error: 'expected { failNext: n } (n >= 0) or { everyNth: k } (k >= 1)' },
);

/** Which HKID release attempts fail on a host; a step left out never fails. */
const hkidReleaseFaults = z.strictObject({
  VPFLUSHDONE: releaseFaultRule.optional(),
  FREEID: releaseFaultRule.optional(),
});

/**
 * A host, or with `count` a group of hosts named `<idPrefix>-0001`, `<idPrefix>-0002`... (one such
 * host without an id or a count).
 */
const hostEntry = z.strictObject({
  id: id.optional(),
  count: count.optional(),
  idPrefix: id.optional(),
  memoryGiB: positive,
  hkids: count.default(63),
  packages: count.default(2),
  cpus: count.default(128),
  hkidCgroupLimit: z.number().int().nonnegative().nullable().default(null),
  kernel: kernel.default(MAINLINE_KERNEL),
  costModel: z
    .enum(['calibrated', 'mechanistic'], { error: 'expected calibrated or mechanistic' })
    .default('calibrated'),
  hkidReleaseFaults: hkidReleaseFaults.optional(),
});

/** A VM, or with `count` a group; booted at `bootAt` (null: only by a request). */
const vmEntry = z.strictObject({
  id: id.optional(),
  count: count.optional(),
  idPrefix: id.optional(),
  vcpus: count,
  memoryGiB: positive,
  hostId: id.nullable().default(null),
  bootAt: time.nullable().default(0),
});

/** A timed request for one VM, a list of VMs, or every VM of the file. */
const requestEntry = z.strictObject({
  at: time,
  action: z.enum(OFFLINE_ACTIONS, { error: `expected one of ${OFFLINE_ACTIONS.join(', ')}` }),
  vmId: id.optional(),
  vmIds: z.array(id).optional(),
  allVms: z.literal(true, { error: 'expected true' }).optional(),
  strategy: strategy.optional(),
});

const batchEntry = z.strictObject({
  at: time,
  selector: z.strictObject({
    hostIds: z.array(id).optional(),
    vmIds: z.array(id).optional(),
    all: z.literal(true, { error: 'expected true' }).optional(),
  }),
  action: z.enum(['reboot', 'terminate'], { error: 'expected reboot or terminate' }),
  strategy,
  maxConcurrency: count,
  ratePerSecond: positive.nullable().default(null),
});

const fleetFile = z.strictObject({
  hosts: z.array(hostEntry).min(1, { error: 'expected at least one host' }),
  vms: z.array(vmEntry).default([]),
  requests: z.array(requestEntry).default([]),
  batches: z.array(batchEntry).default([]),
  limits: z
    .strictObject({
      hostConcurrency: count.default(4),
      globalConcurrency: count.nullable().default(null),
      maxWaitSeconds: positive.default(600_000),
    })
    .default({ hostConcurrency: 4, globalConcurrency: null, maxWaitSeconds: 600_000 }),
  sampleEverySeconds: positive.default(60),
  hostSeries: z.boolean({ error: 'expected true or false' }).default(false),
});

/** What a fleet file holds, as written (groups not yet expanded). */
export type FleetFile = z.output<typeof fleetFile>;

/** Reads a fleet file's text: JSON, or YAML when the name ends in .yaml or .yml. */
export function parseFleetText(text: string, name: string): unknown {
  try {
    return /\.ya?ml$/i.test(name) ? (parseYaml(text) as unknown) : (JSON.parse(text) as unknown);
  } catch (error) {
    const kind = /\.ya?ml$/i.test(name) ? 'YAML' : 'JSON';
    throw new FleetFileError(
      `${name} is not ${kind}: ${(error as Error).message.split('\n')[0] ?? ''}`,
    );
  }
}

/**
 * Validates a fleet file and expands it into the offline engine's input: groups into ids, VMs'
 * `bootAt` into boot requests, requests for several VMs into one each. Throws
 * {@link FleetFileError} naming the first field that is wrong.
 */
export function fleetInput(value: unknown): OfflineInput {
  const parsed = fleetFile.safeParse(value);
  if (!parsed.success) {
    throw new FleetFileError(describeIssues(parsed.error.issues, '(the file)'));
  }
  const file = parsed.data;
  const counters = new Map<string, number>();
  const expand = (
    entry: { id?: string | undefined; count?: number | undefined; idPrefix?: string | undefined },
    where: string,
    defaultPrefix: string,
  ): string[] => {
    if (entry.id !== undefined && entry.count !== undefined) {
      throw new FleetFileError(`${where}: give either id or count, not both`);
    }
    if (entry.id !== undefined) {
      if (entry.idPrefix !== undefined)
        throw new FleetFileError(`${where}.idPrefix: only with count`);
      return [entry.id];
    }
    // Neither: one, numbered like a group of one.
    const n = entry.count ?? 1;
    const prefix = entry.idPrefix ?? defaultPrefix;
    const first = counters.get(prefix) ?? 0;
    counters.set(prefix, first + n);
    return Array.from(
      { length: n },
      (_, i) => `${prefix}-${String(first + i + 1).padStart(4, '0')}`,
    );
  };
  const unique = (ids: Set<string>, value: string, where: string): void => {
    if (ids.has(value)) throw new FleetFileError(`${where}: id "${value}" is used twice`);
    ids.add(value);
  };

  const hosts: OfflineHostSpec[] = [];
  const hostIds = new Set<string>();
  file.hosts.forEach((entry, i) => {
    const { id: _id, count: _count, idPrefix: _prefix, ...spec } = entry;
    for (const hostId of expand(entry, `hosts[${i}]`, 'h')) {
      unique(hostIds, hostId, `hosts[${i}]`);
      const { hkidReleaseFaults: faults, ...rest } = spec;
      hosts.push({
        id: hostId,
        ...rest,
        kernel: { ...spec.kernel },
        ...(faults === undefined ? {} : { hkidReleaseFaults: { ...faults } }),
      });
    }
  });

  const vms: OfflineVmSpec[] = [];
  const vmIds = new Set<string>();
  const boots: OfflineRequest[] = [];
  file.vms.forEach((entry, i) => {
    if (entry.hostId !== null && !hostIds.has(entry.hostId)) {
      throw new FleetFileError(`vms[${i}].hostId: no host "${entry.hostId}"`);
    }
    for (const vmId of expand(entry, `vms[${i}]`, 'vm')) {
      unique(vmIds, vmId, `vms[${i}]`);
      vms.push({ id: vmId, vcpus: entry.vcpus, memoryGiB: entry.memoryGiB, hostId: entry.hostId });
      if (entry.bootAt !== null) boots.push({ at: entry.bootAt, action: 'boot', vmId });
    }
  });

  const knownVm = (vmId: string, where: string): string => {
    if (!vmIds.has(vmId)) throw new FleetFileError(`${where}: no VM "${vmId}"`);
    return vmId;
  };
  const checkStrategy = (
    action: string,
    value: string | undefined,
    where: string,
  ): OfflineRequest['strategy'] => {
    const allowed: readonly string[] =
      action === 'reboot' ? REBOOT_STRATEGIES : action === 'terminate' ? TERMINATE_STRATEGIES : [];
    if (allowed.length === 0) {
      if (value !== undefined)
        throw new FleetFileError(`${where}.strategy: ${action} takes no strategy`);
      return null;
    }
    if (value === undefined)
      throw new FleetFileError(`${where}.strategy: required for ${action} (${allowed.join(', ')})`);
    if (!allowed.includes(value)) {
      throw new FleetFileError(
        `${where}.strategy: expected one of ${allowed.join(', ')} for ${action}`,
      );
    }
    return value as OfflineRequest['strategy'];
  };

  const requests: OfflineRequest[] = [...boots];
  file.requests.forEach((entry, i) => {
    const where = `requests[${i}]`;
    const targets = [entry.vmId !== undefined, entry.vmIds !== undefined, entry.allVms === true];
    if (targets.filter(Boolean).length !== 1) {
      throw new FleetFileError(`${where}: needs exactly one of vmId, vmIds or allVms: true`);
    }
    const strategy = checkStrategy(entry.action, entry.strategy, where);
    const ids =
      entry.vmId !== undefined
        ? [knownVm(entry.vmId, `${where}.vmId`)]
        : entry.vmIds !== undefined
          ? entry.vmIds.map((v, j) => knownVm(v, `${where}.vmIds[${j}]`))
          : vms.map((vm) => vm.id);
    for (const vmId of ids) requests.push({ at: entry.at, action: entry.action, vmId, strategy });
  });

  const batches: OfflineBatch[] = file.batches.map((entry, i) => {
    const where = `batches[${i}]`;
    const chosen = [
      entry.selector.all === true,
      entry.selector.hostIds !== undefined,
      entry.selector.vmIds !== undefined,
    ];
    if (chosen.filter(Boolean).length !== 1) {
      throw new FleetFileError(
        `${where}.selector: needs exactly one of hostIds, vmIds or all: true`,
      );
    }
    entry.selector.hostIds?.forEach((h, j) => {
      if (!hostIds.has(h))
        throw new FleetFileError(`${where}.selector.hostIds[${j}]: no host "${h}"`);
    });
    entry.selector.vmIds?.forEach((v, j) => knownVm(v, `${where}.selector.vmIds[${j}]`));
    const batchStrategy = checkStrategy(entry.action, entry.strategy, where);
    return {
      at: entry.at,
      selector: entry.selector,
      action: entry.action,
      strategy: batchStrategy ?? 'cold',
      maxConcurrency: entry.maxConcurrency,
      ratePerSecond: entry.ratePerSecond,
    };
  });

  return {
    hosts,
    vms,
    requests,
    batches,
    limits: file.limits,
    sampleEverySeconds: file.sampleEverySeconds,
    hostSeries: file.hostSeries,
  };
}
