import { DelayedError, type Job, type Processor, Worker } from 'bullmq';
import type { FleetIndex, FleetStore } from '#store';
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { BatchRunner } from './batch-runner.js';
import { IndexPruner } from './index-pruner.js';
import type { FleetService } from './fleet.service.js';
import {
  BATCHES_QUEUE,
  type BatchJobData,
  OPERATIONS_QUEUE,
  type OperationJobData,
  batchJobSchema,
  operationJobSchema,
  parseJobData,
} from './job-payloads.js';
import { type HostCommit, OperationRunner, type RunnerOptions } from './operation-runner.js';
import type { FleetQueues } from './queues.js';

/** How a worker process runs jobs. */
export interface WorkerOptions extends RunnerOptions {
  redisUrl: string;
  /** BullMQ key prefix (with its hash tag). */
  queuePrefix: string;
  /** Operations run at once by this process. */
  concurrency: number;
  /** Fleet-wide cap on running operations (BullMQ global concurrency); null for none. */
  globalConcurrency: number | null;
  /** A job's lock: a worker that dies holding it is noticed after about this long. */
  lockDurationMs: number;
}

/**
 * The job and VM indexes are each looked at a page per reconcile (every 30 s): up to about 2.9
 * million entries a day. An entry is dropped after its job (or VM) has been missing for 10
 * minutes (see IndexPruner).
 */
const INDEX_PRUNING = { pageSize: 1000, graceMs: 10 * 60_000 };

/** Hooks for metrics: called as jobs commit, start, end, retry and stall. */
export interface WorkerHooks {
  /** A commit of this process's workers: its events and the operations it finished. */
  committed?(commit: HostCommit): void;
  /** A worker of this process took a job that waited `waitedSeconds` in its queue. */
  jobStarted?(queue: string, waitedSeconds: number | null): void;
  /** An attempt at a job ended (done, put back or failed) after `ranSeconds`. */
  jobEnded?(queue: string, ranSeconds: number): void;
  jobRetried?(queue: string): void;
  jobStalled?(queue: string): void;
}

/**
 * The BullMQ workers of a process, one per queue, each queue with exactly one handler (a
 * record typed by queue name, so a missing or doubled handler does not compile). Started and
 * stopped by the process's lifecycle; a stopping process hands its running jobs back.
 */
