import { gibToBytes, hkidUsage, memoryUsageBytes } from '#tdx-sim';
import { toMicros, toSeconds } from '#vmm';
import { type BatchSelector, selectBatchMembers } from './batch.js';
import { FleetError, NotFoundError, VmExistsError } from './errors.js';
import { advanceHost } from './executor.js';
import { type HostSpec, createHostDocument } from './host-document.js';
import type {
  Action,
  HostDocument,
  JobState,
  OperationError,
  OperationRecord,
  OperationResult,
  Strategy,
} from './model.js';
import { createVm, requestCancel, submitOperation } from './operations.js';
import { chooseHost } from './placement.js';

// The offline fleet engine: the daemon's rules (per-host and global concurrency, the HKID release
// lock, placement, batches, cancellation) over many hosts as one discrete-event simulation with
// one virtual clock, in one process and without Redis. Each host runs through the same executor
// as the daemon's workers (`advanceHost`), so a host gives the same numbers here as there.
//
// One clock for the fleet: every host document is touched only at the fleet's virtual time V
// (seconds here; a host's clock counts whole microseconds), with its clock set to V and its
// real-time anchor to the `nowMs` of the call (V * 1000 at a time scale of 1): an operation
// submitted then arrives at V, and the executor runs the host exactly to V (`untilVirtual`). A host is touched only when it has
// something to do at V (a min-heap of hosts by their next event), never by a scan of the fleet.

/** What happens to a VM at a virtual time. */
export const OFFLINE_ACTIONS = ['boot', 'reboot', 'terminate', 'cancel'] as const;

/** One of {@link OFFLINE_ACTIONS}. */
export type OfflineAction = (typeof OFFLINE_ACTIONS)[number];

/** A host of the offline fleet: what `POST /v1/hosts` accepts. */
export type OfflineHostSpec = HostSpec;

/** A VM of the offline fleet; a boot request puts it on `hostId`, or on the host placement picks. */
export interface OfflineVmSpec {
  id: string;
  vcpus: number;
  memoryGiB: number;
  hostId?: string | null;
}

/** A timed request: boot, reboot or terminate a VM, or cancel its operation. */
export interface OfflineRequest {
  /** Virtual seconds from the start of the run. */
  at: number;
  action: OfflineAction;
  vmId: string;
  /** Reboot: `cold`, `terminate` or `reuse`; terminate: `close` or `terminate`. */
  strategy?: Strategy | null;
}

/** A batch operation over a selector, as `POST /v1/batches` takes it, at a virtual time. */
export interface OfflineBatch {
  at: number;
  selector: BatchSelector;
  action: 'reboot' | 'terminate';
  strategy: Strategy;
  maxConcurrency: number;
  ratePerSecond?: number | null;
}

/** The daemon's limits. */
export interface OfflineLimits {
  /** Operations running at once on one host (the rest wait in order of arrival). Default 4. */
  hostConcurrency?: number;
  /**
   * Operations in flight (admitted to their host and not finished) in the whole fleet; the rest
   * wait in one FIFO queue and arrive at their host when admitted. Default: no limit.
   */
  globalConcurrency?: number | null;
  /**
   * Virtual seconds a step may wait with nothing known to change on its host before its
   * operation fails (`wait_timeout`). Default 600000: the daemon's 600 s at its default 1000x.
   */
  maxWaitSeconds?: number;
}

/**
 * Told as operations end and requests are refused, at the virtual time they do; what it returns
 * is issued then. A driver that reacts to ends (a rolling wave, a closed loop) goes here: the
 * engine then never lets a host run ahead of an end that could send it more work.
 */
export interface OfflineListener {
  ended(operation: OfflineOperation, at: number): readonly OfflineRequest[];
  refused(refusal: OfflineRefusal): readonly OfflineRequest[];
  /** When it next wants to issue something on its own (an arrival), or null. */
  nextWake(): number | null;
  /** Its wake time has come: what it issues then (after what ended at `at`). */
  wake(at: number): readonly OfflineRequest[];
}

/** Everything an offline run starts from. */
export interface OfflineInput {
  hosts: readonly OfflineHostSpec[];
  vms: readonly OfflineVmSpec[];
  requests?: readonly OfflineRequest[];
  batches?: readonly OfflineBatch[];
  limits?: OfflineLimits;
  /** The virtual-time grid of the time series. Default 60. */
  sampleEverySeconds?: number;
  /** Also a time series per host. Default false. */
  hostSeries?: boolean;
  listener?: OfflineListener | null;
}

/** One operation of the run, as it ended (or as far as it got). Times in virtual seconds. */
export interface OfflineOperation {
  id: string;
  vmId: string;
  hostId: string | null;
  action: Action;
  strategy: Strategy | null;
  batchId: string | null;
  state: JobState;
  /** When it was requested (a batch member: when the batch submitted it). */
  requestedAt: number;
  /** When it arrived at its host (after global admission); null if it never did. */
  arrivedAt: number | null;
  startedAt: number | null;
  finishedAt: number | null;
  /** Virtual seconds its steps waited for an HKID, memory or the HKID release lock. */
  waitedSeconds: number;
  /** The steps that waited: the errno that made them (null: the HKID release lock) and how long. */
  waits: OfflineWait[];
  result: OperationResult | null;
  error: OperationError | null;
}

