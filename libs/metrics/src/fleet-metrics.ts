import { type FleetEvent, type HostDocument, type OperationRecord, VM_LIFECYCLES } from '#fleet';
import { type Errno, type SimOp, hkidUsage, memoryUsageBytes } from '#tdx-sim';
import { REBOOT_STRATEGIES, STEP_NAMES, STRATEGY_ACTIONS, strategiesOf } from '#vmm';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Where the scrape-time gauges read the fleet and the queues from. */
export interface MetricsSources {
  /** Every host's document (read from Redis when Prometheus scrapes). */
  hosts(): Promise<HostDocument[]>;
  /** How many VMs were terminated on each of these hosts within the last 7 days. */
  terminatedVmCounts(hostIds: readonly string[]): Promise<number[]>;
  /** Jobs by queue and state, as the queue reports them. */
  queueCounts(): Promise<Record<string, Record<string, number>>>;
}

/** Options of the registry. */
export interface MetricsOptions {
  /** Adds a `host` label to the per-host gauges (for small fleets only). */
  hostLabel: boolean;
}

const MEMORY_USES = [
  'free',
  'guest_private',
  'retained',
  'orphaned',
  'control',
  'in_flight',
  'leaked',
] as const;
/** The states of `tdxfleet_hkids`: they add up to the pool, as `hkidUsage` counts it. */
const HKID_STATES = ['free', 'owned', 'in_flight', 'leaked'] as const;
/** Every action and strategy of an operation: a boot (strategy `none`), then each declared one. */
const OPERATION_KINDS: ReadonlyArray<{ action: string; strategy: string }> = [
  { action: 'boot', strategy: 'none' },
  ...STRATEGY_ACTIONS.flatMap((action) =>
    strategiesOf(action).map((strategy) => ({ action, strategy })),
  ),
];
const OUTCOMES = ['succeeded', 'failed', 'cancelled'] as const;
/** The errnos operations wait on: present (at zero) from the first scrape. */
const WAIT_ERRNOS: ReadonlyArray<[SimOp, Errno]> = [
  ['KVM_TDX_INIT_VM', 'ENOSPC'],
  ['KVM_TDX_INIT_VM', 'EBUSY'],
  ['KVM_RUN', 'ENOMEM'],
  ['KVM_TDX_INIT_MEM_REGION', 'ENOMEM'],
];

/** Default Node metrics that break the `_total` naming rule (see the constructor). */
const DEFAULT_GAUGES_NAMED_LIKE_COUNTERS = [
  'nodejs_active_handles_total',
  'nodejs_active_requests_total',
  'nodejs_active_resources_total',
];

/** Buckets for simulated seconds: from sub-second boots to the 5539 s of the seed's largest VM. */
const SIMULATED_SECONDS_BUCKETS = [
  0.01, 0.1, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000,
];
/** Buckets for wall seconds spent in a queue or running a job. */
const WALL_SECONDS_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

/**
 * What a scrape-time source answers, or null when Redis does not: the gauge then has no samples
 * (rather than a misleading zero) and the rest of the scrape, process metrics included, goes on.
 */
async function readOrNull<T>(read: () => Promise<T>): Promise<T | null> {
  try {
    return await read();
  } catch {
    return null;
  }
}

/** `load`, with a result shared by every caller within `ms` of the first. */
function shareFor<T>(ms: number, load: () => Promise<T>): () => Promise<T> {
  let cached: { at: number; value: Promise<T> } | null = null;
  return () => {
    const now = Date.now();
    if (cached === null || now - cached.at > ms) {
      const value = load();
      cached = { at: now, value };
      value.catch(() => (cached = null));
    }
    return cached.value;
  };
}

/**
 * The process's Prometheus metrics (one registry per process, `tdxfleet_` prefix, base units,
 * bounded labels: never a VM or job id). Fleet and queue gauges are read when scraped; the
 * counters and histograms are fed by the operations this process runs.
 */
export class FleetMetrics {
  readonly registry = new Registry();
  private readonly hostLabel: boolean;

