import { setTimeout as sleep } from 'node:timers/promises';
import { type BatchRecord, memberFinished, submissionsAllowed } from '#fleet';
import type { FleetStore } from '#store';
import type { FleetService, SubmitOutcome } from './fleet.service.js';

/** How a batch run ended for the queue. */
export type BatchOutcome = { kind: 'done' } | { kind: 'handed-back' };

const POLL_MS = 100;

/**
 * Drives one batch: submits its members' operations within its concurrency and rate (those of
 * a round together, so that a host's members arrive there at once, in the batch's order),
 * follows them to their end, and records each outcome. Resumable: each member's submission
 * carries an Idempotency-Key derived from the batch, so a batch picked up again never submits
 * twice.
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
    const allowed = submissionsAllowed({ ...batch, members }, now);
    const chosen = members.filter((m) => m.state === 'pending').slice(0, allowed);
    if (chosen.length > 0) {
      changed = true;
      // Submitted together: the members on one host arrive there at once, in the batch's order.
      const outcomes = await this.service.submitMany(
        chosen.map((member) => ({
          vmId: member.vmId,
          action: batch.spec.action,
          strategy: batch.spec.strategy,
          idempotency: {
            key: `${batch.id}:${member.vmId}`,
            fingerprint: `batch ${batch.id} ${member.vmId}`,
          },
          batchId: batch.id,
        })),
      );
      chosen.forEach((member, i) => {
        const outcome = outcomes[i] as SubmitOutcome;
        member.submittedAtMs = now;
        if (outcome.ok) {
          // When its host's commit made the job (hosts are committed one after another).
          member.submittedAtMs = Date.parse(outcome.job.createdAt);
          member.jobId = outcome.job.id;
          member.state = outcome.job.state;
        } else {
          member.state = 'rejected';
          member.error = { code: outcome.error.code, message: outcome.error.message };
        }
      });
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