/** A step of an operation that waited before it ran. */
export interface OfflineWait {
  step: string;
  errno: string | null;
  seconds: number;
}

/** A request refused before anything changed, with the fleet error code that refused it. */
export interface OfflineRefusal {
  at: number;
  /** Null for a batch refused as a whole (a bad selector). */
  vmId: string | null;
  action: OfflineAction;
  strategy: Strategy | null;
  batchId: string | null;
  code: string;
  message: string;
}

/** The fleet (or one host) at a point of the time-series grid. */
export interface FleetSample {
  /** Virtual seconds. */
  t: number;
  freeBytes: number;
  /** Guest private memory mapped in TDs. */
  privateBytes: number;
  /** Held by guest_memfds a live VM can still use: kept for a reuse reboot. */
  retainedBytes: number;
  /** Held by guest_memfds no live VM refers to. */
  orphanedBytes: number;
  /** HKIDs held by VMs or being released (not the leaked ones). */
  hkidsInUse: number;
  /**
   * HKIDs of zombies: held by VMs whose fds are all closed, kept alive only by mappings of their
   * guest_memfds (some of `hkidsInUse`).
   */
  hkidsZombie: number;
  /** HKIDs a failed HKID release leaked for good: owned by no VM, never free again. */
  hkidsLeaked: number;
  /** Operations running. */
  running: number;
  /** Operations queued: on their host, or (fleet-wide) waiting for global admission. */
  waiting: number;
}

/** How a batch went. */
export interface OfflineBatchOutcome {
  id: string;
  startedAt: number;
  /** When its last member's operation ended; null if it has none. */
  finishedAt: number | null;
  members: number;
  submitted: number;
  rejected: number;
  /** Most of its operations in flight at once. */
  peakInFlight: number;
}

/** What an offline run gives. */
export interface OfflineOutput {
  operations: OfflineOperation[];
  refusals: OfflineRefusal[];
  batches: OfflineBatchOutcome[];
  series: { everySeconds: number; fleet: FleetSample[]; hosts?: Record<string, FleetSample[]> };
  totals: {
    operations: number;
    byState: Record<JobState, number>;
    refusals: number;
    /** Host advances: one per host and virtual time at which it had something to do. */
    hostAdvances: number;
    /** Lifecycle events (operation started, step, wait, finished) the executor reported. */
    events: number;
    /** Virtual time of the last thing that happened. */
    makespan: number;
  };
}

/** Options of {@link OfflineFleet.run}. */
export interface RunOptions {
  /** Stop before anything later than this virtual time (default: run to the end). */
  until?: number;
  /** Called every `progressEvery` host advances with the fleet's virtual time. */
  onProgress?: (progress: { virtualTime: number; hostAdvances: number; events: number }) => void;
  progressEvery?: number;
}

const JOB_STATES: readonly JobState[] = ['queued', 'running', 'succeeded', 'failed', 'cancelled'];

/** A request waiting for global admission (or a batch member about to be submitted). */
interface Pending {
  opId: string;
  vmId: string;
  action: Exclude<OfflineAction, 'cancel'>;
  strategy: Strategy | null;
  batch: BatchRun | null;
  cancelled: boolean;
}

interface BatchRun {
  id: string;
  spec: OfflineBatch;
  members: string[];
  next: number;
  submitted: number;
  rejected: number;
  inFlight: number;
  peakInFlight: number;
  finishedAt: number | null;
}

/** A host's sample: the fleet's sums are of these. */
type HostSample = Omit<FleetSample, 't'>;

const SAMPLE_KEYS = [
  'freeBytes',
  'privateBytes',
  'retainedBytes',
  'orphanedBytes',
  'hkidsInUse',
  'hkidsZombie',
  'hkidsLeaked',
  'running',
  'waiting',
] as const satisfies ReadonlyArray<keyof HostSample>;

/** Min-heap of host indexes by next event time; ties go to the lower index (input order). */
class HostHeap {
  private readonly heap: number[] = [];
  private readonly pos: Int32Array;
  readonly key: Float64Array;

  constructor(size: number) {
    this.pos = new Int32Array(size).fill(-1);
    this.key = new Float64Array(size).fill(Infinity);
  }

  /** The earliest key, or Infinity. */
  peekTime(): number {
    const top = this.heap[0];
    return top === undefined ? Infinity : (this.key[top] as number);
  }

  pop(): number {
    const top = this.heap[0] as number;
    this.remove(top);
    return top;
  }

  /** Sets host `i`'s next event time (Infinity: none). */
  set(i: number, time: number): void {
    if (!Number.isFinite(time)) {
      this.remove(i);
      this.key[i] = Infinity;
      return;
    }
    const p = this.pos[i] as number;
    this.key[i] = time;
    if (p === -1) {
      this.heap.push(i);
      this.pos[i] = this.heap.length - 1;
      this.up(this.heap.length - 1);
    } else {
      this.up(p);
      this.down(this.pos[i] as number);
    }
  }

  private remove(i: number): void {
    const p = this.pos[i] as number;
    if (p === -1) return;
    const last = this.heap.pop() as number;
    this.pos[i] = -1;
    if (last === i) return;
    this.heap[p] = last;
    this.pos[last] = p;
    this.up(p);
    this.down(this.pos[last]);
  }

