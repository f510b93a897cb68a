/**
 * Submitting several operations at once (a real redis-server of its own, no workers): those on
 * one host are committed in one change of its document, arrive together in the given order, and
 * a refused one does not stop the others.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { hostWithBootedVms } from '../../fleet/src/testing/driver.js';
import { type FleetClient, connectFleet } from '../../../test/support/fleet.js';
import { type TestRedis, startTestRedis } from '../../../test/support/redis.js';
import type { SubmitOutcome } from './fleet.service.js';

function key(name: string, vmId: string): { key: string; fingerprint: string } {
  return { key: name, fingerprint: `reboot ${vmId}` };
}

function jobOf(outcome: SubmitOutcome | undefined): string {
  assert.ok(outcome?.ok === true, `refused: ${outcome?.ok === false ? outcome.error.code : '?'}`);
  return outcome.job.id;
}

describe('FleetService.submitMany', () => {
  let redis: TestRedis;
  let fleet: FleetClient;

  before(async () => {
    redis = await startTestRedis();
    fleet = connectFleet(redis.url, 'submit-many');
  });
  after(async () => {
    await fleet?.close();
    await redis?.stop();
  });

  /** Stores a host with booted VMs and indexes them, as if the API had created them. */
  async function addHost(hostId: string, vmIds: readonly string[]): Promise<void> {
    await fleet.store.createHost(hostWithBootedVms(hostId, vmIds));
    for (const vmId of vmIds) await fleet.store.indexVm(vmId, hostId);
  }

  it("commits one host's requests in one version step, arriving together in order", async () => {
    await addHost('h1', ['a', 'b', 'c', 'd']);
    // 'd' is busy: its reboot is refused, and the others still go.
    await fleet.service.submit('d', 'reboot', 'reuse');
    const versionBefore = (await fleet.store.requireHost('h1')).version;

    const outcomes = await fleet.service.submitMany([
      { vmId: 'c', action: 'reboot', strategy: 'reuse' },
      { vmId: 'd', action: 'reboot', strategy: 'reuse' },
      { vmId: 'a', action: 'reboot', strategy: 'reuse' },
      { vmId: 'ghost', action: 'reboot', strategy: 'reuse' },
      { vmId: 'b', action: 'reboot', strategy: 'reuse' },
    ]);

    assert.equal(outcomes.length, 5);
    assert.equal(outcomes[1]?.ok === false && outcomes[1].error.code, 'vm_busy');
    assert.equal(outcomes[3]?.ok === false && outcomes[3].error.code, 'not_found');
    const jobIds = [outcomes[0], outcomes[2], outcomes[4]].map(jobOf);
    const doc = await fleet.store.requireHost('h1');
    assert.equal(doc.version, versionBefore + 1, 'one compare-and-set for the three');
    const ops = jobIds.map((id) => doc.ops[id]);
    assert.deepEqual(
      ops.map((op) => op?.vmId),
      ['c', 'a', 'b'],
    );
    const arrivals = ops.map((op) => op?.arrival ?? NaN);
    assert.deepEqual(
      arrivals,
      arrivals.map((_, i) => (arrivals[0] ?? NaN) + i),
      'consecutive places, in the order given',
    );
    assert.deepEqual(new Set(ops.map((op) => op?.arrivedAt)).size, 1, 'the same arrival time');
    for (const id of jobIds) {
      assert.ok(await fleet.queues.operations.getJob(id), `job ${id} is queued`);
      assert.equal((await fleet.store.getJob(id))?.state, 'queued');
    }
  });

  it('keeps each host to its own commit and answers in the order of the requests', async () => {
    await addHost('h2', ['p', 'q']);
    await addHost('h3', ['x', 'y']);
    const versions = async () =>
      Promise.all(['h2', 'h3'].map(async (id) => (await fleet.store.requireHost(id)).version));
    const before = await versions();
    const outcomes = await fleet.service.submitMany([
      { vmId: 'p', action: 'reboot', strategy: 'reuse' },
      { vmId: 'x', action: 'reboot', strategy: 'reuse' },
      { vmId: 'q', action: 'terminate', strategy: 'close' },
      { vmId: 'y', action: 'reboot', strategy: 'cold' },
    ]);
    const jobs = outcomes.map(jobOf);
    assert.deepEqual(
      await versions(),
      before.map((v) => v + 1),
    );
    const answered = await Promise.all(jobs.map((id) => fleet.store.getJob(id)));
    assert.deepEqual(
      answered.map((op) => [op?.vmId, op?.hostId, op?.action]),
      [
        ['p', 'h2', 'reboot'],
        ['x', 'h3', 'reboot'],
        ['q', 'h2', 'terminate'],
        ['y', 'h3', 'reboot'],
      ],
    );
  });

  it('replays a request whose key was used, and gives back the key of a refused one', async () => {
    await addHost('h4', ['m', 'n']);
    const first = await fleet.service.submitMany([
      { vmId: 'm', action: 'reboot', strategy: 'reuse', idempotency: key('k-m', 'm') },
      { vmId: 'ghost', action: 'reboot', strategy: 'reuse', idempotency: key('k-g', 'ghost') },
    ]);
    assert.equal(first[1]?.ok === false && first[1].error.code, 'not_found');
    const again = await fleet.service.submitMany([
      { vmId: 'm', action: 'reboot', strategy: 'reuse', idempotency: key('k-m', 'm') },
      // The refused request's key is free again, for another request.
      { vmId: 'n', action: 'reboot', strategy: 'reuse', idempotency: key('k-g', 'n') },
    ]);
    assert.equal(jobOf(again[0]), jobOf(first[0]));
    assert.equal(again[0]?.ok === true && again[0].replayed, true);
    assert.equal(again[1]?.ok === true && again[1].replayed, false);
  });
});
