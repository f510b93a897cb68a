import { setTimeout as sleep } from 'node:timers/promises';
import {
  type FleetEvent,
  type HostDocument,
  type JobState,
  type OperationRecord,
  advanceHost,
} from '#fleet';
import type { FleetStore } from '#store';

/** An operation's record as a commit left it, and whether that commit finished it. */
export interface Committed {
  op: OperationRecord;
  finished: OperationRecord | null;
}

/** One commit of a host: every event it published and every operation it finished. */
export interface HostCommit {
  hostId: string;
  events: readonly FleetEvent[];
  finished: readonly OperationRecord[];
}

/** What one advance of an operation's host came to for it. */
type StepResult =
  | { kind: 'finished'; state: JobState; commit: Committed | null }
  | { kind: 'conflict' }
  | { kind: 'sleep'; untilMs: number; commit: Committed | null };

/** Finished operations a runner remembers (a few hundred kilobytes). */
const FINISHED_HERE_LIMIT = 10_000;

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
  /** The process is stopping: put the job back at once for another worker. */
  | { kind: 'handed-back' };

/** Called after every commit that changed a job's operation: its progress for the queue. */
export interface RunObserver {
  committed(advance: Committed): Promise<void>;
}

/**
 * Drives one operation to its end: reads the host's document, asks the pure executor what to
 * do, commits with compare-and-set, and sleeps until the next step is due. Holds no state
 * between steps: any worker can pick the operation up where the document says it is.
 */
export class OperationRunner {
  /** Operations waiting for the next commit of their host, by host. */
  private readonly pending = new Map<
    string,
    Array<{ opId: string; resolve: (r: StepResult) => void; reject: (e: unknown) => void }>
  >();
  /** Hosts whose commits are being drained. */
  private readonly draining = new Set<string>();
  /**
   * Operations that commits of this process finished, and how: a commit finishes every operation
   * of its host that ends, and their jobs (often in this process) then need no read to know.
   * The oldest are forgotten past {@link FINISHED_HERE_LIMIT}; the store still has them.
   */
  private readonly finishedHere = new Map<string, JobState>();

  constructor(
    private readonly store: FleetStore,
    private readonly options: RunnerOptions,
    private readonly now: () => number = () => Date.now(),
    /** Told of each commit once (the metrics), whichever jobs it moved. */
    private readonly onCommit: (commit: HostCommit) => void = () => undefined,
  ) {}

  async run(
    opId: string,
    hostId: string,
    signal: AbortSignal,
    observer?: RunObserver,
  ): Promise<RunOutcome> {
    for (;;) {
      const ended = this.finishedHere.get(opId);
      if (ended !== undefined) return { kind: 'finished', state: ended };
      const step = await this.advanceOnce(opId, hostId);
      if (step.kind === 'finished') {
        if (step.commit !== null) await observer?.committed(step.commit);
        return { kind: 'finished', state: step.state };
      }
      if (step.kind === 'conflict') continue; // another process changed the host: read it again
      if (step.commit !== null) await observer?.committed(step.commit);
      if (!(await this.sleepUntil(step.untilMs, signal))) return { kind: 'handed-back' };
    }
  }

  /**
   * One read, advance and commit of the operation. Operations of one host in this process are
   * advanced together: whoever asks before a commit of that host starts, or while one is under
   * way, joins it or the next one, which reads the document once, advances each operation in
   * turn and commits them all with one compare-and-set. They no longer lose compare-and-sets to
   * each other; other processes still can, and then each of them reads again.
   */
  private advanceOnce(opId: string, hostId: string): Promise<StepResult> {
    return new Promise<StepResult>((resolve, reject) => {
      const waiting = this.pending.get(hostId) ?? [];
      waiting.push({ opId, resolve, reject });
      this.pending.set(hostId, waiting);
      if (!this.draining.has(hostId)) {
        this.draining.add(hostId);
        // The first commit waits one turn of the event loop, so that jobs of this host that the
        // queue hands over meanwhile join it: in a reboot storm, batches about twice as large
        // (half the commits, each with one copy of the simulated host) for well under a
        // millisecond of delay.
        setImmediate(() => void this.drain(hostId));
      }
    });
  }