  private less(a: number, b: number): boolean {
    const ka = this.key[a] as number;
    const kb = this.key[b] as number;
    return ka < kb || (ka === kb && a < b);
  }

  private up(p: number): void {
    const heap = this.heap;
    const item = heap[p] as number;
    while (p > 0) {
      const parent = (p - 1) >> 1;
      const other = heap[parent] as number;
      if (!this.less(item, other)) break;
      heap[p] = other;
      this.pos[other] = p;
      p = parent;
    }
    heap[p] = item;
    this.pos[item] = p;
  }

  private down(p: number): void {
    const heap = this.heap;
    const n = heap.length;
    const item = heap[p] as number;
    for (;;) {
      let child = 2 * p + 1;
      if (child >= n) break;
      const right = child + 1;
      if (right < n && this.less(heap[right] as number, heap[child] as number)) child = right;
      const other = heap[child] as number;
      if (!this.less(other, item)) break;
      heap[p] = other;
      this.pos[other] = p;
      p = child;
    }
    heap[p] = item;
    this.pos[item] = p;
  }
}

/** Virtual seconds to the executor's `nowMs` (a time scale of 1: one virtual second per real one). */
const toMs = (t: number): number => t * 1000;

/**
 * An offline fleet: hosts, VMs and what is asked of them over virtual time, simulated event by
 * event. Deterministic: the same input gives the same output, byte for byte. Requests and
 * batches may be added between runs, at or after the fleet's virtual time.
 */
export class OfflineFleet {
  private readonly docs: HostDocument[];
  private readonly hostIndex = new Map<string, number>();
  private readonly vmSpecs = new Map<string, OfflineVmSpec>();
  /** The host of each VM placed so far. */
  private readonly vmHost = new Map<string, number>();
  /** The VM's operation not finished yet (admitted or waiting for admission). */
  private readonly active = new Map<string, string>();
  private readonly pendingById = new Map<string, Pending>();
  private readonly heap: HostHeap;
  private readonly hostConcurrency: number;
  private readonly globalConcurrency: number | null;
  private readonly maxWaitMs: number;
  private readonly sampleEvery: number;
  private readonly samples: HostSample[];
  private readonly dirty: Uint8Array;
  private readonly dirtyList: number[] = [];
  private readonly fleetTotals: HostSample = emptySample();
  private readonly fleetSeries: FleetSample[] = [];
  private readonly hostSeries: FleetSample[][] | null;
  private readonly listener: OfflineListener | null;

  private requests: OfflineRequest[] = [];
  private nextRequest = 0;
  private batchSpecs: OfflineBatch[] = [];
  private nextBatch = 0;
  private readonly batches: BatchRun[] = [];
  /** Batches to give a submission round, by the virtual time of the round. */
  private readonly batchWakes = new Map<BatchRun, number>();
  private readonly globalQueue: Pending[] = [];
  private globalHead = 0;
  private inFlight = 0;
  /** Batches with members still to submit. */
  private openBatches = 0;

  private readonly ops = new Map<string, OfflineOperation>();
  private readonly refusals: OfflineRefusal[] = [];
  private opSeq = 0;
  private now = 0;
  private nextSampleAt = 0;
  private gridSamples = 0;
  /** Sample times asked for besides the grid, in order, and the next one not taken. */
  private readonly extraSamples: number[] = [];
  private nextExtra = 0;
  private makespan = 0;
  private hostAdvances = 0;
  private events = 0;

  constructor(input: OfflineInput) {
    this.docs = input.hosts.map((spec, i) => {
      if (this.hostIndex.has(spec.id))
        throw new FleetError('already_exists', `host ${spec.id} twice`);
      this.hostIndex.set(spec.id, i);
      return createHostDocument(spec, 0);
    });
    for (const vm of input.vms) {
      if (this.vmSpecs.has(vm.id)) throw new VmExistsError(vm.id);
      this.vmSpecs.set(vm.id, vm);
    }
    const limits = input.limits ?? {};
    this.hostConcurrency = limits.hostConcurrency ?? 4;
    this.globalConcurrency = limits.globalConcurrency ?? null;
    this.maxWaitMs = toMs(limits.maxWaitSeconds ?? 600_000);
    this.sampleEvery = input.sampleEverySeconds ?? 60;
    if (!(this.sampleEvery > 0)) throw new RangeError('sampleEverySeconds must be > 0');
    this.heap = new HostHeap(this.docs.length);
    this.samples = this.docs.map(emptySample);
    this.dirty = new Uint8Array(this.docs.length).fill(1);
    for (let i = 0; i < this.docs.length; i += 1) this.dirtyList.push(i);
    this.hostSeries = input.hostSeries === true ? this.docs.map(() => []) : null;
    this.listener = input.listener ?? null;
    this.schedule(input.requests ?? [], input.batches ?? []);
  }

  /** The fleet's virtual time: everything up to it has been simulated. */
  get virtualTime(): number {
    return Math.max(this.now, this.makespan);
  }

