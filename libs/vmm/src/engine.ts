import {
  type CallOutcome,
  type Errno,
  type HostState,
  type SimOp,
  applyCallsInPlace,
  cloneHost,
  pagesToBytes,
  settleReleaseInPlace,
} from '#tdx-sim';
import {
  type Bindings,
  type Plan,
  type PlanStep,
  type PlannedCall,
  type StepName,
  type Track,
  bindResults,
  ref,
  resolveStep,
} from './plan.js';
import { OLD_VM_HANDLE, handleKind } from './plans.js';

// The operation engine: one operation's plan advanced on a simulated host in virtual time. The
// `sim` command's runner, the daemon's workers and the offline fleet engine all run it, so the
// three give the same numbers for the same host state.

/** Errnos that mean "not now": the step waits for resources to come back, then retries. */
export const WAITABLE_ERRNOS: readonly Errno[] = ['ENOSPC', 'ENOMEM', 'EBUSY'];

/** The two tracks of a plan, in the order they go on a tie. */
export const TRACKS: readonly Track[] = ['teardown', 'boot'];

/**
 * Virtual time inside the engine: whole microseconds. Sums and differences of whole numbers
 * below 2^53 are exact in a double, so an operation's figures do not depend on the absolute
 * time it started at (seconds as floats would: (T + x) - T is not always x). 2^53 microseconds
 * is 285 years of virtual time. Records and summaries give seconds.
 */
export type Micros = number;

/** Microseconds per second. */
export const MICROS_PER_SECOND = 1_000_000;

/** Virtual seconds as whole microseconds. */
export function toMicros(seconds: number): Micros {
  return Math.round(seconds * MICROS_PER_SECOND);
}

/** Whole microseconds as virtual seconds. */
export function toSeconds(micros: Micros): number {
  return micros / MICROS_PER_SECOND;
}

/** What a step freed, returning to the host at virtual time `at`. */
export interface PendingRelease {
  release: number;
  at: Micros;
}

/**
 * The part of a host an operation runs on: the simulated host, what is in flight back to it,
 * and the kernel's global HKID release lock. {@link advanceInPlace} changes it in place.
 */
export interface EngineHost {
  sim: HostState;
  releases: PendingRelease[];
  /** HKIDs are released under one host-wide lock: it is free from this virtual time on. */
  hkidLockFreeAt: Micros;
}

/** Where a step of an operation is. */
export type StepState = 'pending' | 'waiting' | 'done' | 'failed' | 'skipped';

/** One step of an operation, as it ran. Times in virtual seconds. */
export interface StepRecord {
  name: StepName;
  track: Track;
  state: StepState;
  /** The step's own cost. */
  virtualSeconds: number;
  /** When it started, from the operation's start; null until it runs. */
  virtualStart: number | null;
  /** Time spent waiting (for an HKID, memory or the HKID release lock) before it ran. */
  waitedSeconds: number;
  /** The errno that made it wait, or the one it failed with. */
  errno?: Errno;
  /** The call that returned `errno`. */
  call?: SimOp;
  message?: string;
  /** A step added to close what was left after a cancel or a failure. */
  cleanup?: boolean;
}

/** What a track's next step waits for. */
export type WaitReason = 'resources' | 'hkid_lock';

/** A track's position: its next step and when that step may run. */
export interface TrackCursor {
  /** Index into the track's steps (in plan order). */
  next: number;
  /** Virtual time (of the host) from which the next step may run. */
  readyAt: Micros;
  /** Set while the next step waits: when it first tried. */
  waitingSince: Micros | null;
  /** What it waits for, while it waits. */
  waitingFor: WaitReason | null;
  /** Set when it waits for the other track, due at the same moment, to go first. */
  yielded: boolean;
}