  /** Commits the host's waiting operations, batch after batch, until none is left. */
  private async drain(hostId: string): Promise<void> {
    try {
      for (;;) {
        const batch = this.pending.get(hostId);
        if (batch === undefined || batch.length === 0) break;
        this.pending.delete(hostId);
        try {
          const results = await this.advanceBatch(
            hostId,
            batch.map((b) => b.opId),
          );
          batch.forEach((b, i) => {
            const result = results[i];
            if (result === undefined) b.reject(new Error(`no result for operation ${b.opId}`));
            else b.resolve(result);
          });
        } catch (error) {
          for (const b of batch) b.reject(error);
        }
      }
    } finally {
      this.draining.delete(hostId);
    }
  }

  private async advanceBatch(hostId: string, opIds: readonly string[]): Promise<StepResult[]> {
    // Operations a commit of this process finished while they waited to join: nothing to read.
    const ended = opIds.map((id) => this.finishedHere.get(id));
    if (ended.every((state): state is JobState => state !== undefined)) {
      return ended.map((state) => ({ kind: 'finished', state, commit: null }));
    }
    // First on the document this process already holds, with no round trip; when it is stale the
    // compare-and-set refuses and the batch runs again on a fresh read.
    const cached = this.store.cachedHost(hostId);
    if (cached !== null) {
      const results = await this.advanceOn(cached, opIds, true);
      if (results !== null) return results;
    }
    const doc = await this.store.getHost(hostId);
    return (await this.advanceOn(doc, opIds, false)) ?? [];
  }

  /**
   * Advances the host on `doc` (every operation on it, whichever job asked) and commits the
   * change; then says what it came to for each operation in `opIds`. `optimistic` (a document
   * that may be stale): gives up (null) rather than find an operation missing or lose the
   * compare-and-set, since those need a fresh read.
   */
  private async advanceOn(
    doc: HostDocument | null,
    opIds: readonly string[],
    optimistic: boolean,
  ): Promise<StepResult[] | null> {
    const nowMs = this.now();
    if (doc === null) {
      // No such host (any more): each operation is looked up where finished ones are kept.
      if (optimistic) return null;
      return this.lookUpFinished(
        opIds.map(() => null),
        opIds,
      );
    }
    const unknown = (id: string): boolean =>
      doc.ops[id] === undefined && !this.finishedHere.has(id);
    if (optimistic && opIds.some(unknown)) return null;
    const advance = advanceHost(doc, {
      nowMs,
      timeScale: this.options.timeScale,
      hostConcurrency: this.options.hostConcurrency,
      maxWaitMs: this.options.stepWaitTimeoutMs,
      pollMs: this.options.pollMs,
    });
    if (advance.changed) {
      const committed = await this.store.commitMany(
        { ...advance.doc, version: doc.version },
        advance.finished,
        advance.events,
      );
      if (committed === null) {
        if (optimistic) return null;
        // Another process changed the host: read it again.
        return opIds.map(() => ({ kind: 'conflict' }));
      }
      this.onCommit({ hostId: doc.id, events: advance.events, finished: advance.finished });
      for (const op of advance.finished) this.rememberFinished(op.id, op.state);
    }
    const wakeAtMs = advance.wakeAtMs ?? nowMs + this.options.pollMs;
    const results = opIds.map((opId): StepResult | null => {
      if (doc.ops[opId] === undefined) return null; // finished elsewhere: looked up below
      const finished = advance.finished.find((op) => op.id === opId) ?? null;
      const op = finished ?? advance.doc.ops[opId];
      if (op === undefined) return null;
      // Another job of the host may have moved this operation: its job hears of it all the same.
      const commit = { op, finished };
      if (finished !== null) return { kind: 'finished', state: finished.state, commit };
      return { kind: 'sleep', untilMs: wakeAtMs, commit };
    });
    return this.lookUpFinished(results, opIds);
  }

  private rememberFinished(opId: string, state: JobState): void {
    this.finishedHere.set(opId, state);
    if (this.finishedHere.size > FINISHED_HERE_LIMIT) {
      const oldest = this.finishedHere.keys().next();
      if (oldest.done !== true) this.finishedHere.delete(oldest.value);
    }
  }

  /** Fills in the operations that were no longer in the document with their stored end. */
  private async lookUpFinished(
    results: ReadonlyArray<StepResult | null>,
    opIds: readonly string[],
  ): Promise<StepResult[]> {
    return Promise.all(
      results.map(async (result, i) => {
        if (result !== null) return result;
        const ended = this.finishedHere.get(opIds[i] ?? '');
        if (ended !== undefined) return { kind: 'finished' as const, state: ended, commit: null };
        const stored = await this.store.getJob(opIds[i] ?? '');
        return { kind: 'finished' as const, state: stored?.state ?? 'cancelled', commit: null };
      }),
    );
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