  /** Adds requests and batches, none earlier than the fleet's virtual time. */
  schedule(requests: readonly OfflineRequest[], batches: readonly OfflineBatch[] = []): void {
    for (const r of [...requests, ...batches]) {
      if (!(r.at >= this.now)) {
        throw new RangeError(
          `a request at ${r.at} s is earlier than the fleet's time ${this.now} s`,
        );
      }
    }
    this.requests = mergeByTime(this.requests.slice(this.nextRequest), requests);
    this.nextRequest = 0;
    this.batchSpecs = mergeByTime(this.batchSpecs.slice(this.nextBatch), batches);
    this.nextBatch = 0;
  }

  /**
   * Also samples the fleet at `at` (not earlier than its time), besides the grid: the state
   * once everything due at `at` has happened. A phase boundary, say, where a grid point could
   * miss the state a metric starts from.
   */
  sampleAlsoAt(at: number): void {
    if (!(at >= this.now)) {
      throw new RangeError(`a sample at ${at} s is earlier than the fleet's time ${this.now} s`);
    }
    let i = this.extraSamples.length;
    while (i > this.nextExtra && (this.extraSamples[i - 1] as number) > at) i -= 1;
    this.extraSamples.splice(i, 0, at);
  }

  /** Simulates until nothing is left to do (or until `options.until`). */
  run(options: RunOptions = {}): void {
    const until = options.until ?? Infinity;
    const every = options.progressEvery ?? 100_000;
    let nextProgress = this.hostAdvances + every;
    for (;;) {
      const t = this.nextTime();
      if (!Number.isFinite(t) || t > until) break;
      this.sampleBefore(t);
      this.now = t;
      if (t > this.makespan) this.makespan = t;
      while (this.heap.peekTime() <= t) this.advance(this.heap.pop(), t, until);
      this.wakeListener(t);
      this.takeRequests(t);
      this.startBatches(t);
      this.batchRounds(t);
      this.admit(t);
      if (options.onProgress !== undefined && this.hostAdvances >= nextProgress) {
        nextProgress = this.hostAdvances + every;
        options.onProgress({
          virtualTime: t,
          hostAdvances: this.hostAdvances,
          events: this.events,
        });
      }
    }
    if (Number.isFinite(until) && until > this.now) this.now = until;
  }

  /** The run so far: operations, refusals, batches, the time series and totals. */
  output(): OfflineOutput {
    // The series ends with the first grid point at or after the last event.
    const end = Math.ceil(this.makespan / this.sampleEvery) * this.sampleEvery;
    this.sampleBefore(end + this.sampleEvery / 2);
    const operations = [...this.ops.values()];
    const byState = Object.fromEntries(JOB_STATES.map((s) => [s, 0])) as Record<JobState, number>;
    for (const op of operations) byState[op.state] += 1;
    const series: OfflineOutput['series'] = {
      everySeconds: this.sampleEvery,
      fleet: this.fleetSeries,
    };
    if (this.hostSeries !== null) {
      const hosts: Record<string, FleetSample[]> = {};
      this.docs.forEach((doc, i) => (hosts[doc.id] = this.hostSeries?.[i] ?? []));
      series.hosts = hosts;
    }
    return {
      operations,
      refusals: this.refusals,
      batches: this.batches.map((b) => ({
        id: b.id,
        startedAt: b.spec.at,
        finishedAt: b.finishedAt,
        members: b.members.length,
        submitted: b.submitted,
        rejected: b.rejected,
        peakInFlight: b.peakInFlight,
      })),
      series,
      totals: {
        operations: operations.length,
        byState,
        refusals: this.refusals.length,
        hostAdvances: this.hostAdvances,
        events: this.events,
        makespan: this.makespan,
      },
    };
  }

  /** The host documents as they are now (for checks: the same documents the daemon stores). */
  hostDocuments(): readonly HostDocument[] {
    return this.docs;
  }

  private nextTime(): number {
    let t = this.heap.peekTime();
    const wake = this.listener?.nextWake() ?? null;
    if (wake !== null && wake < t) t = Math.max(wake, this.now);
    const request = this.requests[this.nextRequest];
    if (request !== undefined && request.at < t) t = request.at;
    const batch = this.batchSpecs[this.nextBatch];
    if (batch !== undefined && batch.at < t) t = batch.at;
    for (const at of this.batchWakes.values()) if (at < t) t = at;
    if (this.canAdmit()) t = Math.min(t, this.now);
    return t;
  }

  /**
   * Moves one host, due at `t`, through the daemon's executor: to `t`, or further when nothing
   * outside the host can happen before (no request, batch start or sample point, no batch or
   * global queue waiting for a slot): the host then runs alone up to that horizon in one call.
   */
  private advance(i: number, t: number, until: number): void {
    const doc = this.docs[i] as HostDocument;
    const horizon = this.waitingForSlots() ? t : Math.max(t, Math.min(this.horizon(), until));
    const advance = advanceHost(doc, {
      nowMs: toMs(horizon),
      timeScale: 1,
      untilVirtual: toMicros(horizon),
      hostConcurrency: this.hostConcurrency,
      maxWaitMs: this.maxWaitMs,
      pollMs: this.maxWaitMs,
      inPlace: true,
    });
    this.hostAdvances += 1;
    this.events += advance.events.length;
    this.docs[i] = advance.doc;
    this.markDirty(i);
    let finishedAt: Map<string, number> | null = null;
    for (const event of advance.events) {
      if (event.virtualTime > this.makespan) this.makespan = event.virtualTime;
      if (event.type === 'job.finished')
        (finishedAt ??= new Map()).set(event.jobId, event.virtualTime);
    }
    for (const finished of advance.finished) {
      this.finish(finished, finishedAt?.get(finished.id) ?? horizon);
    }
    this.reschedule(i, advance.nextAt === null ? null : toSeconds(advance.nextAt), horizon);
  }

