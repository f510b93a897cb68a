import type { FleetSample } from '#fleet';
import { METRICS, type MetricName } from './metrics.js';
import type {
  Breakdown,
  CountByCause,
  GroupStats,
  PhaseSpan,
  SeriesColumns,
  SlowOperation,
} from './result.js';
import { distributionOf } from './stats.js';

// From what a run did (its operations, refusals, phases and the fleet's time series) to its
// numbers. Every target hands the same shapes here, so a number means the same whatever ran it.

/** An operation a phase issued, as it ended. Times in virtual seconds from the run's start. */
export interface MeasuredOperation {
  vmId: string;
  hostId: string | null;
  phase: string;
  vmGroup: string;
  vcpus: number;
  memoryGiB: number;
  action: string;
  strategy: string | null;
  state: 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled';
  requestedAt: number;
  /** When it reached its host (after global admission; live, after the submission's lag). */
  arrivedAt: number | null;
  startedAt: number | null;
  finishedAt: number | null;
  /** The engine's summary of a succeeded operation. */
  result: { downtimeSeconds: number; reclaimSeconds: number; hkidHeldSeconds: number } | null;
  /** Steps that waited: the errno that made them (null: the HKID release lock). */
  waits: readonly { step: string; errno: string | null; seconds: number }[];
  error: { code: string; step?: string | undefined; errno?: string | undefined } | null;
}

/** A request refused before anything changed, or an arrival that found no idle VM. */
export interface MeasuredRefusal {
  phase: string;
  vmId: string | null;
  vmGroup: string | null;
  action: string;
  strategy: string | null;
  code: string;
}

/** The fleet at one point of the sampling grid: the offline engine's sample, which live runs fill too. */
export type MeasuredSample = FleetSample;

export interface RunRecord {
  operations: readonly MeasuredOperation[];
  refusals: readonly MeasuredRefusal[];
  phases: readonly PhaseSpan[];
  series: { everySeconds: number; samples: readonly MeasuredSample[] };
  capacity: { hosts: number; vms: number; memoryBytes: number; hkids: number };
}

/** What a threshold narrows a metric to. */
export interface MetricFilter {
  phase?: string | undefined;
  vmGroup?: string | undefined;
  action?: string | undefined;
  strategy?: string | undefined;
}

/** How many of the slowest operations a result keeps for the per-VM breakdown. */
export const SLOWEST_KEPT = 50;

/** Where an operation's time went; the parts add up to its completion time. */
export function breakdownOf(op: MeasuredOperation): Breakdown {
  const end = op.finishedAt ?? op.requestedAt;
  const completion = Math.max(0, end - op.requestedAt);
  const queue = Math.min(completion, Math.max(0, (op.startedAt ?? end) - op.requestedAt));
  let hkidWait = 0;
  let memoryWait = 0;
  let lockWait = 0;
  for (const wait of op.waits) {
    // ENOSPC: no free HKID; EBUSY at init: the HKID cgroup limit. ENOMEM: no free memory.
    if (wait.errno === 'ENOSPC' || wait.errno === 'EBUSY') hkidWait += wait.seconds;
    else if (wait.errno === 'ENOMEM') memoryWait += wait.seconds;
    else lockWait += wait.seconds;
  }
  const afterWaits = Math.max(0, completion - queue - hkidWait - memoryWait - lockWait);
  const reclaim = Math.min(afterWaits, op.result?.reclaimSeconds ?? 0);
  return { queue, hkidWait, memoryWait, lockWait, reclaim, work: afterWaits - reclaim };
}

function matches(
  op: { phase: string; vmGroup: string | null; action: string; strategy: string | null },
  f: MetricFilter,
): boolean {
  return (
    (f.phase === undefined || op.phase === f.phase) &&
    (f.vmGroup === undefined || op.vmGroup === f.vmGroup) &&
    (f.action === undefined || op.action === f.action) &&
    (f.strategy === undefined || op.strategy === f.strategy)
  );
}

