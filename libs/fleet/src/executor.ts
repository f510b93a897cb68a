import { type CallOutcome, type Errno, type HostState, cloneHost } from '#tdx-sim';
import {
  type EngineEvent,
  type EngineHost,
  type Micros,
  type OperationRun,
  advanceInPlace,
  beginCleanup,
  handlesAfter,
  nextReleaseAt,
  retryWaiting,
  settleDue,
  startRun,
  stuckStep,
  summarize,
  toSeconds,
} from '#vmm';
import { NotFoundError } from './errors.js';
import { hostTimeAt, realTimeOf } from './host-document.js';
import { pendingJobStep, planOperation } from './operations.js';
import {
  type HkidReleaseAttempts,
  armReleaseFaults,
  countReleaseAttempts,
  noReleaseAttempts,
} from './release-faults.js';
import type {
  GuestMemfdRecord,
  HostDocument,
  JobStep,
  OperationRecord,
  VmRecord,
} from './model.js';

/** How the executor runs a host's operations. */
export interface ExecutorOptions {
  /** The real time now: with `timeScale`, how far the host's virtual clock may go. */
  nowMs: number;
  /**
   * Virtual seconds per real second: the host is simulated up to the virtual time that real time
   * allows. 0: straight to the end of everything that can happen. Pacing only: the results are
   * the same at every scale.
   */
  timeScale: number;
  /** Running operations allowed on one host at once; the rest wait, in order of arrival. */
  hostConcurrency: number;
  /** How long (real time) a step may wait with nothing known to change before it fails. */
  maxWaitMs: number;
  /** How often a host with such a step is looked at again. */
  pollMs: number;
  /**
   * The caller gives `doc` up and keeps no other reference to it, nor to its operations and VMs
   * (the offline fleet engine): the document, its simulated host, pending releases, operations
   * and VM table are changed in place instead of copied first, and `doc` comes back as the
   * advanced document. The results are the same as without.
   */
  inPlace?: boolean;
  /**
   * Simulate up to this virtual time (microseconds) rather than the one `nowMs` and `timeScale`
   * give: the offline fleet engine's one virtual clock, exactly.
   */
  untilVirtual?: Micros;
}

/** A lifecycle change, for the event stream. */
export interface FleetEvent {
  type: 'job.started' | 'job.step' | 'job.waiting' | 'job.finished' | 'vm.state';
  /** Real time of the change (when the host's clock reached `virtualTime`, as paced). */
  atMs: number;
  /** The host's virtual time of the change. */
  virtualTime: number;
  hostId: string;
  vmId: string;
  jobId: string;
  step?: string;
  state?: string;
  errno?: Errno;
  /** The call that returned `errno`. */
  call?: string;
}

/** What advancing a host came to. */
export interface HostAdvance {
  /** The document to commit (compare-and-set on the version it was read at). */
  doc: HostDocument;
  /** False when nothing changed: there is nothing to commit. */
  changed: boolean;
  /** Operations that changed, as committed (finished ones too). */
  ops: OperationRecord[];
  /** Operations that ended: they have left `doc.ops` and are to be stored on their own. */
  finished: OperationRecord[];
  events: FleetEvent[];
  /** The real time at which the host next has something to do, or null when it has nothing. */
  wakeAtMs: number | null;
  /** The host's virtual time when it next has something to do, or null. */
  nextAt: number | null;
}

/** Copies of what an advance changes in place: the rest of the document is shared. */
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

/** A started operation is an engine run: its plan is set. */
function asRun(op: OperationRecord): OperationRun {
  if (op.plan === null) throw new Error(`operation ${op.id} has not started: no plan yet`);
  return op as OperationRun & OperationRecord;
}

/**
 * Moves every operation of a host forward, in virtual time, as far as `options` allows: from
 * the host's clock to the virtual time the real time gives at the time scale (at scale 0, to the
 * end of what can happen). Events are taken in virtual-time order: releases return, arrived
 * operations start in their order of arrival while the host has room, each operation's due steps
 * run through the engine, and a step that waits for resources tries again when a release comes
 * back. Pure unless `options.inPlace`: then `doc` itself is advanced.
 */
