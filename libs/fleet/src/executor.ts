import { type CallOutcome, type Errno, applyCallsInPlace, cloneHost, pagesToBytes } from '#tdx-sim';
import {
  type Plan,
  type PlanStep,
  type PlannedCall,
  type Track,
  WAITABLE_ERRNOS,
  bindResults,
  handlesAfter,
  ref,
  resolveStep,
} from '#vmm';
import { NotFoundError } from './errors.js';
import { nextSettleAt, settleDue } from './host-document.js';
import { pendingStep, planOperation } from './operations.js';
import type {
  GuestMemfdRecord,
  HostDocument,
  OperationError,
  OperationRecord,
  OperationResult,
  VmRecord,
} from './model.js';

/** How the executor runs operations. */
export interface ExecutorOptions {
  nowMs: number;
  /** Virtual seconds per real second for an operation that starts now; 0 = no waiting. */
  timeScale: number;
  /** Running operations allowed on one host at once. */
  hostConcurrency: number;
  /** How long a step may wait for an HKID or memory before its operation fails. */
  maxWaitMs: number;
  /** How often a waiting step tries again when nothing it knows of changes sooner. */
  pollMs: number;
}

/** A lifecycle change, for the event stream. */
export interface FleetEvent {
  type: 'job.started' | 'job.step' | 'job.waiting' | 'job.finished' | 'vm.state';
  atMs: number;
  hostId: string;
  vmId: string;
  jobId: string;
  step?: string;
  state?: string;
  errno?: Errno;
  /** The call that returned `errno`. */
  call?: string;
}

/** What to do next for an operation. */
export type Advance =
  /** Nothing to commit: come back at `untilMs`. */
  | {
      kind: 'wait';
      untilMs: number;
      reason: 'host_busy' | 'step_running' | 'resources' | 'hkid_lock';
    }
  /**
   * Commit `doc` (compare-and-set on the version it was read at). `finished` is set when the
   * operation ended: it has left `doc.ops` and is to be stored on its own. `wakeAtMs` says when
   * there is more to do.
   */
  | {
      kind: 'commit';
      doc: HostDocument;
      /** The operation as committed (the same record as `finished` when it ended). */
      op: OperationRecord;
      events: FleetEvent[];
      finished: OperationRecord | null;
      wakeAtMs: number;
    };

const TRACKS = ['teardown', 'boot'] as const;

/** The plan of an operation that has started. */
function planOf(op: OperationRecord): Plan {
  if (op.plan === null) throw new Error(`operation ${op.id} has not started: no plan yet`);
  return op.plan;
}

/** Each plan's step indexes by track, kept while the plan has as many steps (cleanup adds some). */
const trackIndex = new WeakMap<PlanStep[], { length: number; byTrack: Record<Track, number[]> }>();

/** Indexes into the plan of the steps of one track, in order. */
function trackSteps(op: OperationRecord, track: Track): number[] {
  const steps = planOf(op).steps;
  let index = trackIndex.get(steps);
  if (index?.length !== steps.length) {
    const byTrack: Record<Track, number[]> = { teardown: [], boot: [] };
    steps.forEach((step, i) => byTrack[step.track].push(i));
    index = { length: steps.length, byTrack };
    trackIndex.set(steps, index);
  }
  return index.byTrack[track];
}

function cloneOperation(op: OperationRecord): OperationRecord {
  return {
    ...op,
    // The plan is shared, never changed in place (a cleanup makes a new one): the store writes
    // it once, not with every step.
    plan: op.plan,
    steps: op.steps.map((s) => ({ ...s })),
    tracks: { teardown: { ...op.tracks.teardown }, boot: { ...op.tracks.boot } },
    // Object.assign, not a spread: handles are added to the copy, and V8 adds keys to a spread
    // copy far more slowly.
    bindings: Object.assign({}, op.bindings),
    totals: { ...op.totals },
  };
}

