import {
  type CallOutcome,
  type Errno,
  type HostState,
  applyCallsInPlace,
  cloneHost,
  pagesToBytes,
  settleRelease,
} from '#tdx-sim';
import {
  type Bindings,
  type Plan,
  type PlanStep,
  type Track,
  bindResults,
  resolveStep,
} from './plan.js';

/** Errnos that mean "not now": the step waits for resources to come back, then retries. */
export const WAITABLE_ERRNOS: readonly Errno[] = ['ENOSPC', 'ENOMEM', 'EBUSY'];

/** What one step did, in virtual seconds from the start of the plan. */
export interface StepRecord {
  name: PlanStep['name'];
  track: Track;
  /** When the step first tried to run. */
  readySeconds: number;
  /** When it ran (after any wait). */
  startSeconds: number;
  endSeconds: number;
  /** The step's own cost. */
  virtualSeconds: number;
  /** Time spent waiting for an HKID or memory held by someone else. */
  waitedSeconds: number;
  calls: number;
  /** The errno that made it wait, or the one it failed with. */
  errno?: Errno;
  message?: string;
  state: 'done' | 'failed';
}

/** Totals of a plan run. */
export interface PlanSummary {
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
  /** Seconds the old VM kept its HKID after the plan started (0 without an old VM). */
  hkidHeldSeconds: number;
  /** From the first step to the last one's end. */
  totalSeconds: number;
}

/** The result of running a plan to completion in virtual time. */
export interface PlanRun {
  ok: boolean;
  state: HostState;
  /** The handles bound: after a success only the new VM's, after a failure all of them. */
  bindings: Bindings;
  timeline: StepRecord[];
  summary: PlanSummary;
  /** The step that failed and why, when `ok` is false. */
  failure?: { step: PlanStep['name']; errno: Errno; message: string };
}

interface TrackCursor {
  track: Track;
  /** Indexes into plan.steps, in order. */
  steps: number[];
  next: number;
  readyAt: number;
  /** Set while the step at `next` is waiting: when it first tried. */
  waitingSince: number | null;
  /** Set when it waits for the other track, due at the same moment, to go first. */
  yielded: boolean;
  /** Why the step at `next` waits (undefined when it does not). */
  waitErrno: Errno | undefined;
  waitMessage: string | undefined;
}

/**
 * Runs a plan on a host in pure virtual time: a discrete-event loop over its two tracks. A step
 * refused for want of an HKID or memory waits until something is given back, then retries;
 * what a step frees returns to the host when its virtual time has passed.
 */