const DISTRIBUTED = [
  'downtime',
  'completion',
  'reclaim',
  'hkidHeld',
  'queue',
  'hkidWait',
  'memoryWait',
] as const;

/** The per-operation quantities of a succeeded operation, by distribution name. */
function quantities(op: MeasuredOperation): Record<(typeof DISTRIBUTED)[number], number> {
  const b = breakdownOf(op);
  return {
    downtime: op.result?.downtimeSeconds ?? 0,
    completion: (op.finishedAt ?? op.requestedAt) - op.requestedAt,
    reclaim: op.result?.reclaimSeconds ?? 0,
    hkidHeld: op.result?.hkidHeldSeconds ?? 0,
    queue: b.queue,
    hkidWait: b.hkidWait,
    memoryWait: b.memoryWait,
  };
}

/** The operations metrics of the operations and refusals that pass `filter`. */
function operationMetrics(run: RunRecord, filter: MetricFilter): Record<string, number> {
  const values: Record<string, number[]> = Object.fromEntries(DISTRIBUTED.map((q) => [q, []]));
  let total = 0;
  let succeeded = 0;
  let failed = 0;
  let cancelled = 0;
  for (const op of run.operations) {
    if (!matches(op, filter)) continue;
    total += 1;
    if (op.state === 'succeeded') {
      succeeded += 1;
      const q = quantities(op);
      for (const name of DISTRIBUTED) (values[name] as number[]).push(q[name]);
    } else if (op.state === 'failed') failed += 1;
    else if (op.state === 'cancelled') cancelled += 1;
  }
  const refused = run.refusals.filter((r) => matches(r, filter)).length;
  const out: Record<string, number> = {};
  for (const name of DISTRIBUTED) {
    const d = distributionOf(values[name] as number[]);
    out[`${name}.mean`] = d.mean;
    out[`${name}.p50`] = d.p50;
    out[`${name}.p95`] = d.p95;
    out[`${name}.p99`] = d.p99;
    out[`${name}.max`] = d.max;
  }
  out['operations.total'] = total;
  out['operations.succeeded'] = succeeded;
  out['operations.failed'] = failed;
  out['operations.cancelled'] = cancelled;
  out['operations.refused'] = refused;
  out['operations.failedFraction'] =
    total + refused === 0 ? 0 : (failed + refused) / (total + refused);
  return out;
}

/** The fleet metrics over the phases (all, or the one named). */
function fleetMetrics(run: RunRecord, phase: string | undefined): Record<string, number> {
  const spans = phase === undefined ? run.phases : run.phases.filter((p) => p.name === phase);
  const samples = run.series.samples;
  const first = spans[0];
  const last = spans[spans.length - 1];
  const start = first?.startedAt ?? 0;
  const end = last?.endedAt ?? start;
  /** The samples of [from, to], and the last sample at or before `from` (the state then). */
  const window = (from: number, to: number): MeasuredSample[] => {
    const out: MeasuredSample[] = [];
    let before: MeasuredSample | undefined;
    for (const s of samples) {
      if (s.t <= from) before = s;
      else if (s.t <= to) out.push(s);
    }
    return before === undefined ? out : [before, ...out];
  };
  const during = window(start, end);
  let minFree = Infinity;
  let peakRetained = 0;
  let peakOrphaned = 0;
  let peakHkids = 0;
  let peakZombies = 0;
  for (const s of during) {
    minFree = Math.min(minFree, s.freeBytes);
    peakRetained = Math.max(peakRetained, s.retainedBytes);
    peakOrphaned = Math.max(peakOrphaned, s.orphanedBytes);
    peakHkids = Math.max(peakHkids, s.hkidsInUse);
    peakZombies = Math.max(peakZombies, s.hkidsZombie);
  }
  let headroom = 0;
  for (const span of spans) {
    const w = window(span.startedAt, span.endedAt);
    const atStart = w[0];
    if (atStart === undefined) continue;
    const least = w.reduce((m, s) => Math.min(m, s.freeBytes), atStart.freeBytes);
    headroom = Math.max(headroom, atStart.freeBytes - least);
  }
  const startSample = during[0];
  // The first sample at or after the end: what the phases left behind.
  const endSample = samples.find((s) => s.t >= end) ?? samples[samples.length - 1];
  const memory = run.capacity.memoryBytes;
  const free = Number.isFinite(minFree) ? minFree : 0;
  return {
    makespan: end - start,
    'memory.free.minBytes': free,
    'memory.free.minFraction': memory > 0 ? free / memory : 0,
    'memory.headroomBytes': headroom,
    'memory.retained.peakBytes': peakRetained,
    'memory.orphaned.peakBytes': peakOrphaned,
    'memory.orphaned.endBytes': endSample?.orphanedBytes ?? 0,
    'memory.free.driftBytes': (endSample?.freeBytes ?? 0) - (startSample?.freeBytes ?? 0),
    'hkids.inUse.peak': peakHkids,
    'hkids.zombie.peak': peakZombies,
    'hkids.zombie.end': endSample?.hkidsZombie ?? 0,
    'hkids.leaked.end': endSample?.hkidsLeaked ?? 0,
  };
}

