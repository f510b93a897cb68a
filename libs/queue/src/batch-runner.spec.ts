/**
 * The batch runner (a real redis-server of its own, no operation workers): a round's members are
 * submitted together, so that each host's arrive there at once in the order of the selector, and
 * a batch picked up again after its record was lost submits nothing twice.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { hostWithBootedVms } from '../../fleet/src/testing/driver.js';
import { type FleetClient, connectFleet } from '../../../test/support/fleet.js';
import { type TestRedis, startTestRedis } from '../../../test/support/redis.js';
import { BatchRunner } from './batch-runner.js';

/** Runs the batch for one round: its members stay in flight (no worker runs them). */
async function oneRound(runner: BatchRunner, batchId: string): Promise<void> {
  const abort = new AbortController();
  abort.abort();
  assert.deepEqual(await runner.run(batchId, abort.signal), { kind: 'handed-back' });
}

describe('BatchRunner', () => {
  let redis: TestRedis;
  let fleet: FleetClient;
  let runner: BatchRunner;

  before(async () => {
    redis = await startTestRedis();
    fleet = connectFleet(redis.url, 'batch-runner');
    runner = new BatchRunner(fleet.store, fleet.service);
    for (const [hostId, vmIds] of [
      ['h1', ['a1', 'a2', 'a3']],
      ['h2', ['b1', 'b2', 'b3']],
    ] as const) {
      await fleet.store.createHost(hostWithBootedVms(hostId, vmIds));
      for (const vmId of vmIds) await fleet.store.indexVm(vmId, hostId);
    }
  });
  after(async () => {
    await fleet?.close();
    await redis?.stop();
  });

  it("commits each host's members together, in the selector's order", async () => {
    const versions = async () =>
      Promise.all(['h1', 'h2'].map(async (id) => (await fleet.store.requireHost(id)).version));
    const before = await versions();
    const vmIds = ['a3', 'b2', 'a1', 'b3', 'ghost', 'a2', 'b1'];
    const created = await fleet.service.createBatch({
      selector: { vmIds },
      action: 'reboot',
      strategy: 'reuse',
      maxConcurrency: vmIds.length,
      ratePerSecond: null,
    });
    assert.deepEqual(
      created.members.map((m) => m.vmId),
      vmIds,
    );
    await oneRound(runner, created.id);

    const batch = await fleet.service.getBatch(created.id);
    assert.deepEqual(
      await versions(),
      before.map((v) => v + 1),
      'one commit per host',
    );
    assert.equal(batch.counts.queued, 6);
    assert.equal(batch.members[4]?.error?.code, 'not_found');
    for (const hostId of ['h1', 'h2']) {
      const doc = await fleet.store.requireHost(hostId);
      const ops = batch.members
        .filter((m) => m.hostId === hostId)
        .map((m) => doc.ops[m.jobId ?? ''] ?? assert.fail(`${m.vmId} has no operation`));
      assert.equal(ops.length, 3);
      assert.equal(new Set(ops.map((op) => op.arrivedAt)).size, 1, `${hostId}: one arrival time`);
      assert.deepEqual(
        ops.map((op) => op.arrival - (ops[0]?.arrival ?? 0)),
        [0, 1, 2],
        `${hostId}: arrivals in the selector's order`,
      );
      assert.ok(ops.every((op) => op.batchId === batch.id));
    }
  });

  it('submits nothing twice when its record is lost after a round', async () => {
    const created = await fleet.service.createBatch({
      selector: { hostIds: ['h1', 'h2'] },
      action: 'terminate',
      strategy: 'close',
      maxConcurrency: 2,
      ratePerSecond: null,
    });
    // The VMs are still busy with the first test's reboots: every member is refused...
    await oneRound(runner, created.id);
    const refused = await fleet.service.getBatch(created.id);
    assert.equal(refused.counts.rejected, 2);
    assert.equal(refused.members[0]?.error?.code, 'vm_busy');

    // ...whereas a batch on idle VMs, whose first round is forgotten, finds its jobs again.
    await fleet.store.createHost(hostWithBootedVms('h3', ['c1', 'c2']));
    for (const vmId of ['c1', 'c2']) await fleet.store.indexVm(vmId, 'h3');
    const fresh = await fleet.service.createBatch({
      selector: { vmIds: ['c2', 'c1'] },
      action: 'reboot',
      strategy: 'cold',
      maxConcurrency: 2,
      ratePerSecond: null,
    });
    const stored = await fleet.store.getBatch(fresh.id);
    assert.ok(stored !== null);
    await oneRound(runner, fresh.id);
    const first = await fleet.service.getBatch(fresh.id);
    await fleet.store.saveBatch(stored);
    await oneRound(runner, fresh.id);
    const second = await fleet.service.getBatch(fresh.id);
    assert.deepEqual(
      second.members.map((m) => [m.vmId, m.state, m.jobId]),
      first.members.map((m) => [m.vmId, 'queued', m.jobId]),
    );
    const doc = await fleet.store.requireHost('h3');
    assert.equal(Object.keys(doc.ops).length, 2);
  });
});
