import { type Errno, type HostState, cloneHost } from '#tdx-sim';
import {
  type EngineHost,
  type RunSummary,
  advanceInPlace,
  settleDue,
  startRun,
  summarize,
  toMicros,
  toSeconds,
} from './engine.js';
import type { Bindings, Plan, PlanStep, Track } from './plan.js';

/** What one step did, in virtual seconds from the start of the plan. */
export interface TimelineEntry {
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

/** Totals of a plan run: the same for every engine that runs an operation. */
export type PlanSummary = RunSummary;

/** The result of running a plan to completion in virtual time. */
export interface PlanRun {
  ok: boolean;
  state: HostState;
  /** The handles bound: after a success only the new VM's, after a failure all of them. */
  bindings: Bindings;
  /** The steps that ran, in the order they ran. */
  timeline: TimelineEntry[];
  summary: PlanSummary;
  /** The step that failed and why, when `ok` is false. */
  failure?: { step: PlanStep['name']; errno: Errno; message: string };
}

/**
 * Runs a plan alone on a host in pure virtual time: the operation engine advanced from one
 * due time to the next until it ends. A step refused for want of an HKID or memory waits until
 * something is given back, then retries; what a step frees returns to the host when its virtual
 * time has passed. A wait with nothing to wait for fails the plan.
 */
export function runPlan(initial: HostState, plan: Plan): PlanRun {
  // The run works on its own copy, changed in place step by step: the caller's state is untouched.
  const host: EngineHost = { sim: cloneHost(initial), releases: [], hkidLockFreeAt: 0 };
  const run = startRun(plan, 0);
  const order: number[] = [];
  let at = 0;
  for (;;) {
    const { status, events } = advanceInPlace(run, host, at, {
      whenStuck: 'fail',
      onFailure: 'stop',
    });
    for (const event of events) if (event.type === 'step') order.push(event.step);
    if (status.kind !== 'due') break;
    at = status.at;
  }
  settleDue(host, Infinity);
  const failedIndex = run.steps.findIndex((s) => s.state === 'failed');
  if (failedIndex !== -1) order.push(failedIndex);
  const timeline = order.map((index): TimelineEntry => {
    const record = run.steps[index];
    const step = plan.steps[index];
    if (record === undefined || step === undefined || record.virtualStart === null) {
      throw new Error('a step ran without its record');
    }
    // In whole microseconds, as the engine counts: the sums are exact.
    const start = toMicros(record.virtualStart);
    const entry: TimelineEntry = {
      name: record.name,
      track: record.track,
      readySeconds: toSeconds(start - toMicros(record.waitedSeconds)),
      startSeconds: record.virtualStart,
      endSeconds: toSeconds(start + toMicros(record.virtualSeconds)),
      virtualSeconds: record.virtualSeconds,
      waitedSeconds: record.waitedSeconds,
      calls: step.calls.length,
      state: record.state === 'failed' ? 'failed' : 'done',
    };
    if (record.errno !== undefined) entry.errno = record.errno;
    if (record.message !== undefined) entry.message = record.message;
    return entry;
  });
  const ok = run.cleanupReason === null;
  // The old VM's handles are all closed once a plan has succeeded: only the new ones (all that
  // steps bind; the old come with the plan) are returned then. A failed run returns everything.
  const bindings: Bindings = ok ? run.bindings : { ...plan.initialBindings, ...run.bindings };
  const result: PlanRun = { ok, state: host.sim, bindings, timeline, summary: summarize(run) };
  const failed = run.steps[failedIndex];
  if (!ok && failed?.errno !== undefined) {
    result.failure = { step: failed.name, errno: failed.errno, message: failed.message ?? '' };
  }
  return result;
}