export function advanceHost(doc: HostDocument, options: ExecutorOptions): HostAdvance {
  const { nowMs, timeScale } = options;
  const target =
    options.untilVirtual ?? (timeScale === 0 ? Infinity : hostTimeAt(doc, nowMs, timeScale));
  const host: EngineHost = {
    sim: doc.sim,
    releases: doc.releases,
    hkidLockFreeAt: doc.hkidLockFreeAt,
  };
  const inPlace = options.inPlace === true;
  let ownSim = inPlace;
  const own = (): void => {
    if (ownSim) return;
    host.sim = cloneHost(host.sim);
    host.releases = [...host.releases];
    ownSim = true;
  };
  const live = Object.values(doc.ops).sort((a, b) => a.arrival - b.arrival);
  let running = 0;
  for (const op of live) if (op.state === 'running') running += 1;
  // In place, an operation is its own copy: `touched` only records that it changed.
  const touched = new Map<string, OperationRecord>();
  const mine = (op: OperationRecord): OperationRecord => {
    let copy = touched.get(op.id);
    if (copy === undefined) {
      copy = inPlace ? op : cloneOperation(op);
      touched.set(op.id, copy);
      if (!inPlace) live[live.indexOf(op)] = copy;
    }
    return copy;
  };
  let vms: Record<string, VmRecord> | null = inPlace ? doc.vms : null;
  // The host's fault setting arms the simulated host before each step, and every release
  // attempt a step makes is counted (its rules count attempts): the same releases fail however
  // the host's time is cut into advances.
  const faults = doc.hkidReleaseFaults;
  let attempts: HkidReleaseAttempts | null = null;
  const onStepRan =
    faults === undefined
      ? undefined
      : (outcomes: readonly CallOutcome[], sim: HostState): void => {
          attempts ??= { ...(doc.hkidReleaseAttempts ?? noReleaseAttempts()) };
          if (countReleaseAttempts(attempts, outcomes)) armReleaseFaults(sim, faults, attempts);
        };
  const armFaults = (): void => {
    if (faults !== undefined) {
      armReleaseFaults(
        host.sim,
        faults,
        attempts ?? doc.hkidReleaseAttempts ?? noReleaseAttempts(),
      );
    }
  };
  const finished: OperationRecord[] = [];
  const events: FleetEvent[] = [];
  // Real time of a virtual time, as the clock was paced when this advance began (now at most).
  const realTime = (at: number): number => Math.min(nowMs, realTimeOf(doc, at, timeScale));
  const event = (
    op: OperationRecord,
    type: FleetEvent['type'],
    at: number,
    extra: Partial<FleetEvent> = {},
  ): void => {
    events.push({
      type,
      atMs: realTime(at),
      virtualTime: toSeconds(at),
      hostId: op.hostId,
      vmId: op.vmId,
      jobId: op.id,
      ...extra,
    });
  };
  const record = (op: OperationRecord, engineEvents: EngineEvent[]): boolean => {
    let stepped = false;
    for (const e of engineEvents) {
      const step = op.steps[e.step] as JobStep;
      if (e.type === 'waiting') {
        const extra: Partial<FleetEvent> = { step: step.name };
        if (e.errno !== null) extra.errno = e.errno;
        if (e.call !== null) extra.call = e.call;
        event(op, 'job.waiting', e.at, extra);
        continue;
      }
      stepped = true;
      const startedAtMs = realTime(e.at);
      const endsAtMs =
        timeScale === 0 ? startedAtMs : startedAtMs + (step.virtualSeconds / timeScale) * 1000;
      step.startedAtMs = startedAtMs;
      step.endsAtMs = endsAtMs;
      step.wallMs = endsAtMs - startedAtMs;
      step.waitedMs = timeScale === 0 ? 0 : (step.waitedSeconds / timeScale) * 1000;
      event(op, 'job.step', e.at, { step: step.name });
    }
    // Cleanup steps come from the engine without their real-time fields, at the end of the list.
    for (let i = op.steps.length - 1; i >= 0; i -= 1) {
      const s = op.steps[i] as Partial<JobStep>;
      if (s.wallMs !== undefined) break;
      op.steps[i] = {
        ...(s as JobStep),
        wallMs: 0,
        startedAtMs: null,
        endsAtMs: null,
        waitedMs: 0,
      };
    }
    return stepped;
  };

  /** When the host next has something to do: the earliest of its operations and releases. */
  const nextEventAt = (from: number): number =>
    nextEvent(live, host, options.hostConcurrency, from).at;

  const start = (op: OperationRecord, at: number): void => {
    const vm = (vms ?? doc.vms)[op.vmId];
    if (vm === undefined) throw new Error(`operation ${op.id} for a missing VM ${op.vmId}`);
    const plan = planOperation({ ...doc, sim: host.sim }, vm, op.intent);
    const run = startRun(plan, at);
    op.plan = plan;
    op.steps = plan.steps.map(pendingJobStep);
    op.tracks = run.tracks;
    op.bootReleased = run.bootReleased;
    op.bindings = run.bindings;
    op.startedAt = at;
    op.endsAt = at;
    op.runEndedAt = null;
    op.state = 'running';
    running += 1;
    op.startedAtMs = realTime(at);
    op.nextAt = at;
    event(op, 'job.started', at);
  };

  const finish = (op: OperationRecord, at: number): void => {
    vms ??= { ...doc.vms };
    const vm = vms[op.vmId];
    if (vm === undefined) throw new Error(`operation ${op.id} for a missing VM ${op.vmId}`);
    const updated = finishedVm(op, vm, host, realTime(at));
    vms[vm.id] = updated;
    op.finishedAtMs = realTime(at);
    op.nextAt = null;
    op.stuckSinceMs = null;
    // The steps record what ran; the plan's calls are of no use any more, and the finished
    // record is kept for days.
    op.plan = null;
    running -= 1;
    live.splice(live.indexOf(op), 1);
    finished.push(op);
    event(op, 'job.finished', at, { state: op.state });
    event(op, 'vm.state', at, { state: updated.state });
  };

  /** Everything that happens at virtual time `at`, until nothing more does. */
  const processAt = (at: number): void => {
    own();
    for (let progress = true; progress;) {
      const returned = settleDue(host, at);
      progress = returned;
      // Arrived operations start in their order of arrival (`live` keeps it) while there is room.
      let room = options.hostConcurrency - running;
      for (let k = 0; k < live.length && room > 0; k += 1) {
        const candidate = live[k] as OperationRecord;
        if (candidate.state !== 'queued' || candidate.arrivedAt > at) continue;
        start(mine(candidate), at);
        room -= 1;
        progress = true;
      }
      const due: OperationRecord[] = [];
      for (const candidate of live) {
        if (candidate.state !== 'running') continue;
        const cancelling = candidate.cancelRequested && candidate.cleanupReason === null;
        if (candidate.nextAt === null ? cancelling : candidate.nextAt <= at) due.push(candidate);
      }
      for (const candidate of due) {
        const op = mine(candidate);
        armFaults();
        const result = advanceInPlace(asRun(op), host, at, {
          whenStuck: 'wait',
          onFailure: 'cleanup',
          cancel: op.cancelRequested,
          ...(onStepRan === undefined ? {} : { onStepRan }),
        });
        if (record(op, result.events)) progress = true;
        if (result.status.kind === 'ended') {
          settleOutcome(op);
          finish(op, at);
          progress = true;
        } else if (result.status.kind === 'due') {
          op.nextAt = result.status.at;
          op.stuckSinceMs = null;
        } else {
          op.nextAt = null;
        }
      }
      if (!progress) break;
      // Resources come back only through releases: when some did, every step that waits for
      // them tries again now; otherwise a release added meanwhile may come back sooner than a
      // waiting step expected, and it tries again then.
      const retryAt = returned ? at : nextReleaseAt(host);
      if (!Number.isFinite(retryAt)) continue;
      for (const candidate of live) {
        if (candidate.state !== 'running' || candidate.plan === null) continue;
        const { teardown, boot } = candidate.tracks;
        if (teardown.waitingFor !== 'resources' && boot.waitingFor !== 'resources') continue;
        const op = mine(candidate);
        if (retryWaiting(asRun(op), retryAt)) {
          op.nextAt = Math.min(op.nextAt ?? Infinity, retryAt);
        }
      }
    }
  };

  let clock = doc.clock;
  let processed = false;
  for (;;) {
    const next = nextEventAt(clock);
    if (next > target || !Number.isFinite(next)) {
      // Steps that wait with nothing known to change: give up on them after maxWaitMs.
      const timedOut = timeOuts(live, options, mine);
      if (timedOut.length === 0) break;
      // They give up now: at the virtual time the real time has reached.
      if (Number.isFinite(target)) clock = Math.max(clock, target);
      for (const op of timedOut) {
        const run = asRun(op);
        const stuck = stuckStep(run);
        const step = stuck === null ? undefined : op.steps[stuck];
        own();
        beginCleanup(run, host.sim, clock, {
          code: 'wait_timeout',
          message: `${step?.name ?? 'a step'} waited ${options.maxWaitMs} ms for ${step?.errno ?? 'resources'}: ${step?.message ?? 'nothing was given back'}`,
          ...(step === undefined ? {} : { step: step.name }),
          ...(step?.errno === undefined ? {} : { errno: step.errno }),
        });
        record(op, []);
        op.nextAt = clock;
        op.stuckSinceMs = null;
      }
      processed = true;
      continue;
    }
    clock = next;
    processAt(clock);
    processed = true;
  }
  // Stuck operations start (or keep) their real-time wait.
  for (const candidate of live) {
    if (
      candidate.state === 'running' &&
      candidate.nextAt === null &&
      candidate.stuckSinceMs === null
    ) {
      mine(candidate).stuckSinceMs = nowMs;
    }
  }

  const changed = processed || touched.size > 0 || finished.length > 0;
  if (!changed) {
    return { doc, changed, ops: [], finished, events, ...wakeOf(doc, live, options) };
  }
  const newClock = Number.isFinite(target) ? target : clock;
  let next: HostDocument;
  if (inPlace) {
    // The document is the caller's to give up: it becomes the advanced one.
    for (const op of finished) delete doc.ops[op.id];
    doc.sim = host.sim;
    doc.releases = host.releases;
    doc.hkidLockFreeAt = host.hkidLockFreeAt;
    if (attempts !== null) doc.hkidReleaseAttempts = attempts;
    doc.clock = Math.max(doc.clock, newClock);
    doc.clockAtMs = nowMs;
    next = doc;
  } else {
    const ops: Record<string, OperationRecord> = {};
    for (const op of live) ops[op.id] = op;
    next = {
      ...doc,
      sim: host.sim,
      vms: vms ?? doc.vms,
      ops,
      releases: host.releases,
      hkidLockFreeAt: host.hkidLockFreeAt,
      ...(attempts === null ? {} : { hkidReleaseAttempts: attempts }),
      clock: Math.max(doc.clock, newClock),
      clockAtMs: nowMs,
    };
  }
  return {
    doc: next,
    changed,
    ops: [...touched.values()],
    finished,
    events,
    ...wakeOf(next, live, options),
  };
}

