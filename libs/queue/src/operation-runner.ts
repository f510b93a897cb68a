import { setTimeout as sleep } from 'node:timers/promises';
import { type Advance, type ExecutorOptions, type JobState, advanceOperation } from '#fleet';
import type { FleetStore } from '#store';

/** Runs tasks one at a time per key, in this process (queued in call order). */
export class KeyedLock {
  private readonly tails = new Map<string, Promise<void>>();

  async run<T>(key: string, task: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    let release = (): void => undefined;
    const current = new Promise<void>((resolve) => (release = resolve));
    const tail = previous.then(() => current);
    this.tails.set(key, tail);
    try {
      await previous;
      return await task();
    } finally {
      release();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    }
  }
}

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
  private readonly hostLock = new KeyedLock();

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
      const step = await this.hostLock.run(hostId, () => this.advanceOnce(opId, hostId));
      if (step.kind === 'finished') {
        if (step.commit !== null) await observer?.committed(step.commit);
        return { kind: 'finished', state: step.state };
      }
      if (step.kind === 'deferred') return step;
      if (step.kind === 'conflict') continue; // another process changed the host: read it again
      if (step.commit !== null) await observer?.committed(step.commit);
      if (!(await this.sleepUntil(step.untilMs, signal))) return { kind: 'handed-back' };
    }
  }

  /**
   * One read, advance and commit of the operation. Runs under the process's lock of the host, so
   * operations of one host in this process take turns instead of losing compare-and-sets to each
   * other; other processes still can, and then this reads again.
   */
  private async advanceOnce(
    opId: string,
    hostId: string,
  ): Promise<
    | Extract<RunOutcome, { kind: 'deferred' }>
    | { kind: 'finished'; state: JobState; commit: Extract<Advance, { kind: 'commit' }> | null }
    | { kind: 'conflict' }
    | { kind: 'sleep'; untilMs: number; commit: Extract<Advance, { kind: 'commit' }> | null }
  > {
    const doc = await this.store.getHost(hostId);
    const op = doc?.ops[opId];
    if (doc === null || op === undefined) {
      // Finished (or cancelled while queued) by an earlier run or by the API.
      const stored = await this.store.getJob(opId);
      return { kind: 'finished', state: stored?.state ?? 'cancelled', commit: null };
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
      return { kind: 'sleep', untilMs: advance.untilMs, commit: null };
    }
    const committed = await this.store.commit(
      { ...advance.doc, version: doc.version },
      advance.finished,
    );
    if (committed === null) return { kind: 'conflict' };
    if (advance.finished !== null) {
      return { kind: 'finished', state: advance.finished.state, commit: advance };
    }
    return { kind: 'sleep', untilMs: advance.wakeAtMs, commit: advance };
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