  private readonly operations: Counter<'action' | 'strategy' | 'outcome'>;
  private readonly errnos: Counter<'operation' | 'errno'>;
  private readonly bytesReclaimed: Counter;
  private readonly bytesReused: Counter;
  private readonly bytesAllocated: Counter;
  private readonly reclaimDuration: Histogram<'path'>;
  private readonly rebootDowntime: Histogram<'strategy'>;
  private readonly stepDuration: Histogram<'step'>;
  private readonly queueWait: Histogram<'queue'>;
  private readonly queueRun: Histogram<'queue'>;
  private readonly retries: Counter<'queue'>;
  private readonly stalled: Counter<'queue'>;

  constructor(rawSources: MetricsSources, options: MetricsOptions) {
    this.hostLabel = options.hostLabel;
    // One scrape reads the hosts once, however many gauges ask.
    const sources: MetricsSources = {
      hosts: shareFor(250, () => rawSources.hosts()),
      terminatedVmCounts: (hostIds) => rawSources.terminatedVmCounts(hostIds),
      queueCounts: () => rawSources.queueCounts(),
    };
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    // prom-client's totals of active handles, requests and resources are gauges named `_total`,
    // which Prometheus reserves for counters (`promtool check metrics` refuses them); the
    // by-type gauges without the suffix stay, and summing them gives the same totals.
    for (const name of DEFAULT_GAUGES_NAMED_LIKE_COUNTERS) this.registry.removeSingleMetric(name);
    const hostLabels = this.hostLabel ? ['host'] : [];
    const hostLabel = this.hostLabel;
    const withHost = <T extends Record<string, string>>(labels: T, hostId: string) =>
      hostLabel ? { ...labels, host: hostId } : labels;

    new Gauge({
      name: 'tdxfleet_vms',
      help:
        'VMs of the fleet by lifecycle state; terminated: within the last 7 days (read from Redis ' +
        'at scrape time).',
      labelNames: ['state', ...hostLabels],
      registers,
      async collect() {
        this.reset();
        const docs = await readOrNull(() => sources.hosts());
        if (docs === null) return;
        const terminated = await readOrNull(() =>
          sources.terminatedVmCounts(docs.map((doc) => doc.id)),
        );
        if (terminated === null) return;
        if (!hostLabel) for (const state of VM_LIFECYCLES) this.set({ state }, 0);
        docs.forEach((doc, i) => {
          for (const state of VM_LIFECYCLES) if (hostLabel) this.set({ state, host: doc.id }, 0);
          for (const vm of Object.values(doc.vms)) this.inc(withHost({ state: vm.state }, doc.id));
          // A terminated VM leaves its host's document (those of earlier versions stayed in it).
          this.inc(withHost({ state: 'terminated' }, doc.id), terminated[i] ?? 0);
        });
      },
    });
    new Gauge({
      name: 'tdxfleet_hkids_in_use',
      help: 'HKIDs held by VMs or being released (read from Redis at scrape time).',
      labelNames: hostLabels,
      registers,
      async collect() {
        this.reset();
        const docs = await readOrNull(() => sources.hosts());
        if (docs === null) return;
        if (!hostLabel) this.set(0);
        for (const doc of docs) {
          const usage = hkidUsage(doc.sim);
          this.inc(withHost({}, doc.id), usage.owned + usage.inFlight);
        }
      },
    });
    new Gauge({
      name: 'tdxfleet_hkids',
      help:
        'HKIDs of the hosts by state: free, owned (by a VM, alive or dying), in_flight (being ' +
        'released), leaked (lost to a failed release, owned by no VM); the states add up to the ' +
        'pool (read from Redis at scrape time).',
      labelNames: ['state', ...hostLabels],
      registers,
      async collect() {
        this.reset();
        const docs = await readOrNull(() => sources.hosts());
        if (docs === null) return;
        if (!hostLabel) for (const state of HKID_STATES) this.set({ state }, 0);
        for (const doc of docs) {
          const usage = hkidUsage(doc.sim);
          const byState: Record<(typeof HKID_STATES)[number], number> = {
            free: usage.free,
            owned: usage.owned,
            in_flight: usage.inFlight,
            leaked: usage.leaked,
          };
          for (const state of HKID_STATES) this.inc(withHost({ state }, doc.id), byState[state]);
        }
      },
    });
    new Gauge({
      name: 'tdxfleet_zombie_hkids',
      help: 'HKIDs held by VMs whose fds are all closed, kept alive only by mappings (read at scrape time).',
      labelNames: hostLabels,
      registers,
      async collect() {
        this.reset();
        const docs = await readOrNull(() => sources.hosts());
        if (docs === null) return;
        if (!hostLabel) this.set(0);
        for (const doc of docs) this.inc(withHost({}, doc.id), hkidUsage(doc.sim).zombies);
      },
    });
    new Gauge({
      name: 'tdxfleet_host_memory_bytes',
      help:
        'Host memory by use, in bytes: free, guest_private (mapped in TDs), retained (in guest_memfds a live VM keeps for reuse), ' +
        'orphaned (in guest_memfds no live VM refers to), control (TDX control and S-EPT pages), in_flight (being returned), ' +
        'leaked (held by TDs whose HKID release failed). Read at scrape time.',
      labelNames: ['use', ...hostLabels],
      registers,
      async collect() {
        this.reset();
        const docs = await readOrNull(() => sources.hosts());
        if (docs === null) return;
        if (!hostLabel) for (const use of MEMORY_USES) this.set({ use }, 0);
        for (const doc of docs) {
          const m = memoryUsageBytes(doc.sim);
          const byUse: Record<(typeof MEMORY_USES)[number], number> = {
            free: m.free,
            guest_private: m.private,
            retained: m.retained,
            orphaned: m.orphaned,
            control: m.control + m.sept,
            in_flight: m.inFlight,
            leaked: m.leaked,
          };
          for (const use of MEMORY_USES) this.inc(withHost({ use }, doc.id), byUse[use]);
        }
      },
    });
    new Gauge({
      name: 'tdxfleet_queue_jobs',
      help: 'Jobs by queue and state, read from the queue at scrape time.',
      labelNames: ['queue', 'state'],
      registers,
      async collect() {
        this.reset();
        const queues = await readOrNull(() => sources.queueCounts());
        if (queues === null) return;
        for (const [queue, counts] of Object.entries(queues)) {
          for (const [state, count] of Object.entries(counts)) this.set({ queue, state }, count);
        }
      },
    });

    this.operations = new Counter({
      name: 'tdxfleet_operations_total',
      help: 'Operations finished by this process, by action, strategy and outcome.',
      labelNames: ['action', 'strategy', 'outcome'],
      registers,
    });
    this.errnos = new Counter({
      name: 'tdxfleet_errnos_total',
      help: 'Errnos returned by simulated calls in this process (waits and failures), by call and errno.',
      labelNames: ['operation', 'errno'],
      registers,
    });
    this.bytesReclaimed = new Counter({
      name: 'tdxfleet_reclaimed_bytes_total',
      help: 'Bytes taken back from TDs (Dynamic Page Removal and TEARDOWN reclaim) by operations of this process.',
      registers,
    });
    this.bytesReused = new Counter({
      name: 'tdxfleet_reused_bytes_total',
      help: 'Guest bytes a new boot got from memory its VM already had (kept across the reboot).',
      registers,
    });
    this.bytesAllocated = new Counter({
      name: 'tdxfleet_allocated_bytes_total',
      help: 'Fresh host bytes allocated to guest_memfds by operations of this process.',
      registers,
    });
    this.reclaimDuration = new Histogram({
      name: 'tdxfleet_reclaim_duration_seconds',
      help: 'Simulated seconds an operation spent reclaiming memory, by path: dynamic_removal (TD still RUNNABLE) or teardown (after the HKID release).',
      labelNames: ['path'],
      buckets: SIMULATED_SECONDS_BUCKETS,
      registers,
    });
    this.rebootDowntime = new Histogram({
      name: 'tdxfleet_reboot_downtime_seconds',
      help: 'Simulated seconds from the start of a reboot until the new VM runs, by strategy.',
      labelNames: ['strategy'],
      buckets: SIMULATED_SECONDS_BUCKETS,
      registers,
    });
    this.stepDuration = new Histogram({
      name: 'tdxfleet_job_step_duration_seconds',
      help: 'Simulated seconds of each job step, by step name.',
      labelNames: ['step'],
      buckets: SIMULATED_SECONDS_BUCKETS,
      registers,
    });
    this.queueWait = new Histogram({
      name: 'tdxfleet_queue_wait_seconds',
      help: 'Wall seconds a job waited in its queue before a worker took it.',
      labelNames: ['queue'],
      buckets: WALL_SECONDS_BUCKETS,
      registers,
    });
    this.queueRun = new Histogram({
      name: 'tdxfleet_queue_run_seconds',
      help: 'Wall seconds a worker of this process ran a job (one attempt).',
      labelNames: ['queue'],
      buckets: WALL_SECONDS_BUCKETS,
      registers,
    });
    this.retries = new Counter({
      name: 'tdxfleet_queue_retries_total',
      help: 'Job attempts that failed with an unexpected error and will be retried.',
      labelNames: ['queue'],
      registers,
    });
    this.stalled = new Counter({
      name: 'tdxfleet_queue_stalled_total',
      help: 'Jobs found stalled (their worker died) and handed to another worker.',
      labelNames: ['queue'],
      registers,
    });

    // Every bounded label set starts at zero, so each family has samples from the first scrape.
    for (const kind of OPERATION_KINDS) {
      for (const outcome of OUTCOMES) this.operations.inc({ ...kind, outcome }, 0);
    }
    for (const path of ['dynamic_removal', 'teardown']) this.reclaimDuration.zero({ path });
    for (const strategy of REBOOT_STRATEGIES) this.rebootDowntime.zero({ strategy });
    for (const step of STEP_NAMES) this.stepDuration.zero({ step });
    for (const queue of ['operations', 'batches']) {
      this.queueWait.zero({ queue });
      this.queueRun.zero({ queue });
      this.retries.inc({ queue }, 0);
      this.stalled.inc({ queue }, 0);
    }
    for (const [operation, errno] of WAIT_ERRNOS) this.errnos.inc({ operation, errno }, 0);
    this.bytesReclaimed.inc(0);
    this.bytesReused.inc(0);
    this.bytesAllocated.inc(0);
  }

