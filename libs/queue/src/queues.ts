import { Queue, type JobType } from 'bullmq';
import type { Redis } from 'ioredis';
import {
  BATCHES_QUEUE,
  type BatchJobData,
  OPERATIONS_QUEUE,
  type OperationJobData,
} from './job-payloads.js';

/** Jobs counted by state, as BullMQ reports them. */
export type QueueCounts = Record<string, number>;

const COUNTED_STATES: JobType[] = [
  'waiting',
  'active',
  'delayed',
  'completed',
  'failed',
  'prioritized',
  'waiting-children',
];

/**
 * The fleet's BullMQ queues: the only place that adds, removes or counts jobs. Job ids are the
 * operation and batch ids, so adding twice is harmless.
 */
export class FleetQueues {
  readonly operations: Queue<OperationJobData>;
  readonly batches: Queue<BatchJobData>;

  constructor(connection: Redis, prefix: string) {
    const defaultJobOptions = {
      // A job resumes from its recorded position, so retrying after an unexpected error is safe.
      attempts: 20,
      backoff: { type: 'exponential', delay: 500 },
      removeOnComplete: { age: 24 * 3600, count: 10_000 },
      removeOnFail: { age: 7 * 24 * 3600 },
    };
    this.operations = new Queue(OPERATIONS_QUEUE, { connection, prefix, defaultJobOptions });
    this.batches = new Queue(BATCHES_QUEUE, { connection, prefix, defaultJobOptions });
  }

  async addOperation(data: OperationJobData): Promise<void> {
    await this.operations.add('operation', data, { jobId: data.opId });
  }

  /** Adds several operations' jobs in one round trip, in the given order. */
  async addOperations(data: readonly OperationJobData[]): Promise<void> {
    if (data.length === 0) return;
    await this.operations.addBulk(
      data.map((d) => ({ name: 'operation', data: d, opts: { jobId: d.opId } })),
    );
  }

  async addBatch(data: BatchJobData): Promise<void> {
    await this.batches.add('batch', data, { jobId: data.batchId });
  }

  /** Removes a job that no worker has taken; false when it is running (or gone). */
  async removeOperation(opId: string): Promise<boolean> {
    const job = await this.operations.getJob(opId);
    if (job === undefined) return false;
    const state = await job.getState();
    if (state === 'active') return false;
    try {
      await job.remove();
      return true;
    } catch {
      return false; // taken by a worker in between
    }
  }

  /**
   * Makes sure an operation has a job that will run it: re-adds one whose job was lost (the
   * process stopped between the commit and the add) or ended while the operation had not.
   */
  async ensureOperationJob(data: OperationJobData): Promise<boolean> {
    const job = await this.operations.getJob(data.opId);
    if (job !== undefined) {
      const state = await job.getState();
      if (state !== 'completed' && state !== 'failed' && state !== 'unknown') return false;
      await job.remove();
    }
    await this.addOperation(data);
    return true;
  }

  async counts(): Promise<{ operations: QueueCounts; batches: QueueCounts }> {
    const [operations, batches] = await Promise.all([
      this.operations.getJobCounts(...COUNTED_STATES),
      this.batches.getJobCounts(...COUNTED_STATES),
    ]);
    return { operations, batches };
  }

  async close(): Promise<void> {
    await Promise.all([this.operations.close(), this.batches.close()]);
  }
}