/**
 * Moves an operation forward as far as it can go at `options.nowMs`: starts it, runs every
 * step that is due (each takes what it needs when it starts; what it frees returns when its
 * virtual time has passed), waits for resources, cleans up after a cancel or a failure, and
 * finishes it. Pure: the caller commits the returned document and sleeps until `wakeAtMs`.
 */
export function advanceOperation(
  doc: HostDocument,
  opId: string,
  options: ExecutorOptions,
): Advance {
  return advanceOne(doc, opId, options, new WeakSet());
}

/** What {@link advanceOperations} did to one operation. */
export type BatchAdvance =
  | Extract<Advance, { kind: 'wait' }>
  | Omit<Extract<Advance, { kind: 'commit' }>, 'doc'>
  /** Not in the document: it finished, or was cancelled while queued, elsewhere. */
  | { kind: 'missing' };

/**
 * Advances several operations of one host in turn, each on the document the previous one left,
 * as {@link advanceOperation} would one after the other, and returns the document after all of
 * them. The simulated host, and the document's tables of VMs and operations, are copied once
 * for the batch and changed in place after that (instead of once per step, or per operation),
 * which is what a worker advancing many operations of a host at a time spends most of its time
 * on. Pure: `doc` is not changed.
 */
export function advanceOperations(
  doc: HostDocument,
  opIds: readonly string[],
  options: ExecutorOptions,
): { doc: HostDocument; advances: BatchAdvance[] } {
  const owned = new WeakSet<object>();
  let current = doc;
  const advances = opIds.map((opId): BatchAdvance => {
    if (current.ops[opId] === undefined) return { kind: 'missing' };
    const advance = advanceOne(current, opId, options, owned);
    if (advance.kind === 'wait') return advance;
    current = advance.doc;
    const { kind, op, events, finished, wakeAtMs } = advance;
    return { kind, op, events, finished, wakeAtMs };
  });
  return { doc: current, advances };
}

/**
 * {@link advanceOperation}, with what is in `owned` (made by this batch, seen by no one else: the
 * simulated host, the tables of VMs and operations) changed in place; anything else is copied
 * first and the copy added to the set.
 */