export function runPlan(initial: HostState, plan: Plan): PlanRun {
  // The run works on its own copy, changed in place step by step: the caller's state is untouched.
  let state = cloneHost(initial);
  // Keys, not entries: a big VM's initial bindings are too many handles for a fast object, and
  // Object.entries is slow on the dictionary that holds them.
  const bindings = new Map<string, number>();
  for (const name of Object.keys(plan.initialBindings)) {
    bindings.set(name, plan.initialBindings[name] as number);
  }
  const timeline: StepRecord[] = [];
  const pending: Array<{ at: number; release: number }> = [];
  const totals = { reclaimSeconds: 0, reclaimed: 0, freed: 0, reused: 0, allocated: 0 };
  let hkidReleasedAt: number | null = null;
  const hasOldVm = plan.initialBindings['old.vm'] !== undefined;

  const cursor = (track: Track): TrackCursor => ({
    track,
    steps: plan.steps.flatMap((s, i) => (s.track === track ? [i] : [])),
    next: 0,
    readyAt: 0,
    waitingSince: null,
    yielded: false,
    waitErrno: undefined,
    waitMessage: undefined,
  });
  const teardown = cursor('teardown');
  const boot = cursor('boot');
  // The boot track starts once the handoff step (or, without one, the whole teardown) is done.
  let bootReleased = teardown.steps.length === 0;

  const settleUntil = (time: number): void => {
    pending.sort((a, b) => a.at - b.at);
    while (pending.length > 0 && (pending[0]?.at ?? Infinity) <= time) {
      const item = pending.shift();
      if (item !== undefined) state = settleRelease(state, item.release);
    }
  };

  const finish = (ok: boolean, failure?: PlanRun['failure']): PlanRun => {
    const end = Math.max(0, ...timeline.map((r) => r.endSeconds));
    settleUntil(Infinity);
    const runStep = [...timeline].reverse().find((r) => r.name === 'run' && r.state === 'done');
    const downtime =
      plan.intent.action === 'terminate' || runStep === undefined ? end : runStep.endSeconds;
    const summary: PlanSummary = {
      downtimeSeconds: downtime,
      reclaimSeconds: totals.reclaimSeconds,
      bytesReclaimed: pagesToBytes(totals.reclaimed),
      bytesFreed: pagesToBytes(totals.freed),
      bytesReused: pagesToBytes(totals.reused),
      bytesAllocated: pagesToBytes(totals.allocated),
      hkidHeldSeconds: hasOldVm ? (hkidReleasedAt ?? end) : 0,
      totalSeconds: end,
    };
    // The old VM's handles are all closed once a plan has succeeded: only the new ones are
    // returned then. A failed run returns everything, open or not.
    const result: Bindings = {};
    for (const [name, value] of bindings) if (!ok || !name.startsWith('old.')) result[name] = value;
    const run: PlanRun = { ok, state, bindings: result, timeline, summary };
    if (failure !== undefined) run.failure = failure;
    return run;
  };

  for (;;) {
    const candidates = [teardown, ...(bootReleased ? [boot] : [])].filter(
      (c) => c.next < c.steps.length,
    );
    if (candidates.length === 0) return finish(true);
    // The track that is ready first goes first; on a tie, one that yielded goes last, then the
    // teardown goes before the boot.
    const current = candidates.reduce((a, b) =>
      b.readyAt < a.readyAt || (b.readyAt === a.readyAt && a.yielded && !b.yielded) ? b : a,
    );
    current.yielded = false;
    const stepIndex = current.steps[current.next];
    const step = stepIndex === undefined ? undefined : plan.steps[stepIndex];
    if (step === undefined || stepIndex === undefined) throw new Error('track cursor out of range');
    const now = current.readyAt;
    settleUntil(now);

    const calls = resolveStep(step, bindings);
    const result = applyCallsInPlace(state, calls);
    if (result.failedAt !== null) {
      const failed = result.outcomes[result.failedAt];
      if (failed === undefined || failed.ok)
        throw new Error('a failed batch without a failed outcome');
      const other = current === teardown ? boot : teardown;
      const otherBusy = other.next < other.steps.length && (other === teardown || bootReleased);
      const nextChange = Math.min(
        ...pending.map((p) => p.at),
        ...(otherBusy ? [Math.max(other.readyAt, now)] : []),
      );
      const canWait = WAITABLE_ERRNOS.includes(failed.errno) && Number.isFinite(nextChange);
      if (canWait && nextChange >= now) {
        current.waitingSince ??= now;
        current.waitErrno = failed.errno;
        current.waitMessage = failed.message;
        // Retry once something changes; if that is the other track, due now, it goes first.
        current.readyAt = nextChange;
        current.yielded = nextChange === now;
        continue;
      }
      const since = current.waitingSince ?? now;
      timeline.push({
        name: step.name,
        track: step.track,
        readySeconds: since,
        startSeconds: now,
        endSeconds: now,
        virtualSeconds: 0,
        waitedSeconds: now - since,
        calls: calls.length,
        errno: failed.errno,
        message: failed.message,
        state: 'failed',
      });
      return finish(false, { step: step.name, errno: failed.errno, message: failed.message });
    }

    state = result.state;
    bindResults(step, result.outcomes, bindings);
    const seconds = sumSeconds(result.outcomes);
    const end = now + seconds;
    for (const outcome of result.outcomes) {
      if (!outcome.ok) continue;
      const e = outcome.effects;
      if (e.release !== null) pending.push({ at: end, release: e.release });
      if (e.removedPages + e.reclaimedPages + e.freedPages > 0 || e.releasedHkid !== null) {
        totals.reclaimSeconds += outcome.seconds;
      }
      totals.reclaimed += e.removedPages + e.reclaimedPages;
      totals.freed += e.freedPages;
      totals.reused += e.reusedPages;
      totals.allocated += e.allocatedPages;
      if (e.releasedHkid !== null && hasOldVm && hkidReleasedAt === null && current === teardown) {
        hkidReleasedAt = end;
      }
    }
    const record: StepRecord = {
      name: step.name,
      track: step.track,
      readySeconds: current.waitingSince ?? now,
      startSeconds: now,
      endSeconds: end,
      virtualSeconds: seconds,
      waitedSeconds: now - (current.waitingSince ?? now),
      calls: calls.length,
      state: 'done',
    };
    if (current.waitErrno !== undefined) {
      record.errno = current.waitErrno;
      if (current.waitMessage !== undefined) record.message = current.waitMessage;
    }
    timeline.push(record);
    current.next += 1;
    current.readyAt = end;
    current.waitingSince = null;
    // Cleared, not deleted: a deleted field would turn the cursor into a slow dictionary object.
    current.waitErrno = undefined;
    current.waitMessage = undefined;

    if (current === teardown && !bootReleased) {
      const handoffDone =
        plan.handoff === null ? teardown.next >= teardown.steps.length : stepIndex >= plan.handoff;
      if (handoffDone) {
        bootReleased = true;
        boot.readyAt = end;
      }
    }
  }
}

function sumSeconds(outcomes: readonly CallOutcome[]): number {
  return outcomes.reduce((sum, o) => sum + o.seconds, 0);
}
