import { type MetricName, type RunRecord, measuredFromOffline, runMetrics } from '#experiments';
import { type OfflineInput, OfflineFleet } from '#fleet';
import { type KernelFeatures, gibToBytes, kernelLabel } from '#tdx-sim';
import { type RebootStrategy, runnableStrategies } from '#vmm';

// A fleet file run offline as written and with what-if overrides (every reboot's strategy, the
// hosts' kernel switches), each measured the way experiments measure a run: the operations the
// file's requests issued, as one phase from the first request to the last end.

/** What a replay changes of the file. */
export interface ReplayOverrides {
  strategy: RebootStrategy | null;
  kernel: Partial<KernelFeatures>;
}

/** The numbers of one replay. */
export const REPLAY_METRICS = [
  'operations.total',
  'operations.failed',
  'operations.refused',
  'downtime.p50',
  'downtime.p95',
  'downtime.p99',
  'makespan',
  'memory.headroomBytes',
] as const satisfies readonly MetricName[];

export type ReplaySummary = Record<(typeof REPLAY_METRICS)[number], number>;

/** One operation of a replay, for lining it up with what the daemon did. */
export interface ReplayedOperation {
  vmId: string;
  hostId: string | null;
  action: string;
  strategy: string | null;
  state: string;
  requestedAt: number;
  downtimeSeconds: number | null;
}

export interface ReplayRun {
  summary: ReplaySummary;
  operations: ReplayedOperation[];
}

/** The input with every reboot's strategy and every host's kernel switches overridden. */
export function overriddenInput(input: OfflineInput, overrides: ReplayOverrides): OfflineInput {
  const strategy = overrides.strategy;
  return {
    ...input,
    hosts: input.hosts.map((host) => ({
      ...host,
      kernel: { ...host.kernel, ...overrides.kernel },
    })),
    requests: (input.requests ?? []).map((request) =>
      request.action === 'reboot' && strategy !== null ? { ...request, strategy } : request,
    ),
    batches: (input.batches ?? []).map((batch) =>
      batch.action === 'reboot' && strategy !== null ? { ...batch, strategy } : batch,
    ),
  };
}

/**
 * Why the input cannot run as asked, or null: a reboot or terminate whose strategy the kernel of
 * a host it may land on cannot run (a VM without a host may land on any).
 */
export function strategyProblem(input: OfflineInput): string | null {
  const hostOf = new Map(input.vms.map((vm) => [vm.id, vm.hostId ?? null]));
  const hostsOf = (vmIds: readonly string[]): (string | null)[] =>
    vmIds.map((vmId) => hostOf.get(vmId) ?? null);
  const asked: { action: string; strategy?: string | null; hostIds: (string | null)[] }[] = [
    ...(input.requests ?? []).map((r) => ({ ...r, hostIds: hostsOf([r.vmId]) })),
    ...(input.batches ?? []).map((b) => ({
      ...b,
      hostIds: b.selector.hostIds ?? (b.selector.vmIds ? hostsOf(b.selector.vmIds) : [null]),
    })),
  ];
  for (const request of asked) {
    if (request.action !== 'reboot' && request.action !== 'terminate') continue;
    const strategy = request.strategy ?? null;
    if (strategy === null) continue;
    for (const host of input.hosts) {
      if (!request.hostIds.includes(null) && !request.hostIds.includes(host.id)) continue;
      const runnable: readonly string[] =
        request.action === 'reboot'
          ? runnableStrategies('reboot', host.kernel)
          : runnableStrategies('terminate', host.kernel);
      if (!runnable.includes(strategy)) {
        return `${request.action} ${strategy} does not run on host ${host.id}'s kernel (${kernelLabel(host.kernel)})`;
      }
    }
  }
  return null;
}

/**
 * Runs the input offline and measures the operations its requests and batches issued from
 * `from` on (the VMs' own boots before it set the fleet up and are left out).
 */
export function replayRun(input: OfflineInput, from: number): ReplayRun {
  const fleet = new OfflineFleet(input);
  fleet.sampleAlsoAt(from);
  fleet.run();
  const output = fleet.output();
  const vmById = new Map(input.vms.map((vm) => [vm.id, vm]));
  const issued = output.operations.filter((op) => op.requestedAt >= from);
  const end = issued.reduce(
    (latest, op) => Math.max(latest, op.finishedAt ?? op.requestedAt),
    from,
  );
  const record: RunRecord = {
    operations: issued.map((op) => {
      const vm = vmById.get(op.vmId);
      return measuredFromOffline(op, {
        phase: 'replay',
        vmGroup: '',
        vcpus: vm?.vcpus ?? 0,
        memoryGiB: vm?.memoryGiB ?? 0,
      });
    }),
    refusals: output.refusals
      .filter((refusal) => refusal.at >= from)
      .map((refusal) => ({
        phase: 'replay',
        vmId: refusal.vmId,
        vmGroup: null,
        action: refusal.action,
        strategy: refusal.strategy,
        code: refusal.code,
      })),
    phases: [
      { name: 'replay', kind: 'storm', startedAt: from, endedAt: end, operations: issued.length },
    ],
    series: { everySeconds: output.series.everySeconds, samples: output.series.fleet },
    capacity: {
      hosts: input.hosts.length,
      vms: input.vms.length,
      memoryBytes: input.hosts.reduce((sum, host) => sum + gibToBytes(host.memoryGiB), 0),
      hkids: input.hosts.reduce((sum, host) => sum + host.hkids, 0),
    },
  };
  const metrics = runMetrics(record);
  const summary = Object.fromEntries(
    REPLAY_METRICS.map((name) => [name, metrics[name] ?? 0]),
  ) as ReplaySummary;
  return {
    summary,
    operations: issued.map((op) => ({
      vmId: op.vmId,
      hostId: op.hostId,
      action: op.action,
      strategy: op.strategy,
      state: op.state,
      requestedAt: op.requestedAt,
      downtimeSeconds: op.result?.downtimeSeconds ?? null,
    })),
  };
}

/** Each metric's change from `before` to `after`: the difference and its ratio to `before`. */
export function summaryChange(
  before: ReplaySummary,
  after: ReplaySummary,
): Record<keyof ReplaySummary, { difference: number; relative: number | null }> {
  return Object.fromEntries(
    REPLAY_METRICS.map((name) => {
      const difference = after[name] - before[name];
      return [
        name,
        { difference, relative: before[name] === 0 ? null : difference / before[name] },
      ];
    }),
  ) as Record<keyof ReplaySummary, { difference: number; relative: number | null }>;
}