  /** The listener's wake time has come: what it issues now. */
  private wakeListener(t: number): void {
    const listener = this.listener;
    if (listener === null) return;
    const wake = listener.nextWake();
    if (wake !== null && wake <= t) this.schedule(listener.wake(t));
  }

  /** True while a finishing operation would let another be submitted at once. */
  private waitingForSlots(): boolean {
    if (this.openBatches > 0 || this.listener !== null) return true;
    if (this.globalConcurrency === null) return false;
    this.skipCancelled();
    return this.globalHead < this.globalQueue.length;
  }

  /** The next virtual time at which something outside the hosts happens. */
  private horizon(): number {
    let h = Math.min(this.nextSampleAt, this.extraSamples[this.nextExtra] ?? Infinity);
    const request = this.requests[this.nextRequest];
    if (request !== undefined && request.at < h) h = request.at;
    const batch = this.batchSpecs[this.nextBatch];
    if (batch !== undefined && batch.at < h) h = batch.at;
    return h;
  }

  /**
   * Sets the host's clock to `t` for a submission arriving then. It has nothing to do before `t`
   * (the heap says so), and nothing happened on it after `t` (a host runs ahead only up to the
   * next request, and requests are never earlier than the last thing that happened).
   */
  private touch(i: number, t: number): HostDocument {
    const doc = this.docs[i] as HostDocument;
    doc.clock = toMicros(t);
    doc.clockAtMs = toMs(t);
    return doc;
  }

  private reschedule(i: number, nextAt: number | null, after: number): void {
    let next = nextAt ?? Infinity;
    // A step waiting with nothing known to change fails once it has waited maxWaitSeconds: the
    // host is looked at again then (the executor counts that wait on `nowMs`).
    const doc = this.docs[i] as HostDocument;
    const stuckSinceMs = oldestStuck(doc);
    if (stuckSinceMs !== null) {
      let deadline = (stuckSinceMs + this.maxWaitMs) / 1000;
      while (toMs(deadline) - stuckSinceMs < this.maxWaitMs) deadline = nextUp(deadline);
      next = Math.min(next, Math.max(deadline, nextUp(after)));
    }
    if (next <= after) {
      throw new Error(`host ${doc.id} has something to do at ${next} s, already past ${after} s`);
    }
    this.heap.set(i, next);
  }

  private finish(op: OperationRecord, t: number): void {
    const record = this.ops.get(op.id);
    if (record === undefined) throw new Error(`operation ${op.id} finished unknown`);
    record.state = op.state;
    record.startedAt = op.steps.length > 0 ? toSeconds(op.startedAt) : null;
    record.finishedAt = t;
    for (const step of op.steps) {
      if (step.waitedSeconds <= 0) continue;
      record.waitedSeconds += step.waitedSeconds;
      record.waits.push({
        step: step.name,
        errno: step.errno ?? null,
        seconds: step.waitedSeconds,
      });
    }
    record.result = op.result;
    record.error = op.error;
    this.ended(record.vmId, op.id, t);
  }

  /** An operation admitted to its host has ended: its VM, the global count, its batch. */
  private ended(vmId: string, opId: string, t: number): void {
    if (this.active.get(vmId) === opId) this.active.delete(vmId);
    this.inFlight -= 1;
    const pending = this.pendingById.get(opId);
    this.pendingById.delete(opId);
    if (pending?.batch != null) this.batchSlotFreed(pending.batch, t);
    const record = this.ops.get(opId);
    if (this.listener !== null && record !== undefined) {
      this.schedule(this.listener.ended(record, t));
    }
  }

  private batchSlotFreed(batch: BatchRun, t: number): void {
    batch.inFlight -= 1;
    if (batch.next < batch.members.length) this.wakeBatch(batch, t);
    else if (batch.inFlight === 0) batch.finishedAt = t;
  }

  private takeRequests(t: number): void {
    for (;;) {
      const request = this.requests[this.nextRequest];
      if (request === undefined || request.at > t) return;
      this.nextRequest += 1;
      if (request.action === 'cancel') this.cancel(request, t);
      else this.request(request.vmId, request.action, request.strategy ?? null, null, t);
    }
  }

  /** A boot, reboot or terminate: to its host now, or to the global queue. */
  private request(
    vmId: string,
    action: Exclude<OfflineAction, 'cancel'>,
    strategy: Strategy | null,
    batch: BatchRun | null,
    t: number,
  ): boolean {
    const busy = this.active.get(vmId);
    if (busy !== undefined) {
      this.refuse(
        t,
        vmId,
        action,
        strategy,
        batch,
        new FleetError('vm_busy', `VM ${vmId} is busy with job ${busy}`),
      );
      return false;
    }
    this.opSeq += 1;
    const pending: Pending = {
      opId: `op-${String(this.opSeq).padStart(6, '0')}`,
      vmId,
      action,
      strategy,
      batch,
      cancelled: false,
    };
    if (this.globalConcurrency === null) return this.submit(pending, t, t);
    // Refusals that do not depend on the host's state are given at once, as the API would.
    const problem = this.precheck(pending);
    if (problem !== null) {
      this.refuse(t, vmId, action, strategy, batch, problem);
      return false;
    }
    this.active.set(vmId, pending.opId);
    this.pendingById.set(pending.opId, pending);
    this.globalQueue.push(pending);
    this.ops.set(pending.opId, this.newRecord(pending, null, t));
    return true;
  }

