import { setTimeout as sleep } from 'node:timers/promises';
import { type Advance, type ExecutorOptions, type JobState, advanceOperation } from '#fleet';
import type { FleetStore } from '#store';

/** How operations run in this process. */
export interface RunnerOptions {
  /** Virtual seconds per real second; 0 = no waiting. */
  timeScale: number;
  hostConcurrency: number;
  /** How long a step may wait for an HKID or memory before its operation fails. */
  stepWaitTimeoutMs: number;
  /** How often a waiting step retries when nothing it knows of changes sooner. */
  pollMs: number;
}

/** How a run ended for the queue. */
export type RunOutcome =
  | { kind: 'finished'; state: JobState }
  /** The host is at its concurrency limit: put the job back until `untilMs`. */
  | { kind: 'deferred'; untilMs: number }
  /** The process is stopping: put the job back at once for another worker. */
  | { kind: 'handed-back' };

/** Called after every committed change: progress for the queue, events for the API. */
export interface RunObserver {
  committed(advance: Extract<Advance, { kind: 'commit' }>): Promise<void>;
}

/**
 * Drives one operation to its end: reads the host's document, asks the pure executor what to
 * do, commits with compare-and-set, and sleeps until the next step is due. Holds no state
 * between steps: any worker can pick the operation up where the document says it is.
 */
export class OperationRunner {
  constructor(
    private readonly store: FleetStore,
    private readonly options: RunnerOptions,
    private readonly now: () => number = () => Date.now(),
  ) {}

  async run(
    opId: string,
    hostId: string,
    signal: AbortSignal,
    observer?: RunObserver,
  ): Promise<RunOutcome> {
    for (;;) {
      const doc = await this.store.getHost(hostId);
      const op = doc?.ops[opId];
      if (doc === null || op === undefined) {
        // Finished (or cancelled while queued) by an earlier run or by the API.
        const stored = await this.store.getJob(opId);
        return { kind: 'finished', state: stored?.state ?? 'cancelled' };
      }
      const executorOptions: ExecutorOptions = {
        nowMs: this.now(),
        timeScale: this.options.timeScale,
        hostConcurrency: this.options.hostConcurrency,
        maxWaitMs: this.options.stepWaitTimeoutMs,
        pollMs: this.options.pollMs,
      };
      const advance = advanceOperation(doc, opId, executorOptions);
      if (advance.kind === 'wait') {
        if (advance.reason === 'host_busy') return { kind: 'deferred', untilMs: advance.untilMs };
        if (!(await this.sleepUntil(advance.untilMs, signal))) return { kind: 'handed-back' };
        continue;
      }
      const committed = await this.store.commit(
        { ...advance.doc, version: doc.version },
        advance.finished,
      );
      if (committed === null) continue; // another writer changed the host: read it again
      await observer?.committed(advance);
      if (advance.finished !== null) return { kind: 'finished', state: advance.finished.state };
      if (!(await this.sleepUntil(advance.wakeAtMs, signal))) return { kind: 'handed-back' };
    }
  }

  /** Sleeps until `untilMs` (at most a second at a time, to notice cancels); false if aborted. */
  private async sleepUntil(untilMs: number, signal: AbortSignal): Promise<boolean> {
    const delay = Math.min(Math.max(0, untilMs - this.now()), 1000);
    if (signal.aborted) return false;
    if (delay === 0) return true;
    try {
      await sleep(delay, undefined, { signal });
      return true;
    } catch {
      return false;
    }
  }
}
