import { setTimeout as sleep } from 'node:timers/promises';
import { ExperimentError, type PhaseRequest } from '#experiments';
import { type DaemonBatch, type DaemonClient } from './daemon-client.js';

// Requests the phase driver issues at one instant go to the daemon as one batch (one per action
// and strategy), so that those on one host are committed there together, in the driver's order,
// and arrive at the same time, as offline. A single request stays a single submission.

/** What became of one request submitted in a batch. */
export type MemberSubmission =
  | { kind: 'job'; jobId: string; sentMs: number }
  | { kind: 'refused'; code: string; sentMs: number };

/** The first poll of a new batch comes this soon; the next ones back off to the ceiling. */
const FIRST_POLL_MS = 5;
const POLL_CEILING_MS = 100;

/**
 * The requests of one instant in submissions: those of one action and strategy together, in the
 * driver's order. A VM asked twice (which the daemon refuses as busy) goes in a later group, as a
 * batch lists each VM once.
 */
export function submissionGroups(requests: readonly PhaseRequest[]): PhaseRequest[][] {
  const groups: PhaseRequest[][] = [];
  for (const request of requests) {
    const group = groups.find(
      (g) =>
        g[0]?.action === request.action &&
        g[0]?.strategy === request.strategy &&
        !g.some((r) => r.vmId === request.vmId),
    );
    if (group === undefined) groups.push([request]);
    else group.push(request);
  }
  return groups;
}

/**
 * Submits `vmIds` (the daemon's ids, in the driver's order) as one batch of `action` and
 * `strategy` with nothing held back, and waits until the daemon has submitted every member. Each
 * member's `sentMs` is when the daemon submitted it, on this process's clock: the request's send
 * time plus how long after the batch's creation the daemon submitted the member. Throws the
 * daemon's refusal of the batch itself (`onSent` has heard when it went out then).
 */
export async function submitAsBatch(
  client: DaemonClient,
  batch: { vmIds: readonly string[]; action: string; strategy: string },
  options: { onSent: (realMs: number) => void; stopped: () => boolean },
): Promise<MemberSubmission[]> {
  let sentMs = performance.now();
  let view = await client.createBatch(
    {
      selector: { vmIds: [...batch.vmIds] },
      action: batch.action,
      strategy: batch.strategy,
      maxConcurrency: batch.vmIds.length,
      ratePerSecond: null,
    },
    (realMs) => {
      sentMs = realMs;
      options.onSent(realMs);
    },
  );
  for (let pollMs = FIRST_POLL_MS; view.members.some((m) => m.state === 'pending');) {
    if (options.stopped()) return [];
    await sleep(pollMs);
    pollMs = Math.min(POLL_CEILING_MS, pollMs * 2);
    view = await client.batch(view.id);
  }
  return batch.vmIds.map((vmId) => memberSubmission(view, vmId, sentMs));
}

function memberSubmission(view: DaemonBatch, vmId: string, sentMs: number): MemberSubmission {
  const member = view.members.find((m) => m.vmId === vmId);
  if (member === undefined) {
    throw new ExperimentError(`batch ${view.id} of the daemon has no member ${vmId}`);
  }
  const at = sentMs + ((member.submittedAtMs ?? view.createdAtMs) - view.createdAtMs);
  if (member.state === 'rejected') {
    return { kind: 'refused', code: member.error?.code ?? 'rejected', sentMs: at };
  }
  if (member.jobId === null) {
    throw new ExperimentError(`batch ${view.id}: member ${vmId} is ${member.state} without a job`);
  }
  return { kind: 'job', jobId: member.jobId, sentMs: at };
}