/** What an operation adds up as its steps run. */
export interface RunTotals {
  /** Virtual seconds of the calls that removed, reclaimed or freed memory or released an HKID. */
  reclaimSeconds: number;
  /** The part of `reclaimSeconds` spent by Dynamic Page Removal (pages of a RUNNABLE TD). */
  removalSeconds: number;
  /** The part spent reclaiming pages of a TD in TEARDOWN (and releasing HKIDs). */
  teardownSeconds: number;
  reclaimedPages: number;
  freedPages: number;
  reusedPages: number;
  allocatedPages: number;
  /** When the old VM's HKID was released, from the operation's start. */
  hkidReleasedAt: Micros | null;
}

/** Why an operation stopped before the end of its plan. */
export interface StopReason {
  code: 'step_failed' | 'cancelled' | 'wait_timeout';
  message: string;
  step?: StepName;
  errno?: Errno;
}

/** An operation under way: plain data, so that it can be stored and resumed anywhere. */
export interface OperationRun {
  plan: Plan;
  /** One per step of the plan, in plan order. */
  steps: StepRecord[];
  tracks: Record<Track, TrackCursor>;
  /** True once the boot track may run (after the plan's handoff step). */
  bootReleased: boolean;
  /**
   * The handles the run's steps bound. The plan's initial bindings (the old VM's fds) are read
   * from the plan, never copied: a big VM has hundreds.
   */
  bindings: Bindings;
  totals: RunTotals;
  /** Virtual time (of the host) at which it started. */
  startedAt: Micros;
  /** When its last step so far ends (its start until a step has run). */
  endsAt: Micros;
  /** When the new VM's `run` step ended (the end of the downtime), or null. */
  runEndedAt: Micros | null;
  /** Set once it switched to cleaning up after a cancel or a failure. */
  cleanupReason: StopReason | null;
}

/** Something an advance did, for events and wall-clock records. */
export type EngineEvent =
  | { type: 'step'; step: number; at: Micros }
  | { type: 'waiting'; step: number; at: Micros; errno: Errno | null; call: SimOp | null };

/** How an advance treats a step that must wait with nothing known to change. */
export interface AdvanceOptions {
  /**
   * `fail`: the step fails at once (one operation alone on its host: nothing will change).
   * `wait`: it waits for something else on the host to change (the fleet's hosts).
   */
  whenStuck: 'fail' | 'wait';
  /** `stop`: a failed step ends the run where it is. `cleanup`: what is open gets closed. */
  onFailure: 'stop' | 'cleanup';
  /** Stop at this step boundary and clean up (a cancel). */
  cancel?: boolean;
  /**
   * Told of the calls of each step that ran and was kept (not one refused, nor one undone to
   * wait for the HKID release lock), with the host as they left it: the fleet counts HKID
   * release attempts there and arms its host's fault setting for the next one.
   */
  onStepRan?: (outcomes: readonly CallOutcome[], sim: HostState) => void;
}

/** Where an operation is after an advance. */
export type RunStatus =
  /** Has more to do at virtual time `at`. */
  | { kind: 'due'; at: Micros }
  /** A step waits with nothing known to change on its host: retry when something does. */
  | { kind: 'stuck' }
  /** Every step has run (or stopped), and the last one's time has passed. */
  | { kind: 'ended' };

/** What {@link advanceInPlace} did. */
export interface Advanced {
  status: RunStatus;
  events: EngineEvent[];
}

/** A track's cursor before its first step, ready from virtual time `at`. */
export function newCursor(at: Micros): TrackCursor {
  return { next: 0, readyAt: at, waitingSince: null, waitingFor: null, yielded: false };
}

/** Totals before any step. */
export function emptyTotals(): RunTotals {
  return {
    reclaimSeconds: 0,
    removalSeconds: 0,
    teardownSeconds: 0,
    reclaimedPages: 0,
    freedPages: 0,
    reusedPages: 0,
    allocatedPages: 0,
    hkidReleasedAt: null,
  };
}

/** A new run of `plan`, starting at virtual time `at`. */
export function startRun(plan: Plan, at: Micros): OperationRun {
  return {
    plan,
    steps: plan.steps.map(pendingStep),
    tracks: { teardown: newCursor(at), boot: newCursor(at) },
    bootReleased: !plan.steps.some((s) => s.track === 'teardown'),
    bindings: {},
    totals: emptyTotals(),
    startedAt: at,
    endsAt: at,
    runEndedAt: null,
    cleanupReason: null,
  };
}