function advanceOne(
  doc: HostDocument,
  opId: string,
  options: ExecutorOptions,
  owned: WeakSet<object>,
): Advance {
  const now = options.nowMs;
  let draft = settleDue(doc, now);
  let changed = draft !== doc;
  // Settling copies the host's top level only: what it shares is the batch's own if the input was.
  if (changed && owned.has(doc.sim)) owned.add(draft.sim);
  const original = draft.ops[opId];
  if (original === undefined) throw new NotFoundError('job', opId);
  const op = cloneOperation(original);
  const events: FleetEvent[] = [];
  const event = (type: FleetEvent['type'], extra: Partial<FleetEvent> = {}): void => {
    events.push({ type, atMs: now, hostId: op.hostId, vmId: op.vmId, jobId: op.id, ...extra });
  };
  const commit = (wakeAtMs: number, finished: OperationRecord | null = null): Advance => {
    const ops = ownTable(draft.ops, owned);
    if (finished === null) ops[op.id] = op;
    else delete ops[op.id];
    return { kind: 'commit', doc: { ...draft, ops }, op, events, finished, wakeAtMs };
  };
  const waitOrCommit = (
    untilMs: number,
    reason: Extract<Advance, { kind: 'wait' }>['reason'],
  ): Advance => (changed ? commit(untilMs) : { kind: 'wait', untilMs, reason });

  if (op.state === 'queued') {
    const running = Object.values(draft.ops).filter((o) => o.state === 'running').length;
    if (running >= options.hostConcurrency) return waitOrCommit(now + options.pollMs, 'host_busy');
    const vm = draft.vms[op.vmId];
    if (vm === undefined) throw new Error(`operation ${op.id} for a missing VM ${op.vmId}`);
    const plan = planOperation(draft, vm, op.intent);
    op.plan = plan;
    op.steps = plan.steps.map(pendingStep);
    op.bindings = Object.assign({}, plan.initialBindings);
    op.state = 'running';
    op.startedAtMs = now;
    op.timeScale = options.timeScale;
    op.tracks.teardown.readyAtMs = now;
    op.tracks.boot.readyAtMs = now;
    changed = true;
    event('job.started');
  }
  // A cancel stops the plan at the next step boundary; once every step has been applied there
  // is nothing left to stop, and tearing the new VM down would only lose it.
  const stepsLeft = op.steps.some((s) => s.state === 'pending' || s.state === 'waiting');
  if (op.cancelRequested && op.cleanupReason === null && stepsLeft) {
    beginCleanup(op, draft, now, { code: 'cancelled', message: 'cancelled while running' });
    changed = true;
  }

  // Tracks whose next step must wait (for resources or the HKID lock): the other track still
  // runs, since it may be what gives back what the waiting step needs (a cold reboot's new VM
  // waits for the HKID its own teardown releases).
  const blocked = new Map<Track, 'resources' | 'hkid_lock'>();
  const blockedUntil = (): number => {
    let until = Infinity;
    for (const reason of blocked.values()) {
      until = Math.min(
        until,
        reason === 'hkid_lock'
          ? draft.hkidReleaseBusyUntilMs
          : Math.min(now + options.pollMs, nextSettleAt(draft) ?? Infinity),
      );
    }
    return until;
  };
  for (;;) {
    const candidates: Track[] = [];
    for (const t of TRACKS) {
      const open = t === 'teardown' || op.bootReleased;
      if (open && op.tracks[t].next < trackSteps(op, t).length && !blocked.has(t)) {
        candidates.push(t);
      }
    }
    const [firstBlocked] = blocked.values();
    if (candidates.length === 0 && firstBlocked !== undefined) {
      return waitOrCommit(blockedUntil(), firstBlocked);
    }
    if (candidates.length === 0) {
      const end = Math.max(now, ...op.steps.map((s) => s.endsAtMs ?? 0));
      if (end > now) return waitOrCommit(end, 'step_running');
      const finished = finishOperation(op, draft, now, owned);
      draft = finished.doc;
      event('job.finished', { state: finished.op.state });
      event('vm.state', { state: draft.vms[op.vmId]?.state ?? 'unknown' });
      return commit(now, finished.op);
    }
    // The track that is ready first goes first; on a tie, the teardown.
    const track = candidates.reduce((a, b) =>
      op.tracks[b].readyAtMs < op.tracks[a].readyAtMs ? b : a,
    );
    const cursor = op.tracks[track];
    const stepIndex = trackSteps(op, track)[cursor.next];
    const step = stepIndex === undefined ? undefined : planOf(op).steps[stepIndex];
    const record = stepIndex === undefined ? undefined : op.steps[stepIndex];
    if (step === undefined || record === undefined || stepIndex === undefined) {
      throw new Error(`operation ${op.id}: track ${track} cursor out of range`);
    }
    if (cursor.readyAtMs > now) {
      return waitOrCommit(
        Math.min(cursor.readyAtMs, nextSettleAt(draft) ?? Infinity, blockedUntil()),
        firstBlocked ?? 'step_running',
      );
    }

    const calls = resolveStep(step, op.bindings);
    // Steps change a private copy of the simulated host in place (a refused step restores it):
    // one copy per batch instead of copy-on-write per step.
    if (!owned.has(draft.sim)) {
      draft = { ...draft, sim: cloneHost(draft.sim) };
      owned.add(draft.sim);
    }
    const result = applyCallsInPlace(draft.sim, calls);
    if (result.failedAt !== null) {
      const failed = result.outcomes[result.failedAt];
      if (failed === undefined || failed.ok) throw new Error('a refused batch without its refusal');
      if (WAITABLE_ERRNOS.includes(failed.errno)) {
        if (cursor.waitingSinceMs === null) {
          cursor.waitingSinceMs = now;
          record.state = 'waiting';
          record.errno = failed.errno;
          record.call = calls[result.failedAt]?.op;
          record.message = failed.message;
          changed = true;
          event('job.waiting', { step: step.name, errno: failed.errno, call: record.call });
        }
        if (now - cursor.waitingSinceMs >= options.maxWaitMs) {
          record.state = 'failed';
          beginCleanup(op, draft, now, {
            code: 'wait_timeout',
            message: `${step.name} waited ${options.maxWaitMs} ms for ${failed.errno}: ${failed.message}`,
            step: step.name,
            errno: failed.errno,
          });
          changed = true;
          blocked.clear();
          continue;
        }
        blocked.set(track, 'resources');
        continue;
      }
      record.state = 'failed';
      record.errno = failed.errno;
      record.call = calls[result.failedAt]?.op;
      record.message = failed.message;
      beginCleanup(op, draft, now, {
        code: 'step_failed',
        message: `${step.name} failed with ${failed.errno}: ${failed.message}`,
        step: step.name,
        errno: failed.errno,
      });
      changed = true;
      blocked.clear();
      continue;
    }

    const releasesHkid = result.outcomes.some((o) => o.ok && o.effects.releasedHkid !== null);
    if (releasesHkid && draft.hkidReleaseBusyUntilMs > now) {
      result.undo();
      // The kernel releases HKIDs under one global lock: wait for the release in progress.
      // The wait counts like any other (waitedMs, and virtual time: the VM is down meanwhile).
      if (cursor.waitingSinceMs === null) {
        cursor.waitingSinceMs = now;
        record.state = 'waiting';
        changed = true;
      }
      blocked.set(track, 'hkid_lock');
      continue;
    }
    const seconds = result.outcomes.reduce((sum, o) => sum + o.seconds, 0);
    const wallMs = op.timeScale > 0 ? (seconds / op.timeScale) * 1000 : 0;
    const endsAtMs = now + wallMs;
    const waitedMs = cursor.waitingSinceMs === null ? 0 : now - cursor.waitingSinceMs;
    const virtualStart =
      cursor.virtualReadyAt + (op.timeScale > 0 ? (waitedMs / 1000) * op.timeScale : 0);
    // The simulated host changed in place; the document changes only if something was freed.
    const settles: HostDocument['settles'] = [];
    for (const outcome of result.outcomes) {
      if (outcome.ok && outcome.effects.release !== null)
        settles.push({ release: outcome.effects.release, atMs: endsAtMs });
    }
    if (settles.length > 0 || releasesHkid) {
      draft = {
        ...draft,
        settles: settles.length > 0 ? [...draft.settles, ...settles] : draft.settles,
        hkidReleaseBusyUntilMs: releasesHkid ? endsAtMs : draft.hkidReleaseBusyUntilMs,
      };
    }
    bindResults(step, result.outcomes, op.bindings);
    addTotals(op, result.outcomes, track, virtualStart + seconds);
    record.state = 'done';
    record.virtualSeconds = seconds;
    record.virtualStart = virtualStart;
    record.wallMs = wallMs;
    record.startedAtMs = now;
    record.endsAtMs = endsAtMs;
    record.waitedMs = waitedMs;
    cursor.next += 1;
    cursor.readyAtMs = endsAtMs;
    cursor.virtualReadyAt = virtualStart + seconds;
    cursor.waitingSinceMs = null;
    changed = true;
    event('job.step', { step: step.name });
    if (track === 'teardown' && !op.bootReleased) {
      const handoffDone =
        planOf(op).handoff === null
          ? cursor.next >= trackSteps(op, 'teardown').length
          : stepIndex >= (planOf(op).handoff ?? Infinity);
      if (handoffDone) {
        op.bootReleased = true;
        op.tracks.boot.readyAtMs = endsAtMs;
        op.tracks.boot.virtualReadyAt = virtualStart + seconds;
      }
    }
  }
}