export class FleetWorkers {
  private readonly workers: Worker[] = [];
  private readonly connections: Redis[] = [];
  private readonly abort = new AbortController();
  private readonly operationRunner: OperationRunner;
  private readonly batchRunner: BatchRunner;
  private readonly indexPruners = new Map<FleetIndex, IndexPruner>();
  private pruning = false;
  private reconcileTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly store: FleetStore,
    private readonly queues: FleetQueues,
    service: FleetService,
    private readonly options: WorkerOptions,
    private readonly log: Logger,
    private readonly hooks: WorkerHooks = {},
  ) {
    this.operationRunner = new OperationRunner(store, options, undefined, (commit) =>
      this.hooks.committed?.(commit),
    );
    this.batchRunner = new BatchRunner(store, service);
    for (const index of ['jobs', 'vms'] as const) {
      this.indexPruners.set(index, new IndexPruner(store, index, INDEX_PRUNING));
    }
  }

  /** True while every worker is running. */
  get running(): boolean {
    return this.workers.length > 0 && this.workers.every((w) => w.isRunning());
  }

  async start(): Promise<void> {
    const handlers: Record<typeof OPERATIONS_QUEUE | typeof BATCHES_QUEUE, Processor> = {
      [OPERATIONS_QUEUE]: (job: Job, token?: string) =>
        this.timed(OPERATIONS_QUEUE, job, () => this.processOperation(job, token)),
      [BATCHES_QUEUE]: (job: Job, token?: string) =>
        this.timed(BATCHES_QUEUE, job, () => this.processBatch(job, token)),
    };
    for (const [name, processor] of Object.entries(handlers)) {
      // Workers block on Redis: each gets its own connection, which must retry forever.
      const connection = new Redis(this.options.redisUrl, { maxRetriesPerRequest: null });
      this.connections.push(connection);
      const worker = new Worker(name, processor, {
        connection,
        prefix: this.options.queuePrefix,
        concurrency: name === OPERATIONS_QUEUE ? this.options.concurrency : 4,
        lockDuration: this.options.lockDurationMs,
        stalledInterval: Math.max(1000, Math.floor(this.options.lockDurationMs / 2)),
        // Resuming a stalled operation is safe (it continues where its document says), so a
        // job is never failed for having stalled.
        maxStalledCount: 1_000_000,
        autorun: false,
      });
      worker.on('error', (error) => this.log.error({ err: error, queue: name }, 'worker error'));
      worker.on('failed', (job, error) => {
        if (error instanceof DelayedError) return;
        const willRetry = job !== undefined && job.attemptsMade < (job.opts.attempts ?? 1);
        if (willRetry) this.hooks.jobRetried?.(name);
        this.log.error(
          { err: error, queue: name, jobId: job?.id, attempts: job?.attemptsMade, willRetry },
          'job attempt failed',
        );
      });
      worker.on('stalled', (jobId) => {
        this.hooks.jobStalled?.(name);
        this.log.warn({ queue: name, jobId }, 'job stalled: its worker stopped; another takes it');
      });
      this.workers.push(worker);
    }
    if (this.options.globalConcurrency !== null) {
      await this.queues.operations.setGlobalConcurrency(this.options.globalConcurrency);
    }
    for (const worker of this.workers) void worker.run();
    await Promise.all(this.workers.map((w) => w.waitUntilReady()));
    await this.reconcile();
    this.reconcileTimer = setInterval(() => {
      this.reconcile().catch((error: unknown) => this.log.warn({ err: error }, 'reconcile failed'));
      void this.pruneIndexes();
    }, 30_000);
    this.reconcileTimer.unref();
  }

  /** Stops taking jobs, hands running ones back at their next step boundary, closes. */
  async stop(): Promise<void> {
    if (this.reconcileTimer !== undefined) clearInterval(this.reconcileTimer);
    this.abort.abort();
    await Promise.all(this.workers.map((w) => w.close()));
    await Promise.all(this.connections.map((c) => c.quit().catch(() => c.disconnect())));
    this.workers.length = 0;
  }

  /**
   * Gives every queued or running operation a job: one whose job was lost between the commit
   * and the add (a crash) is queued again.
   */
  async reconcile(): Promise<number> {
    let requeued = 0;
    for (const doc of await this.store.listHosts()) {
      for (const op of Object.values(doc.ops)) {
        if (await this.queues.ensureOperationJob({ opId: op.id, hostId: doc.id })) {
          requeued += 1;
          this.log.warn({ jobId: op.id, hostId: doc.id }, 'operation had no job; queued it again');
        }
      }
    }
    return requeued;
  }

  /** One step of each index's pruning, unless the last ones are still running. */
  private async pruneIndexes(): Promise<void> {
    if (this.pruning) return;
    this.pruning = true;
    try {
      for (const [index, pruner] of this.indexPruners) {
        const dropped = await pruner.step();
        if (dropped > 0) this.log.info({ dropped, index }, 'dropped index entries of what is gone');
      }
    } catch (error) {
      this.log.warn({ err: error }, 'index pruning failed');
    } finally {
      this.pruning = false;
    }
  }

  /** Runs a processor, telling the hooks how long the job queued and how long it ran. */
  private async timed<T>(queue: string, job: Job, process: () => Promise<T>): Promise<T> {
    const started = Date.now();
    // Only the job's first start measures the queue wait: a job put back (host busy, handed
    // back at shutdown) or retried starts again later, and was not waiting in between.
    const waited =
      job.attemptsStarted <= 1 && job.processedOn !== undefined
        ? (job.processedOn - job.timestamp) / 1000
        : null;
    this.hooks.jobStarted?.(queue, waited);
    try {
      return await process();
    } finally {
      this.hooks.jobEnded?.(queue, (Date.now() - started) / 1000);
    }
  }

  private async processOperation(job: Job, token: string | undefined): Promise<unknown> {
    const data: OperationJobData = parseJobData(
      operationJobSchema,
      OPERATIONS_QUEUE,
      job.id,
      job.data,
    );
    let reported = -1;
    const outcome = await this.operationRunner.run(data.opId, data.hostId, this.abort.signal, {
      committed: async (advance) => {
        const counted = advance.op.steps.filter((s) => s.state !== 'skipped');
        const done = counted.filter((s) => s.state === 'done' || s.state === 'failed').length;
        const progress = counted.length === 0 ? 100 : Math.round((done / counted.length) * 100);
        // Written when it changes: the host's other jobs may have moved the operation.
        if (progress === reported) return;
        reported = progress;
        // The commit published the events and told the metrics. Then the queue's progress (a
        // finished job's completion says it all).
        if (advance.finished === null) await job.updateProgress(progress);
      },
    });
    switch (outcome.kind) {
      case 'finished':
        return { state: outcome.state };
      case 'handed-back':
        return this.putBack(job, token, Date.now());
    }
  }

  private async processBatch(job: Job, token: string | undefined): Promise<unknown> {
    const data: BatchJobData = parseJobData(batchJobSchema, BATCHES_QUEUE, job.id, job.data);
    const outcome = await this.batchRunner.run(data.batchId, this.abort.signal);
    if (outcome.kind === 'handed-back') return this.putBack(job, token, Date.now());
    return { state: 'done' };
  }

  /** Puts a job back in the queue (to run at `atMs`) without counting an attempt. */
  private async putBack(job: Job, token: string | undefined, atMs: number): Promise<never> {
    await job.moveToDelayed(atMs, token);
    throw new DelayedError();
  }
}
