/**
 * Pruning the job and VM indexes (a real redis-server of its own): entries of jobs (VMs) that are
 * gone are dropped, entries of those that exist are kept, and an entry whose job (VM) is committed
 * just after the first look survives.
 */
import { MAINLINE_KERNEL } from '#tdx-sim';
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  type HostDocument,
  advanceHost,
  createHostDocument,
  createVm,
  submitOperation,
} from '#fleet';
import { FleetStore } from '#store';
import { Redis } from 'ioredis';
import { type TestRedis, startTestRedis } from '../../../test/support/redis.js';
import { IndexPruner } from './index-pruner.js';

const GIB = 1024 ** 3;
const GRACE_MS = 60_000;

/** A host `h` of 16 GiB that can run every strategy. */
function newHost(): HostDocument {
  return createHostDocument(
    {
      id: 'h',
      memoryGiB: 16,
      hkids: 8,
      packages: 2,
      cpus: 8,
      kernel: {
        ...MAINLINE_KERNEL,
        terminateVm: 'aug2025',
        linkGuestMemfd: true,
        privatePageSize: '2M',
      },
    },
    0,
  );
}

/** Runs operation `opId` of `doc` to its end in virtual time. */
function runToEnd(doc: HostDocument, _opId: string): ReturnType<typeof advanceHost> {
  return advanceHost(doc, {
    nowMs: 0,
    timeScale: 0,
    hostConcurrency: 4,
    maxWaitMs: 0,
    pollMs: 10,
  });
}

describe('index pruning', () => {
  let redis: TestRedis;
  let client: Redis;
  before(async () => {
    redis = await startTestRedis();
    client = new Redis(redis.url);
  });
  after(async () => {
    client.disconnect();
    await redis.stop();
  });

  it('drops the entries of jobs that are gone, after a second look, and keeps the rest', async () => {
    const store = new FleetStore(client, 'prune');
    let doc: HostDocument = await store.createHost(newHost());
    const commit = async (
      next: HostDocument,
      finished: Parameters<FleetStore['commitMany']>[1],
    ) => {
      const committed = await store.commitMany({ ...next, version: doc.version }, finished);
      assert.ok(committed);
      doc = committed;
    };
    // A job that finished (its record kept), one queued, one whose record has expired, and one
    // whose submit was refused after the index was written.
    await store.indexJob('boot-1', 'h');
    await commit(
      createVm(doc, { vmId: 'vm-1', opId: 'boot-1', vcpus: 1, memoryBytes: GIB, nowMs: 0 }).doc,
      [],
    );
    const booted = runToEnd(doc, 'boot-1');
    const [finished] = booted.finished;
    assert.ok(finished !== undefined);
    await commit(booted.doc, [finished]);
    await store.indexJob('reboot-1', 'h');
    await commit(
      submitOperation(doc, {
        opId: 'reboot-1',
        vmId: 'vm-1',
        action: 'reboot',
        strategy: 'reuse',
        nowMs: 0,
      }).doc,
      [],
    );
    await store.indexJob('expired', 'h');
    await store.indexJob('refused', 'h');
    // A submit in progress: indexed now, committed only after the pruner's first look.
    await store.indexJob('late', 'h');

    let now = 0;
    const pruner = new IndexPruner(store, 'jobs', { pageSize: 100, graceMs: GRACE_MS }, () => now);
    assert.equal(await pruner.step(), 0, 'the first look drops nothing');
    await commit(
      createVm(doc, { vmId: 'vm-2', opId: 'late', vcpus: 1, memoryBytes: GIB, nowMs: 0 }).doc,
      [],
    );
    now = GRACE_MS - 1;
    assert.equal(await pruner.step(), 0, 'nothing before the grace period');
    now = GRACE_MS;
    assert.equal(await pruner.step(), 2, 'then the two entries whose jobs are gone');
    assert.deepEqual(Object.keys(await client.hgetall(store.keys.jobHost)).sort(), [
      'boot-1',
      'late',
      'reboot-1',
    ]);
    assert.equal((await store.getJob('boot-1'))?.state, 'succeeded');
    assert.equal((await store.getJob('reboot-1'))?.state, 'queued');
    assert.equal((await store.getJob('late'))?.state, 'queued');
  });

  it('drops the VM index entries of VMs that are gone, and keeps terminated VMs still kept', async () => {
    const store = new FleetStore(client, 'prune-vms');
    let doc: HostDocument = await store.createHost(newHost());
    const run = (next: HostDocument, opId: string): HostDocument => runToEnd(next, opId).doc;
    const commit = async (next: HostDocument): Promise<void> => {
      const committed = await store.commit({ ...next, version: doc.version });
      assert.ok(committed);
      doc = committed;
    };
    // Three VMs booted; two of them terminated, and the last record of one has expired.
    for (const vmId of ['running', 'kept', 'expired']) {
      assert.ok(await store.claimVmId(vmId, 'h'));
      const created = createVm(doc, {
        vmId,
        opId: `boot-${vmId}`,
        vcpus: 1,
        memoryBytes: GIB,
        nowMs: 0,
      });
      await commit(run(created.doc, `boot-${vmId}`));
    }
    for (const vmId of ['kept', 'expired']) {
      const ending = submitOperation(doc, {
        opId: `end-${vmId}`,
        vmId,
        action: 'terminate',
        strategy: 'close',
        nowMs: 0,
      }).doc;
      await commit(run(ending, `end-${vmId}`));
    }
    await client.del(store.keys.terminatedVm('h', 'expired'));
    // A create that stopped after claiming its id, and one that commits after the first look.
    assert.ok(await store.claimVmId('abandoned', 'h'));
    assert.ok(await store.claimVmId('late', 'h'));

    let now = 0;
    const pruner = new IndexPruner(store, 'vms', { pageSize: 100, graceMs: GRACE_MS }, () => now);
    assert.equal(await pruner.step(), 0, 'the first look drops nothing');
    await commit(
      createVm(doc, { vmId: 'late', opId: 'boot-late', vcpus: 1, memoryBytes: GIB, nowMs: 0 }).doc,
    );
    now = GRACE_MS;
    assert.equal(await pruner.step(), 2, 'then the two entries whose VMs are gone');
    assert.deepEqual(Object.keys(await client.hgetall(store.keys.vmHost)).sort(), [
      'kept',
      'late',
      'running',
    ]);
    assert.equal((await store.requireVm('kept')).vm.state, 'terminated');
    assert.equal((await store.requireVm('late')).vm.state, 'booting');
  });

  it('does not drop an entry that was pointed at another host in the meantime', async () => {
    const store = new FleetStore(client, 'moved');
    await store.indexJob('job', 'gone-host');
    let now = 0;
    const pruner = new IndexPruner(store, 'jobs', { pageSize: 100, graceMs: GRACE_MS }, () => now);
    await pruner.step();
    await store.indexJob('job', 'other-host');
    now = GRACE_MS;
    assert.equal(await pruner.step(), 0);
    assert.equal(await client.hget(store.keys.jobHost, 'job'), 'other-host');
  });
});
