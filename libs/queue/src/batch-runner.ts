import { setTimeout as sleep } from 'node:timers/promises';
import { type BatchRecord, FleetError, memberFinished, submissionsAllowed } from '#fleet';
import type { FleetStore } from '#store';
import type { FleetService } from './fleet.service.js';

/** How a batch run ended for the queue. */
export type BatchOutcome = { kind: 'done' } | { kind: 'handed-back' };

const POLL_MS = 100;

/**
 * Drives one batch: submits its members' operations within its concurrency and rate, follows
 * them to their end, and records each outcome. Resumable: each member's submission carries an
 * Idempotency-Key derived from the batch, so a batch picked up again never submits twice.
 */
export class BatchRunner {
  constructor(
    private readonly store: FleetStore,
    private readonly service: FleetService,
    private readonly now: () => number = () => Date.now(),
  ) {}

  async run(batchId: string, signal: AbortSignal): Promise<BatchOutcome> {
    for (;;) {
      const batch = await this.store.getBatch(batchId);
      if (batch === null || batch.state === 'done') return { kind: 'done' };
      const { batch: updated, changed } = await this.step(batch);
      // Most rounds of a long batch change nothing: the record is written only when one does.
      if (changed) await this.store.saveBatch(updated);
      if (updated.state === 'done') return { kind: 'done' };
      try {
        await sleep(POLL_MS, undefined, { signal });
      } catch {
        return { kind: 'handed-back' };
      }
    }
  }

  /** One round: refresh the outcome of submitted members, then submit what is allowed. */
  private async step(batch: BatchRecord): Promise<{ batch: BatchRecord; changed: boolean }> {
    const members = batch.members.map((m) => ({ ...m }));
    let changed = false;
    for (const member of members) {
      if (member.jobId === null || memberFinished(member)) continue;
      const job = await this.store.getJob(member.jobId);
      if (job === null || job.state === member.state) continue;
      changed = true;
      member.state = job.state;
      if (job.error !== null) member.error = { code: job.error.code, message: job.error.message };
    }
    const now = this.now();
    let allowed = submissionsAllowed({ ...batch, members }, now);
    for (const member of members) {
      if (allowed <= 0) break;
      if (member.state !== 'pending') continue;
      allowed -= 1;
      changed = true;
      member.submittedAtMs = now;
      try {
        const { job } = await this.service.submit(
          member.vmId,
          batch.spec.action,
          batch.spec.strategy,
          { key: `${batch.id}:${member.vmId}`, fingerprint: `batch ${batch.id} ${member.vmId}` },
          batch.id,
        );
        member.jobId = job.id;
        member.state = job.state;
      } catch (error) {
        if (!(error instanceof FleetError)) throw error;
        member.state = 'rejected';
        member.error = { code: error.code, message: error.message };
      }
    }
    const done = members.every(memberFinished);
    return {
      batch: {
        ...batch,
        members,
        state: done ? 'done' : 'running',
        finishedAtMs: done ? now : null,
      },
      changed: changed || done,
    };
  }
}