/** A step that has not run yet. */
export function pendingStep(step: PlanStep): StepRecord {
  return {
    name: step.name,
    track: step.track,
    state: 'pending',
    virtualSeconds: 0,
    virtualStart: null,
    waitedSeconds: 0,
  };
}

/** Each plan's step indexes by track, kept while the plan has as many steps (cleanup adds some). */
const trackIndex = new WeakMap<PlanStep[], { length: number; byTrack: Record<Track, number[]> }>();

/** Indexes into the plan of the steps of one track, in order. */
export function trackSteps(plan: Plan, track: Track): number[] {
  const steps = plan.steps;
  let index = trackIndex.get(steps);
  if (index?.length !== steps.length) {
    const byTrack: Record<Track, number[]> = { teardown: [], boot: [] };
    steps.forEach((step, i) => byTrack[step.track].push(i));
    index = { length: steps.length, byTrack };
    trackIndex.set(steps, index);
  }
  return index.byTrack[track];
}

/**
 * Returns to the host whatever is due by virtual time `at`, in place (the caller owns `host`, as
 * for {@link advanceInPlace}); true if anything was.
 */
export function settleDue(host: EngineHost, at: Micros): boolean {
  let settled = false;
  for (let i = 0; i < host.releases.length;) {
    const pending = host.releases[i] as PendingRelease;
    if (pending.at <= at) {
      settleReleaseInPlace(host.sim, pending.release);
      host.releases.splice(i, 1);
      settled = true;
    } else i += 1;
  }
  return settled;
}

/** The earliest virtual time at which something in flight returns to the host, or Infinity. */
export function nextReleaseAt(host: Pick<EngineHost, 'releases'>): Micros {
  let next = Infinity;
  for (const pending of host.releases) if (pending.at < next) next = pending.at;
  return next;
}

/** True while a step of the plan (not a cleanup step) is still to run. */
export function stepsLeft(run: OperationRun): boolean {
  return run.steps.some((s) => s.state === 'pending' || s.state === 'waiting');
}

/**
 * Moves `run` forward on `host` as far as it can go at virtual time `at`: runs every step that
 * is due (each takes what it needs when it starts; what it frees returns to the host when its
 * virtual time has passed, through `host.releases`), waits for resources, cleans up after a
 * cancel or a failure, and says when it next has something to do. Changes `run` and `host` in
 * place (the caller owns both); what happened comes back as events.
 */