/** One metric, narrowed by a filter (a fleet metric by phase only). */
export function metricValue(run: RunRecord, name: MetricName, filter: MetricFilter = {}): number {
  const values =
    METRICS[name].over === 'fleet'
      ? fleetMetrics(run, filter.phase)
      : operationMetrics(run, filter);
  return values[name] ?? 0;
}

/** Every metric over the whole run. */
export function runMetrics(run: RunRecord): Record<string, number> {
  return { ...operationMetrics(run, {}), ...fleetMetrics(run, undefined) };
}

/** Statistics per phase, VM group, action and strategy, in the order they first appear. */
export function groupStats(run: RunRecord): GroupStats[] {
  const groups = new Map<string, MeasuredOperation[]>();
  for (const op of run.operations) {
    const key = `${op.phase}\u0000${op.vmGroup}\u0000${op.action}\u0000${op.strategy ?? ''}`;
    let list = groups.get(key);
    if (list === undefined) groups.set(key, (list = []));
    list.push(op);
  }
  return [...groups.values()].map((ops) => {
    const first = ops[0] as MeasuredOperation;
    const ok = ops.filter((op) => op.state === 'succeeded');
    const q = ok.map(quantities);
    const breakdowns = ok.map(breakdownOf);
    const mean = (pick: (b: Breakdown) => number): number =>
      breakdowns.length === 0
        ? 0
        : breakdowns.reduce((sum, b) => sum + pick(b), 0) / breakdowns.length;
    const size = commonestSize(ops);
    return {
      phase: first.phase,
      vmGroup: first.vmGroup,
      action: first.action,
      strategy: first.strategy,
      vcpus: size.vcpus,
      memoryGiB: size.memoryGiB,
      operations: ops.length,
      succeeded: ok.length,
      failed: ops.filter((op) => op.state === 'failed').length,
      cancelled: ops.filter((op) => op.state === 'cancelled').length,
      downtime: distributionOf(q.map((x) => x.downtime)),
      completion: distributionOf(q.map((x) => x.completion)),
      reclaim: distributionOf(q.map((x) => x.reclaim)),
      hkidHeld: distributionOf(q.map((x) => x.hkidHeld)),
      breakdown: {
        queue: mean((b) => b.queue),
        hkidWait: mean((b) => b.hkidWait),
        memoryWait: mean((b) => b.memoryWait),
        lockWait: mean((b) => b.lockWait),
        reclaim: mean((b) => b.reclaim),
        work: mean((b) => b.work),
      },
    };
  });
}