  /** Events of a committed change: counts the errnos of steps that had to wait. */
  observeEvents(events: readonly FleetEvent[]): void {
    for (const event of events) {
      if (event.type === 'job.waiting' && event.errno !== undefined) {
        this.errnos.inc({ operation: event.call ?? 'unknown', errno: event.errno });
      }
    }
  }

  /** An operation that ended: outcome, durations and bytes. */
  observeFinished(op: OperationRecord): void {
    const outcome =
      op.state === 'succeeded' || op.state === 'failed' || op.state === 'cancelled'
        ? op.state
        : 'failed';
    this.operations.inc({ action: op.action, strategy: op.strategy ?? 'none', outcome });
    for (const step of op.steps) {
      if (step.state === 'done')
        this.stepDuration.observe({ step: step.name }, step.virtualSeconds);
      if (step.state === 'failed' && step.errno !== undefined && op.error?.code === 'step_failed') {
        this.errnos.inc({ operation: step.call ?? 'unknown', errno: step.errno });
      }
    }
    if (op.totals.removalSeconds > 0)
      this.reclaimDuration.observe({ path: 'dynamic_removal' }, op.totals.removalSeconds);
    if (op.totals.teardownSeconds > 0)
      this.reclaimDuration.observe({ path: 'teardown' }, op.totals.teardownSeconds);
    const pageBytes = 4096;
    this.bytesReclaimed.inc(op.totals.reclaimedPages * pageBytes);
    this.bytesReused.inc(op.totals.reusedPages * pageBytes);
    this.bytesAllocated.inc(op.totals.allocatedPages * pageBytes);
    if (op.action === 'reboot' && op.result !== null && op.strategy !== null) {
      this.rebootDowntime.observe({ strategy: op.strategy }, op.result.downtimeSeconds);
    }
  }

  /** A job a worker of this process took, after waiting in its queue (null: not measured). */
  observeJobWait(queue: string, waitedSeconds: number | null): void {
    if (waitedSeconds !== null) this.queueWait.observe({ queue }, Math.max(0, waitedSeconds));
  }

  /** An attempt at a job by this process ended after `ranSeconds`. */
  observeJobRun(queue: string, ranSeconds: number): void {
    this.queueRun.observe({ queue }, Math.max(0, ranSeconds));
  }

  jobRetried(queue: string): void {
    this.retries.inc({ queue });
  }

  jobStalled(queue: string): void {
    this.stalled.inc({ queue });
  }

  /** The text Prometheus scrapes. */
  async text(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