export function advanceInPlace(
  run: OperationRun,
  host: EngineHost,
  at: Micros,
  options: AdvanceOptions,
): Advanced {
  const events: EngineEvent[] = [];
  settleDue(host, at);
  if (options.cancel === true && run.cleanupReason === null && stepsLeft(run)) {
    beginCleanup(run, host.sim, at, { code: 'cancelled', message: 'cancelled while running' });
  }
  for (;;) {
    const current = nextTrack(run);
    if (current === null) {
      const end = run.endsAt;
      return { status: end > at ? { kind: 'due', at: end } : { kind: 'ended' }, events };
    }
    const cursor = run.tracks[current];
    if (!Number.isFinite(cursor.readyAt)) return { status: { kind: 'stuck' }, events };
    if (cursor.readyAt > at) return { status: { kind: 'due', at: cursor.readyAt }, events };
    cursor.yielded = false;
    const stepIndex = trackSteps(run.plan, current)[cursor.next] as number;
    const step = run.plan.steps[stepIndex] as PlanStep;
    const record = run.steps[stepIndex] as StepRecord;
    settleDue(host, at);
    const calls = resolveStep(step, run.bindings, run.plan.initialBindings);
    const result = applyCallsInPlace(host.sim, calls);

    if (result.failedAt !== null) {
      const failed = result.outcomes[result.failedAt];
      if (failed === undefined || failed.ok) throw new Error('a refused batch without its refusal');
      const call = calls[result.failedAt]?.op ?? null;
      if (WAITABLE_ERRNOS.includes(failed.errno)) {
        const other = run.tracks[current === 'teardown' ? 'boot' : 'teardown'];
        const otherOpen = current === 'boot' || run.bootReleased;
        const otherBusy =
          otherOpen &&
          other.next < trackSteps(run.plan, current === 'teardown' ? 'boot' : 'teardown').length;
        const nextChange = Math.min(
          nextReleaseAt(host),
          otherBusy ? Math.max(other.readyAt, at) : Infinity,
        );
        if (Number.isFinite(nextChange) || options.whenStuck === 'wait') {
          if (cursor.waitingSince === null) {
            cursor.waitingSince = at;
            record.state = 'waiting';
            record.errno = failed.errno;
            record.message = failed.message;
            if (call !== null) record.call = call;
            events.push({ type: 'waiting', step: stepIndex, at, errno: failed.errno, call });
          }
          cursor.waitingFor = 'resources';
          // Retry once something changes; if that is the other track, due now, it goes first.
          cursor.readyAt = nextChange;
          cursor.yielded = nextChange === at;
          if (Number.isFinite(nextChange)) continue;
          // Nothing this operation knows of will change: the host retries it when anything does.
          return { status: { kind: 'stuck' }, events };
        }
      }
      record.state = 'failed';
      record.errno = failed.errno;
      record.message = failed.message;
      if (call !== null) record.call = call;
      record.waitedSeconds = toSeconds(at - (cursor.waitingSince ?? at));
      record.virtualStart = toSeconds(at - run.startedAt);
      const reason: StopReason = {
        code: 'step_failed',
        message: `${step.name} failed with ${failed.errno}: ${failed.message}`,
        step: step.name,
        errno: failed.errno,
      };
      if (options.onFailure === 'stop') {
        run.cleanupReason = reason;
        for (const s of run.steps)
          if (s.state === 'pending' || s.state === 'waiting') s.state = 'skipped';
        return { status: { kind: 'ended' }, events };
      }
      beginCleanup(run, host.sim, at, reason);
      continue;
    }

    // A release that got as far as KEY.FREEID held the lock for its cache write-back, whether
    // FREEID then failed or not.
    const releasesHkid = result.outcomes.some(
      (o) => o.ok && (o.effects.releasedHkid !== null || o.effects.hkidReleaseFailure === 'FREEID'),
    );
    if (releasesHkid && host.hkidLockFreeAt > at) {
      // The kernel releases HKIDs under one global lock: wait for the release in progress. The
      // wait counts like any other (the VM is down meanwhile).
      result.undo();
      if (cursor.waitingSince === null) {
        cursor.waitingSince = at;
        record.state = 'waiting';
        events.push({ type: 'waiting', step: stepIndex, at, errno: null, call: null });
      }
      cursor.waitingFor = 'hkid_lock';
      cursor.readyAt = host.hkidLockFreeAt;
      continue;
    }

    const seconds = sumSeconds(result.outcomes);
    const end = at + toMicros(seconds);
    for (const outcome of result.outcomes) {
      if (outcome.ok && outcome.effects.release !== null) {
        host.releases.push({ release: outcome.effects.release, at: end });
      }
    }
    if (releasesHkid) host.hkidLockFreeAt = end;
    options.onStepRan?.(result.outcomes, host.sim);
    bindResults(step, result.outcomes, run.bindings);
    addTotals(run, result.outcomes, current, end - run.startedAt);
    record.state = 'done';
    record.virtualSeconds = toSeconds(end - at);
    record.virtualStart = toSeconds(at - run.startedAt);
    record.waitedSeconds = toSeconds(at - (cursor.waitingSince ?? at));
    if (end > run.endsAt) run.endsAt = end;
    if (step.name === 'run') run.runEndedAt = end;
    events.push({ type: 'step', step: stepIndex, at });
    cursor.next += 1;
    cursor.readyAt = end;
    cursor.waitingSince = null;
    cursor.waitingFor = null;
    if (current === 'teardown' && !run.bootReleased) {
      const handoff = run.plan.handoff;
      const done =
        handoff === null
          ? cursor.next >= trackSteps(run.plan, 'teardown').length
          : step.name === handoff;
      if (done) {
        run.bootReleased = true;
        run.tracks.boot.readyAt = end;
      }
    }
  }
}