/** Operations whose step has waited with nothing known to change for `maxWaitMs`. */
function timeOuts(
  live: OperationRecord[],
  options: ExecutorOptions,
  mine: (op: OperationRecord) => OperationRecord,
): OperationRecord[] {
  const due: OperationRecord[] = [];
  for (const op of [...live]) {
    if (op.state !== 'running' || op.nextAt !== null || op.stuckSinceMs === null) continue;
    if (options.nowMs - op.stuckSinceMs >= options.maxWaitMs) due.push(mine(op));
  }
  return due;
}

/**
 * When the host next has something to do, from virtual time `from` on: a release comes back, an
 * arrived operation can start (while the host has room, in order of arrival), a running one is
 * due, or a stuck one has a cancel to act on. `stuck`: some running operation waits with nothing
 * known to end its wait.
 */
function nextEvent(
  live: readonly OperationRecord[],
  host: Pick<EngineHost, 'releases'>,
  hostConcurrency: number,
  from: number,
): { at: number; stuck: boolean } {
  let at = nextReleaseAt(host);
  let stuck = false;
  let room = hostConcurrency;
  for (const op of live) if (op.state === 'running') room -= 1;
  for (const op of live) {
    if (op.state === 'queued') {
      if (room > 0) at = Math.min(at, Math.max(op.arrivedAt, from));
      room -= 1;
    } else if (op.nextAt !== null) at = Math.min(at, Math.max(op.nextAt, from));
    else if (op.cancelRequested && op.cleanupReason === null) at = Math.min(at, from);
    else stuck = true;
  }
  return { at, stuck };
}