function commonestSize(ops: readonly MeasuredOperation[]): { vcpus: number; memoryGiB: number } {
  const counts = new Map<string, { vcpus: number; memoryGiB: number; n: number }>();
  for (const op of ops) {
    const key = `${op.vcpus}/${op.memoryGiB}`;
    const entry = counts.get(key) ?? { vcpus: op.vcpus, memoryGiB: op.memoryGiB, n: 0 };
    entry.n += 1;
    counts.set(key, entry);
  }
  let best = { vcpus: 0, memoryGiB: 0, n: -1 };
  for (const entry of counts.values()) if (entry.n > best.n) best = entry;
  return { vcpus: best.vcpus, memoryGiB: best.memoryGiB };
}

/** The operations that took longest from request to end (ties: earlier request, then VM id). */
export function slowestOperations(run: RunRecord, keep = SLOWEST_KEPT): SlowOperation[] {
  const ended = run.operations.filter((op) => op.finishedAt !== null);
  const completion = (op: MeasuredOperation) => (op.finishedAt as number) - op.requestedAt;
  ended.sort(
    (a, b) =>
      completion(b) - completion(a) ||
      a.requestedAt - b.requestedAt ||
      a.vmId.localeCompare(b.vmId),
  );
  return ended.slice(0, keep).map((op) => ({
    vmId: op.vmId,
    hostId: op.hostId,
    phase: op.phase,
    vmGroup: op.vmGroup,
    action: op.action,
    strategy: op.strategy,
    memoryGiB: op.memoryGiB,
    requestedAt: op.requestedAt,
    downtime: op.result?.downtimeSeconds ?? 0,
    completion: completion(op),
    breakdown: breakdownOf(op),
  }));
}

/** Waits by errno and step, and failures and refusals by code (and step), most first. */
export function causes(run: RunRecord): { waits: CountByCause[]; failures: CountByCause[] } {
  const waits = new Map<string, CountByCause>();
  const failures = new Map<string, CountByCause>();
  const add = (
    map: Map<string, CountByCause>,
    cause: string,
    step: string | null,
    seconds: number,
  ) => {
    const key = `${cause}\u0000${step ?? ''}`;
    const entry = map.get(key) ?? { cause, step, count: 0, seconds: 0 };
    entry.count += 1;
    entry.seconds += seconds;
    map.set(key, entry);
  };
  for (const op of run.operations) {
    for (const wait of op.waits)
      add(waits, wait.errno ?? 'hkid-release-lock', wait.step, wait.seconds);
    if (op.state === 'failed' || op.state === 'cancelled') {
      const cause = op.error?.errno ?? op.error?.code ?? op.state;
      add(failures, cause, op.error?.step ?? null, 0);
    }
  }
  for (const refusal of run.refusals) add(failures, refusal.code, null, 0);
  const order = (a: CountByCause, b: CountByCause) =>
    b.count - a.count ||
    a.cause.localeCompare(b.cause) ||
    (a.step ?? '').localeCompare(b.step ?? '');
  return { waits: [...waits.values()].sort(order), failures: [...failures.values()].sort(order) };
}

/** The time series as columns. */
export function seriesColumns(run: RunRecord): SeriesColumns {
  const samples = run.series.samples;
  const column = (pick: (s: MeasuredSample) => number) => samples.map(pick);
  return {
    everySeconds: run.series.everySeconds,
    t: column((s) => s.t),
    freeBytes: column((s) => s.freeBytes),
    privateBytes: column((s) => s.privateBytes),
    retainedBytes: column((s) => s.retainedBytes),
    orphanedBytes: column((s) => s.orphanedBytes),
    hkidsInUse: column((s) => s.hkidsInUse),
    hkidsZombie: column((s) => s.hkidsZombie),
    hkidsLeaked: column((s) => s.hkidsLeaked),
    running: column((s) => s.running),
    waiting: column((s) => s.waiting),
  };
}