/**
 * {@link advanceInPlace} on copies: `run` and `host` are left as they are, and the advanced
 * operation and host come back with what happened.
 */
export function advance(
  run: OperationRun,
  host: EngineHost,
  at: Micros,
  options: AdvanceOptions,
): Advanced & { run: OperationRun; host: EngineHost } {
  const ownRun = structuredClone(run);
  const ownHost: EngineHost = {
    sim: cloneHost(host.sim),
    releases: host.releases.map((r) => ({ ...r })),
    hkidLockFreeAt: host.hkidLockFreeAt,
  };
  return { ...advanceInPlace(ownRun, ownHost, at, options), run: ownRun, host: ownHost };
}

/**
 * The track whose next step goes first: the one ready first; on a tie, one that yielded goes
 * last, then the teardown before the boot. Null when no open track has a step left.
 */
function nextTrack(run: OperationRun): Track | null {
  let best: Track | null = null;
  for (const track of TRACKS) {
    if (track === 'boot' && !run.bootReleased) continue;
    const cursor = run.tracks[track];
    if (cursor.next >= trackSteps(run.plan, track).length) continue;
    if (best === null) {
      best = track;
      continue;
    }
    const chosen = run.tracks[best];
    if (
      cursor.readyAt < chosen.readyAt ||
      (cursor.readyAt === chosen.readyAt && chosen.yielded && !cursor.yielded)
    ) {
      best = track;
    }
  }
  return best;
}

/**
 * Lets every track that waits for resources try again at `at` (something changed on the host).
 * True if one did.
 */
export function retryWaiting(run: OperationRun, at: Micros): boolean {
  let any = false;
  for (const track of TRACKS) {
    const cursor = run.tracks[track];
    if (cursor.waitingFor === 'resources' && cursor.readyAt > at) {
      cursor.readyAt = at;
      any = true;
    }
  }
  return any;
}

/** The step a stuck run waits on, or null. */
export function stuckStep(run: OperationRun): number | null {
  for (const track of TRACKS) {
    const cursor = run.tracks[track];
    if (cursor.waitingFor === 'resources' && !Number.isFinite(cursor.readyAt)) {
      return trackSteps(run.plan, track)[cursor.next] ?? null;
    }
  }
  return null;
}

/**
 * Stops the plan where it is and appends cleanup steps that close whatever the VMM still holds
 * for this VM (old and new): the host is left consistent and the VM with nothing on it.
 */