/** When the host next has something to do (virtual), and when a worker should look (real). */
function wakeOf(
  doc: HostDocument,
  live: readonly OperationRecord[],
  options: ExecutorOptions,
): { nextAt: number | null; wakeAtMs: number | null } {
  const { at: next, stuck } = nextEvent(live, doc, options.hostConcurrency, doc.clock);
  const poll = stuck ? options.nowMs + options.pollMs : Infinity;
  const paced =
    Number.isFinite(next) && options.timeScale > 0
      ? realTimeOf(doc, next, options.timeScale)
      : Number.isFinite(next)
        ? options.nowMs
        : Infinity;
  const wake = Math.min(paced, poll);
  return {
    nextAt: Number.isFinite(next) ? next : null,
    wakeAtMs: Number.isFinite(wake) ? wake : null,
  };
}

/** Sets an ended operation's state, result or error. */
function settleOutcome(op: OperationRecord): void {
  if (op.cleanupReason !== null) {
    op.state = op.cleanupReason.code === 'cancelled' ? 'cancelled' : 'failed';
    op.error = op.cleanupReason;
  } else {
    op.state = 'succeeded';
    op.result = summarize(asRun(op));
  }
}

/** The VM after its operation ended. */
function finishedVm(op: OperationRecord, vm: VmRecord, host: EngineHost, nowMs: number): VmRecord {
  let updated: VmRecord;
  if (op.cleanupReason !== null) {
    const anyStepRan = op.steps.some((s) => s.state === 'done' && s.cleanup !== true);
    updated = anyStepRan
      ? { ...vm, state: 'stopped', handles: null, guestMemfds: [] }
      : { ...vm, state: op.action === 'boot' ? 'stopped' : op.previousVmState };
  } else {
    updated =
      op.action === 'terminate'
        ? { ...vm, state: 'terminated', handles: null, guestMemfds: [] }
        : booted(vm, op, host);
  }
  return { ...updated, activeJob: null, updatedAtMs: nowMs };
}