/**
 * `table` ready to be changed in place: itself if this batch made it, else a copy that is then
 * the batch's own (a batch of k operations copies a table once, not k times).
 */
function ownTable<T>(table: Record<string, T>, owned: WeakSet<object>): Record<string, T> {
  if (owned.has(table)) return table;
  const copy = { ...table };
  owned.add(copy);
  return copy;
}

function addTotals(
  op: OperationRecord,
  outcomes: readonly CallOutcome[],
  track: Track,
  virtualEnd: number,
): void {
  for (const outcome of outcomes) {
    if (!outcome.ok) continue;
    const e = outcome.effects;
    if (e.removedPages + e.reclaimedPages + e.freedPages > 0 || e.releasedHkid !== null) {
      op.totals.reclaimSeconds += outcome.seconds;
      // A call is counted on the path that dominates it: removal is by far the dearer.
      if (e.removedPages > 0) op.totals.removalSeconds += outcome.seconds;
      else op.totals.teardownSeconds += outcome.seconds;
    }
    op.totals.reclaimedPages += e.removedPages + e.reclaimedPages;
    op.totals.freedPages += e.freedPages;
    op.totals.reusedPages += e.reusedPages;
    op.totals.allocatedPages += e.allocatedPages;
    if (e.releasedHkid !== null && track === 'teardown' && op.totals.hkidReleasedAt === null) {
      op.totals.hkidReleasedAt = virtualEnd;
    }
  }
}

