// Requests of one instant as batches: grouped by action and strategy in the driver's order, and
// each member's job, refusal and submission time read back from the daemon's batch.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { PhaseRequest } from '#experiments';
import { submissionGroups, submitAsBatch } from './batch-submission.js';
import type { BatchRequest, DaemonBatch, DaemonClient } from './daemon-client.js';

const request = (
  vmId: string,
  action: PhaseRequest['action'],
  strategy: PhaseRequest['strategy'],
): PhaseRequest => ({ vmId, action, strategy, phase: 'p' });

type Member = DaemonBatch['members'][number];

/** A daemon whose batch shows `rounds` one after the other, the last for good. */
function daemonShowing(rounds: Member[][]): {
  client: DaemonClient;
  created: BatchRequest[];
  polls: () => number;
} {
  const created: BatchRequest[] = [];
  let polls = 0;
  const view = (members: Member[]): DaemonBatch => ({ id: 'b1', createdAtMs: 1000, members });
  const client = {
    createBatch: (batch: BatchRequest, onSent?: (realMs: number) => void) => {
      created.push(batch);
      onSent?.(50);
      return Promise.resolve(view(rounds[0] ?? []));
    },
    batch: () => {
      polls += 1;
      return Promise.resolve(view(rounds[Math.min(polls, rounds.length - 1)] ?? []));
    },
  } as unknown as DaemonClient;
  return { client, created, polls: () => polls };
}

const member = (vmId: string, fields: Partial<Member>): Member => ({
  vmId,
  state: 'pending',
  jobId: null,
  error: null,
  submittedAtMs: null,
  ...fields,
});

describe('batch submission', () => {
  it('groups requests by action and strategy, in order, each VM once per group', () => {
    const groups = submissionGroups([
      request('a', 'reboot', 'reuse'),
      request('b', 'terminate', 'close'),
      request('c', 'reboot', 'reuse'),
      request('a', 'reboot', 'reuse'),
      request('d', 'reboot', 'cold'),
    ]);
    assert.deepEqual(
      groups.map((g) => g.map((r) => `${r.vmId} ${r.action} ${r.strategy}`)),
      [
        ['a reboot reuse', 'c reboot reuse'],
        ['b terminate close'],
        ['a reboot reuse'],
        ['d reboot cold'],
      ],
    );
  });

  it("waits for every member's submission and reads its job, refusal and time", async () => {
    const daemon = daemonShowing([
      [member('x', {}), member('y', {}), member('z', {})],
      [
        member('x', { state: 'queued', jobId: 'j-x', submittedAtMs: 1003 }),
        member('y', {
          state: 'rejected',
          error: { code: 'vm_busy', message: 'busy' },
          submittedAtMs: 1003,
        }),
        member('z', { state: 'succeeded', jobId: 'j-z', submittedAtMs: 1007 }),
      ],
    ]);
    let sent = 0;
    const members = await submitAsBatch(
      daemon.client,
      { vmIds: ['x', 'y', 'z'], action: 'reboot', strategy: 'reuse' },
      { onSent: (ms) => (sent = ms), stopped: () => false },
    );
    assert.equal(sent, 50);
    assert.deepEqual(daemon.created, [
      {
        selector: { vmIds: ['x', 'y', 'z'] },
        action: 'reboot',
        strategy: 'reuse',
        maxConcurrency: 3,
        ratePerSecond: null,
      },
    ]);
    assert.equal(daemon.polls(), 1);
    // Sent at 50 ms here; the daemon submitted the members 3 and 7 ms after it made the batch.
    assert.deepEqual(members, [
      { kind: 'job', jobId: 'j-x', sentMs: 53 },
      { kind: 'refused', code: 'vm_busy', sentMs: 53 },
      { kind: 'job', jobId: 'j-z', sentMs: 57 },
    ]);
  });

  it('stops waiting when the run has stopped', async () => {
    const daemon = daemonShowing([[member('x', {}), member('y', {})]]);
    const members = await submitAsBatch(
      daemon.client,
      { vmIds: ['x', 'y'], action: 'reboot', strategy: 'cold' },
      { onSent: () => {}, stopped: () => true },
    );
    assert.deepEqual(members, []);
  });
});