export function beginCleanup(
  run: OperationRun,
  sim: HostState,
  at: Micros,
  reason: StopReason,
): void {
  run.cleanupReason = reason;
  for (const s of run.steps) {
    if (s.state === 'waiting' && reason.code === 'wait_timeout') s.state = 'failed';
    else if (s.state === 'pending' || s.state === 'waiting') s.state = 'skipped';
  }
  const open = {
    vm: [] as string[],
    vcpu: [] as string[],
    gmem: [] as string[],
    map: [] as string[],
  };
  const handles = [run.plan.initialBindings, run.bindings];
  for (const [name, value] of handles.flatMap((table) => Object.entries(table))) {
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
  const cleanup: PlanStep[] = (
    [
      ['stop-vcpus', calls(open.vcpu, (n) => ({ op: 'vcpu_exit', vcpu: ref(n) }))],
      ['close-vcpus', calls(open.vcpu, (n) => ({ op: 'close', fd: ref(n) }))],
      ['unmap-old-guest-memfd', calls(open.map, (n) => ({ op: 'munmap', map: ref(n) }))],
      ['close-guest-memfd', calls(open.gmem, (n) => ({ op: 'close', fd: ref(n) }))],
      ['close-vm', calls(open.vm, (n) => ({ op: 'close', fd: ref(n) }))],
    ] as const
  )
    .filter(([, planned]) => planned.length > 0)
    .map(([name, planned]) => ({ name, track: 'teardown', calls: planned }));
  const teardownCount = trackSteps(run.plan, 'teardown').length;
  const bootCount = trackSteps(run.plan, 'boot').length;
  const readyAt = Math.max(at, run.tracks.teardown.readyAt, run.tracks.boot.readyAt);
  run.plan = { ...run.plan, steps: [...run.plan.steps, ...cleanup] };
  for (const step of cleanup) run.steps.push({ ...pendingStep(step), cleanup: true });
  run.tracks.teardown = {
    next: teardownCount,
    readyAt: Number.isFinite(readyAt) ? readyAt : at,
    waitingSince: null,
    waitingFor: null,
    yielded: false,
  };
  run.tracks.boot = { ...run.tracks.boot, next: bootCount, waitingFor: null };
  run.bootReleased = true;
}

function addTotals(
  run: OperationRun,
  outcomes: readonly CallOutcome[],
  track: Track,
  endFromStart: Micros,
): void {
  const totals = run.totals;
  for (const outcome of outcomes) {
    if (!outcome.ok) continue;
    const e = outcome.effects;
    if (e.removedPages + e.reclaimedPages + e.freedPages > 0 || e.releasedHkid !== null) {
      totals.reclaimSeconds += outcome.seconds;
      // A call is counted on the path that dominates it: removal is by far the dearer.
      if (e.removedPages > 0) totals.removalSeconds += outcome.seconds;
      else totals.teardownSeconds += outcome.seconds;
    }
    totals.reclaimedPages += e.removedPages + e.reclaimedPages;
    totals.freedPages += e.freedPages;
    totals.reusedPages += e.reusedPages;
    totals.allocatedPages += e.allocatedPages;
    if (e.releasedHkid !== null && track === 'teardown' && totals.hkidReleasedAt === null) {
      totals.hkidReleasedAt = endFromStart;
    }
  }
}

function sumSeconds(outcomes: readonly CallOutcome[]): number {
  let sum = 0;
  for (const o of outcomes) sum += o.seconds;
  return sum;
}

/** Totals of a run, in virtual seconds from its start and bytes. */
export interface RunSummary {
  /** Reboot: from the first step until the new VM runs. Boot: until it runs. Terminate: until the VM is gone. */
  downtimeSeconds: number;
  /** Virtual seconds of the calls that removed, reclaimed or freed memory or released an HKID. */
  reclaimSeconds: number;
  /** Bytes taken back from TDs (Dynamic Page Removal and TEARDOWN reclaim, with metadata). */
  bytesReclaimed: number;
  /** Bytes returned to the host's free memory. */
  bytesFreed: number;
  /** Guest bytes the new VM got from memory the old one already had (no allocation). */
  bytesReused: number;
  /** Fresh host bytes allocated to guest_memfds. */
  bytesAllocated: number;
  /** Seconds the old VM kept its HKID after the operation started (0 without an old VM). */
  hkidHeldSeconds: number;
  /** From the first step to the last one's end. */
  totalSeconds: number;
}

/** The summary of a run: what every engine reports for an operation. */
export function summarize(run: OperationRun): RunSummary {
  const total = run.endsAt - run.startedAt;
  const downtime =
    run.plan.intent.action === 'terminate' || run.runEndedAt === null
      ? total
      : run.runEndedAt - run.startedAt;
  const hasOldVm = run.plan.initialBindings[OLD_VM_HANDLE] !== undefined;
  return {
    downtimeSeconds: toSeconds(downtime),
    reclaimSeconds: run.totals.reclaimSeconds,
    bytesReclaimed: pagesToBytes(run.totals.reclaimedPages),
    bytesFreed: pagesToBytes(run.totals.freedPages),
    bytesReused: pagesToBytes(run.totals.reusedPages),
    bytesAllocated: pagesToBytes(run.totals.allocatedPages),
    hkidHeldSeconds: hasOldVm ? toSeconds(run.totals.hkidReleasedAt ?? total) : 0,
    totalSeconds: toSeconds(total),
  };
}