/** A handle name of a plan, split into what it is. */
function handleKind(name: string): 'vm' | 'vcpu' | 'gmem' | 'map' | null {
  const base = name.replace(/^old\./, '').split('.')[0];
  return base === 'vm' || base === 'vcpu' || base === 'gmem' || base === 'map' ? base : null;
}

/**
 * Stops the plan where it is and appends cleanup steps that close whatever the VMM still holds
 * for this VM (old and new): the host is left consistent and the VM with nothing on it.
 */
function beginCleanup(
  op: OperationRecord,
  doc: HostDocument,
  now: number,
  reason: OperationError,
): void {
  op.cleanupReason = reason;
  for (const s of op.steps) if (s.state === 'pending' || s.state === 'waiting') s.state = 'skipped';
  const sim = doc.sim;
  const open = {
    vm: [] as string[],
    vcpu: [] as string[],
    gmem: [] as string[],
    map: [] as string[],
  };
  for (const [name, value] of Object.entries(op.bindings)) {
    const kind = handleKind(name);
    if (kind === null) continue;
    if (kind === 'map') {
      if (sim.mmaps[value] !== undefined) open.map.push(name);
      continue;
    }
    const file = sim.files[value];
    if (file === undefined || (file.kind === 'gmem' && !file.fdOpen)) continue;
    open[kind].push(name);
  }
  const calls = (names: string[], make: (name: string) => PlannedCall['call']): PlannedCall[] =>
    names.map((name) => ({ call: make(name) }));
  const cleanup: PlanStep[] = [
    {
      name: 'stop-vcpus',
      track: 'teardown',
      calls: calls(open.vcpu, (n) => ({ op: 'vcpu_exit', vcpu: ref(n) })),
    },
    {
      name: 'close-vcpus',
      track: 'teardown',
      calls: calls(open.vcpu, (n) => ({ op: 'close', fd: ref(n) })),
    },
    {
      name: 'unmap-old-guest-memfd',
      track: 'teardown',
      calls: calls(open.map, (n) => ({ op: 'munmap', map: ref(n) })),
    },
    {
      name: 'close-guest-memfd',
      track: 'teardown',
      calls: calls(open.gmem, (n) => ({ op: 'close', fd: ref(n) })),
    },
    {
      name: 'close-vm',
      track: 'teardown',
      calls: calls(open.vm, (n) => ({ op: 'close', fd: ref(n) })),
    },
  ].filter((s) => s.calls.length > 0) as PlanStep[];
  const teardownCount = trackSteps(op, 'teardown').length;
  const bootCount = trackSteps(op, 'boot').length;
  const readyAt = Math.max(now, op.tracks.teardown.readyAtMs, op.tracks.boot.readyAtMs);
  const virtualReadyAt = Math.max(op.tracks.teardown.virtualReadyAt, op.tracks.boot.virtualReadyAt);
  const plan = planOf(op);
  op.plan = { ...plan, steps: [...plan.steps, ...cleanup] };
  for (const step of cleanup) op.steps.push({ ...pendingStep(step), cleanup: true });
  op.tracks.teardown = {
    next: teardownCount,
    readyAtMs: readyAt,
    virtualReadyAt,
    waitingSinceMs: null,
  };
  op.tracks.boot = { ...op.tracks.boot, next: bootCount };
}