function booted(vm: VmRecord, op: OperationRecord, host: EngineHost): VmRecord {
  const generation = vm.generation + 1;
  const handles = handlesAfter({ vcpus: vm.vcpus, memoryBytes: vm.memoryBytes }, op.bindings);
  const before = new Map(vm.guestMemfds.map((g) => [g.inode, g]));
  const guestMemfds: GuestMemfdRecord[] = handles.guestMemfds.map((m) => {
    const file = host.sim.files[m.fd];
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

/** What advancing an operation's host did to it. */
export type Advance =
  /** Nothing to commit: come back at `untilMs` (null: only when something else changes). */
  | { kind: 'wait'; untilMs: number | null }
  /**
   * Commit `doc`. `finished` is set when the operation ended: it has left `doc.ops` and is to be
   * stored on its own. `wakeAtMs` says when the host has more to do.
   */
  | {
      kind: 'commit';
      doc: HostDocument;
      op: OperationRecord;
      events: FleetEvent[];
      finished: OperationRecord | null;
      wakeAtMs: number | null;
    };

/**
 * Advances the host of operation `opId` ({@link advanceHost}) and says what that did to this
 * operation. Throws {@link NotFoundError} when the operation is not in the document.
 */
export function advanceOperation(
  doc: HostDocument,
  opId: string,
  options: ExecutorOptions,
): Advance {
  if (doc.ops[opId] === undefined) throw new NotFoundError('job', opId);
  const advance = advanceHost(doc, options);
  if (!advance.changed) return { kind: 'wait', untilMs: advance.wakeAtMs };
  const finished = advance.finished.find((op) => op.id === opId) ?? null;
  const op = finished ?? advance.doc.ops[opId];
  if (op === undefined) throw new Error(`operation ${opId} left its host unfinished`);
  return {
    kind: 'commit',
    doc: advance.doc,
    op,
    events: advance.events,
    finished,
    wakeAtMs: advance.wakeAtMs,
  };
}