  private precheck(pending: Pending): FleetError | null {
    if (pending.action === 'boot') {
      if (!this.vmSpecs.has(pending.vmId)) return new NotFoundError('vm', pending.vmId);
      if (this.vmHost.has(pending.vmId)) return new VmExistsError(pending.vmId);
      return null;
    }
    if (!this.vmHost.has(pending.vmId)) return new NotFoundError('vm', pending.vmId);
    return null;
  }

  /**
   * Puts an operation on its host at `t` (its arrival). A refusal is recorded; an operation that
   * waited for admission is then failed with the refusal's code.
   */
  private submit(pending: Pending, requestedAt: number, t: number): boolean {
    const { vmId, action, strategy, batch } = pending;
    let hostIndex: number;
    let op: OperationRecord;
    try {
      if (action === 'boot') {
        const spec = this.vmSpecs.get(vmId);
        if (spec === undefined) throw new NotFoundError('vm', vmId);
        if (this.vmHost.has(vmId)) throw new VmExistsError(vmId);
        const memoryBytes = gibToBytes(spec.memoryGiB);
        if (spec.hostId != null) {
          const index = this.hostIndex.get(spec.hostId);
          if (index === undefined) throw new NotFoundError('host', spec.hostId);
          hostIndex = index;
        } else {
          const chosen = chooseHost(this.docs, spec.vcpus, memoryBytes);
          hostIndex = this.hostIndex.get(chosen.id) as number;
        }
        const created = createVm(this.touch(hostIndex, t), {
          vmId,
          opId: pending.opId,
          vcpus: spec.vcpus,
          memoryBytes,
          nowMs: toMs(t),
          timeScale: 1,
          inPlace: true,
        });
        this.docs[hostIndex] = created.doc;
        this.vmHost.set(vmId, hostIndex);
        op = created.op;
      } else {
        const index = this.vmHost.get(vmId);
        if (index === undefined) throw new NotFoundError('vm', vmId);
        hostIndex = index;
        const submitted = submitOperation(this.touch(hostIndex, t), {
          opId: pending.opId,
          vmId,
          action,
          strategy: strategy ?? defaultStrategy(action),
          nowMs: toMs(t),
          timeScale: 1,
          inPlace: true,
        });
        this.docs[hostIndex] = submitted.doc;
        op = submitted.op;
      }
    } catch (error) {
      if (!(error instanceof FleetError)) throw error;
      if (this.ops.delete(pending.opId)) {
        // It waited for global admission, and its host refuses it now: a refusal like any other.
        this.active.delete(vmId);
        this.pendingById.delete(pending.opId);
        if (batch !== null) {
          batch.inFlight -= 1;
          batch.rejected += 1;
          this.wakeBatch(batch, t);
        }
      }
      this.refuse(t, vmId, action, strategy, batch, error);
      return false;
    }
    const record = this.ops.get(pending.opId) ?? this.newRecord(pending, null, requestedAt);
    record.hostId = (this.docs[hostIndex] as HostDocument).id;
    record.arrivedAt = toSeconds(op.arrivedAt);
    record.strategy = op.strategy;
    this.ops.set(pending.opId, record);
    this.active.set(vmId, pending.opId);
    this.pendingById.set(pending.opId, pending);
    this.inFlight += 1;
    this.markDirty(hostIndex);
    this.heap.set(hostIndex, t);
    return true;
  }

  private newRecord(pending: Pending, hostId: string | null, t: number): OfflineOperation {
    return {
      id: pending.opId,
      vmId: pending.vmId,
      hostId,
      action: pending.action,
      strategy:
        pending.action === 'boot' ? null : (pending.strategy ?? defaultStrategy(pending.action)),
      batchId: pending.batch?.id ?? null,
      state: 'queued',
      requestedAt: t,
      arrivedAt: null,
      startedAt: null,
      finishedAt: null,
      waitedSeconds: 0,
      waits: [],
      result: null,
      error: null,
    };
  }

  private refuse(
    t: number,
    vmId: string | null,
    action: OfflineAction,
    strategy: Strategy | null,
    batch: BatchRun | null,
    error: FleetError,
  ): void {
    const refusal: OfflineRefusal = {
      at: t,
      vmId,
      action,
      strategy,
      batchId: batch?.id ?? null,
      code: error.code,
      message: error.message,
    };
    this.refusals.push(refusal);
    if (this.listener !== null) this.schedule(this.listener.refused(refusal));
  }