/** Ends an operation: its result or error, and the VM as it now is. */
function finishOperation(
  op: OperationRecord,
  doc: HostDocument,
  now: number,
  owned: WeakSet<object>,
): { doc: HostDocument; op: OperationRecord } {
  const vm = doc.vms[op.vmId];
  if (vm === undefined) throw new Error(`operation ${op.id} for a missing VM ${op.vmId}`);
  op.finishedAtMs = now;
  let updated: VmRecord;
  if (op.cleanupReason !== null) {
    op.state = op.cleanupReason.code === 'cancelled' ? 'cancelled' : 'failed';
    op.error = op.cleanupReason;
    const anyStepRan = op.steps.some((s) => s.state === 'done' && s.cleanup !== true);
    updated = anyStepRan
      ? { ...vm, state: 'stopped', handles: null, guestMemfds: [] }
      : { ...vm, state: op.action === 'boot' ? 'stopped' : op.previousVmState };
  } else {
    op.state = 'succeeded';
    op.result = resultOf(op);
    updated =
      op.action === 'terminate'
        ? { ...vm, state: 'terminated', handles: null, guestMemfds: [] }
        : booted(vm, op, doc);
  }
  updated = { ...updated, activeJob: null, updatedAtMs: now };
  // The steps record what ran; the plan's calls are of no use any more, and the finished
  // record is kept for days.
  op.plan = null;
  const vms = ownTable(doc.vms, owned);
  vms[vm.id] = updated;
  return { doc: { ...doc, vms }, op };
}

function booted(vm: VmRecord, op: OperationRecord, doc: HostDocument): VmRecord {
  const generation = vm.generation + 1;
  const handles = handlesAfter({ vcpus: vm.vcpus, memoryBytes: vm.memoryBytes }, op.bindings);
  const before = new Map(vm.guestMemfds.map((g) => [g.inode, g]));
  const guestMemfds: GuestMemfdRecord[] = handles.guestMemfds.map((m) => {
    const file = doc.sim.files[m.fd];
    const inode = file?.kind === 'gmem' ? file.inode : -1;
    return {
      id: `gmem-${inode}`,
      inode,
      bytes: m.bytes,
      firstBootGeneration: before.get(inode)?.firstBootGeneration ?? generation,
    };
  });
  return { ...vm, state: 'running', generation, handles, guestMemfds };
}

function resultOf(op: OperationRecord): OperationResult {
  const ends = op.steps.map((s) => (s.virtualStart ?? 0) + s.virtualSeconds);
  const total = Math.max(0, ...ends);
  const run = op.steps.findLast((s) => s.name === 'run' && s.state === 'done');
  const downtime =
    op.action === 'terminate' || run === undefined
      ? total
      : (run.virtualStart ?? 0) + run.virtualSeconds;
  return {
    downtimeSeconds: downtime,
    reclaimSeconds: op.totals.reclaimSeconds,
    bytesReclaimed: pagesToBytes(op.totals.reclaimedPages),
    bytesFreed: pagesToBytes(op.totals.freedPages),
    bytesReused: pagesToBytes(op.totals.reusedPages),
    bytesAllocated: pagesToBytes(op.totals.allocatedPages),
    hkidHeldSeconds: op.action === 'boot' ? 0 : (op.totals.hkidReleasedAt ?? total),
    totalSeconds: total,
  };
}