  /** A cancel: the VM's operation stops (waiting for admission or queued: at once). */
  private cancel(request: OfflineRequest, t: number): void {
    const opId = this.active.get(request.vmId);
    if (opId === undefined) {
      this.refuse(
        t,
        request.vmId,
        'cancel',
        null,
        null,
        new FleetError('job_finished', `VM ${request.vmId} has no operation to cancel`),
      );
      return;
    }
    const record = this.ops.get(opId) as OfflineOperation;
    const pending = this.pendingById.get(opId);
    if (record.arrivedAt === null && pending !== undefined) {
      // Still waiting for global admission: it never reaches its host.
      pending.cancelled = true;
      record.state = 'cancelled';
      record.finishedAt = t;
      record.error = { code: 'cancelled', message: 'cancelled before it started' };
      this.active.delete(request.vmId);
      this.pendingById.delete(opId);
      if (pending.batch !== null) this.batchSlotFreed(pending.batch, t);
      if (this.listener !== null) this.schedule(this.listener.ended(record, t));
      return;
    }
    const i = this.vmHost.get(request.vmId) as number;
    const cancelled = requestCancel(this.touch(i, t), opId, toMs(t));
    this.docs[i] = cancelled.doc;
    this.markDirty(i);
    if (cancelled.finished) {
      record.state = 'cancelled';
      record.finishedAt = t;
      record.error = cancelled.op.error;
      this.ended(request.vmId, opId, t);
    }
    this.heap.set(i, t);
  }

  private startBatches(t: number): void {
    for (;;) {
      const spec = this.batchSpecs[this.nextBatch];
      if (spec === undefined || spec.at > t) return;
      this.nextBatch += 1;
      const id = `batch-${String(this.batches.length + 1).padStart(4, '0')}`;
      const batch: BatchRun = {
        id,
        spec,
        members: [],
        next: 0,
        submitted: 0,
        rejected: 0,
        inFlight: 0,
        peakInFlight: 0,
        finishedAt: null,
      };
      this.batches.push(batch);
      let members;
      try {
        members = selectBatchMembers(this.docs, spec.selector);
      } catch (error) {
        if (!(error instanceof FleetError)) throw error;
        this.refuse(t, null, spec.action, spec.strategy, batch, error);
        batch.finishedAt = t;
        continue;
      }
      for (const m of members) {
        if (m.state === 'rejected') {
          batch.rejected += 1;
          this.refuse(
            t,
            m.vmId,
            spec.action,
            spec.strategy,
            batch,
            new NotFoundError('vm', m.vmId),
          );
        } else batch.members.push(m.vmId);
      }
      if (batch.members.length > 0) this.openBatches += 1;
      this.wakeBatch(batch, t);
    }
  }

  private wakeBatch(batch: BatchRun, t: number): void {
    const at = this.batchWakes.get(batch);
    if (at === undefined || t < at) this.batchWakes.set(batch, t);
  }

  /**
   * Submits what each woken batch may submit now, by the rule of `submissionsAllowed`: no more
   * than `maxConcurrency` in flight, no more than `ratePerSecond` per second since it began.
   */
  private batchRounds(t: number): void {
    for (;;) {
      const due = [...this.batchWakes].filter(([, at]) => at <= t).map(([b]) => b);
      if (due.length === 0) return;
      for (const batch of due) {
        this.batchWakes.delete(batch);
        this.batchRound(batch, t);
      }
    }
  }

  private batchRound(batch: BatchRun, t: number): void {
    const { spec } = batch;
    const rate = spec.ratePerSecond ?? null;
    const budget = (at: number): number =>
      rate === null ? Infinity : Math.floor(((toMs(at) - toMs(spec.at)) / 1000) * rate) + 1;
    let allowed = Math.min(spec.maxConcurrency - batch.inFlight, budget(t) - batch.submitted);
    const wasOpen = batch.next < batch.members.length;
    while (allowed > 0 && batch.next < batch.members.length) {
      const vmId = batch.members[batch.next] as string;
      batch.next += 1;
      batch.submitted += 1;
      allowed -= 1;
      if (this.request(vmId, spec.action, spec.strategy, batch, t)) {
        batch.inFlight += 1;
        batch.peakInFlight = Math.max(batch.peakInFlight, batch.inFlight);
      } else {
        batch.rejected += 1;
        // A rejected member holds no slot: the next may go at once.
        allowed = Math.min(
          allowed + 1,
          spec.maxConcurrency - batch.inFlight,
          budget(t) - batch.submitted,
        );
      }
    }
    if (batch.next >= batch.members.length) {
      if (wasOpen) this.openBatches -= 1;
      if (batch.inFlight === 0 && batch.finishedAt === null) batch.finishedAt = t;
      return;
    }
    if (batch.inFlight < spec.maxConcurrency && rate !== null) {
      // Held by the rate: the next round when the budget grows.
      let at = spec.at + batch.submitted / rate;
      while (budget(at) <= batch.submitted) at += Math.max(1e-9, Math.abs(at) * 1e-12);
      this.wakeBatch(batch, Math.max(at, t));
    }
  }

  private canAdmit(): boolean {
    if (this.globalConcurrency === null) return false;
    this.skipCancelled();
    return this.globalHead < this.globalQueue.length && this.inFlight < this.globalConcurrency;
  }

  private skipCancelled(): void {
    while (this.globalQueue[this.globalHead]?.cancelled === true) this.globalHead += 1;
    if (this.globalHead > 1024 && this.globalHead * 2 > this.globalQueue.length) {
      this.globalQueue.splice(0, this.globalHead);
      this.globalHead = 0;
    }
  }

  /** Global admission: the oldest waiting operations go to their hosts while there is room. */
  private admit(t: number): void {
    while (this.canAdmit()) {
      const pending = this.globalQueue[this.globalHead] as Pending;
      this.globalHead += 1;
      const record = this.ops.get(pending.opId) as OfflineOperation;
      // It is no longer the VM's pending operation until its host takes it.
      this.active.delete(pending.vmId);
      this.submit(pending, record.requestedAt, t);
    }
  }

  private markDirty(i: number): void {
    if (this.dirty[i] === 1) return;
    this.dirty[i] = 1;
    this.dirtyList.push(i);
  }

  /** Records the samples of every grid point before `t` (the state after everything before). */
  private sampleBefore(t: number): void {
    for (;;) {
      const extra = this.extraSamples[this.nextExtra] ?? Infinity;
      const at = Math.min(this.nextSampleAt, extra);
      if (!(at < t)) return;
      this.refreshSamples();
      const fleet: FleetSample = { t: at, ...this.fleetTotals };
      fleet.waiting += this.waitingForAdmission();
      this.fleetSeries.push(fleet);
      if (this.hostSeries !== null) {
        this.hostSeries.forEach((series, i) =>
          series.push({ t: at, ...(this.samples[i] as HostSample) }),
        );
      }
      if (at === this.nextSampleAt) {
        this.gridSamples += 1;
        this.nextSampleAt = this.gridSamples * this.sampleEvery;
      }
      while ((this.extraSamples[this.nextExtra] ?? Infinity) <= at) this.nextExtra += 1;
    }
  }

  private waitingForAdmission(): number {
    let waiting = 0;
    for (let i = this.globalHead; i < this.globalQueue.length; i += 1) {
      if ((this.globalQueue[i] as Pending).cancelled === false) waiting += 1;
    }
    return waiting;
  }

  private refreshSamples(): void {
    for (const i of this.dirtyList) {
      this.dirty[i] = 0;
      const old = this.samples[i] as HostSample;
      const fresh = hostSample(this.docs[i] as HostDocument);
      for (const key of SAMPLE_KEYS) this.fleetTotals[key] += fresh[key] - old[key];
      this.samples[i] = fresh;
    }
    this.dirtyList.length = 0;
  }
}

/**
 * Runs an offline fleet to the end: every request and batch, every operation through the
 * daemon's executor on its host, in one virtual time. Pure and deterministic.
 */
export function runFleet(input: OfflineInput, options: RunOptions = {}): OfflineOutput {
  const fleet = new OfflineFleet(input);
  fleet.run(options);
  return fleet.output();
}

function emptySample(): HostSample {
  return {
    freeBytes: 0,
    privateBytes: 0,
    retainedBytes: 0,
    orphanedBytes: 0,
    hkidsInUse: 0,
    hkidsZombie: 0,
    hkidsLeaked: 0,
    running: 0,
    waiting: 0,
  };
}

function hostSample(doc: HostDocument): HostSample {
  const memory = memoryUsageBytes(doc.sim);
  const hkids = hkidUsage(doc.sim);
  let running = 0;
  let waiting = 0;
  for (const id in doc.ops) {
    const state = (doc.ops[id] as OperationRecord).state;
    if (state === 'running') running += 1;
    else if (state === 'queued') waiting += 1;
  }
  return {
    freeBytes: memory.free,
    privateBytes: memory.private,
    retainedBytes: memory.retained,
    orphanedBytes: memory.orphaned,
    hkidsInUse: hkids.owned + hkids.inFlight,
    hkidsZombie: hkids.zombies,
    hkidsLeaked: hkids.leaked,
    running,
    waiting,
  };
}

/** When the longest wait with nothing known to change began (real-time anchor), or null. */
function oldestStuck(doc: HostDocument): number | null {
  let oldest: number | null = null;
  for (const id in doc.ops) {
    const op = doc.ops[id] as OperationRecord;
    if (op.state !== 'running' || op.nextAt !== null || op.stuckSinceMs === null) continue;
    if (oldest === null || op.stuckSinceMs < oldest) oldest = op.stuckSinceMs;
  }
  return oldest;
}

/** The next double above `x` (x >= 0). */
function nextUp(x: number): number {
  const next = x + Math.max(Math.abs(x) * Number.EPSILON, Number.MIN_VALUE);
  return next > x ? next : x * (1 + Number.EPSILON);
}

function defaultStrategy(action: 'reboot' | 'terminate'): Strategy {
  return action === 'reboot' ? 'cold' : 'close';
}

/** `rest` merged into `sorted` by time, stably (earlier input first on a tie). */
function mergeByTime<T extends { at: number }>(sorted: readonly T[], rest: readonly T[]): T[] {
  const indexed = rest.map((item, i) => ({ item, i }));
  indexed.sort((a, b) => a.item.at - b.item.at || a.i - b.i);
  const out: T[] = [];
  let j = 0;
  for (const { item } of indexed) {
    while (j < sorted.length && (sorted[j] as T).at <= item.at) out.push(sorted[j++] as T);
    out.push(item);
  }
  while (j < sorted.length) out.push(sorted[j++] as T);
  return out;
}
