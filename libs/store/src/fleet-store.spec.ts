/**
 * The host documents in Redis (a real redis-server of its own): what one process commits, any
 * other reads back exactly, whatever the interleaving; conflicts are refused; a document in the
 * earlier one-field layout is read and converted by its next commit.
 */
import { MAINLINE_KERNEL } from '#tdx-sim';
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import {
  type BatchRecord,
  type HostDocument,
  advanceHost,
  createHostDocument,
  createVm,
  submitOperation,
} from '#fleet';
import {
  REBOOT_STRATEGIES,
  type RebootStrategy,
  TERMINATE_STRATEGIES,
  type TerminateStrategy,
} from '#vmm';
import { Redis } from 'ioredis';
import { type TestRedis, startTestRedis } from '../../../test/support/redis.js';
import {
  CorruptRecordError,
  FINISHED_JOB_TTL_SECONDS,
  FleetStore,
  HostExistsError,
} from './fleet-store.js';

const GIB = 1024 ** 3;
const KERNEL = {
  ...MAINLINE_KERNEL,
  terminateVm: 'aug2025',
  linkGuestMemfd: true,
  privatePageSize: '2M',
} as const;

function newHost(id: string): HostDocument {
  return createHostDocument(
    { id, memoryGiB: 32, hkids: 8, packages: 2, cpus: 16, kernel: KERNEL },
    1000,
  );
}

/** One change a process makes to a host: what the API and the workers do. */
type Change =
  | { kind: 'create'; vcpus: number }
  | { kind: 'reboot'; vm: number; strategy: RebootStrategy }
  | { kind: 'terminate'; vm: number; strategy: TerminateStrategy }
  | { kind: 'advance'; ops: number; timeScale: number };

const change: fc.Arbitrary<Change> = fc.oneof(
  fc.record({ kind: fc.constant('create' as const), vcpus: fc.integer({ min: 1, max: 4 }) }),
  fc.record({
    kind: fc.constant('reboot' as const),
    vm: fc.nat(),
    strategy: fc.constantFrom(...REBOOT_STRATEGIES),
  }),
  // A terminated VM leaves the document when it is committed.
  fc.record({
    kind: fc.constant('terminate' as const),
    vm: fc.nat(),
    strategy: fc.constantFrom(...TERMINATE_STRATEGIES),
  }),
  // At 1000x an operation runs over several advances: its record (and plan) stays in the document.
  fc.record({
    kind: fc.constant('advance' as const),
    // Bit k set: the k-th operation is left out (only the first three can be).
    ops: fc.nat({ max: 7 }),
    timeScale: fc.constantFrom(0, 0, 1000),
  }),
);

function apply(doc: HostDocument, c: Change, n: number): HostDocument {
  const vms = Object.values(doc.vms).filter((vm) => vm.activeJob === null);
  switch (c.kind) {
    case 'create':
      if (Object.keys(doc.vms).length >= 6) return doc;
      return createVm(doc, {
        vmId: `vm-${n}`,
        opId: `boot-${n}`,
        vcpus: c.vcpus,
        memoryBytes: GIB,
        nowMs: 1000 + 50 * n,
      }).doc;
    case 'reboot':
    case 'terminate': {
      const vm = vms[c.vm % Math.max(1, vms.length)];
      if (vm === undefined || vm.state !== 'running') return doc;
      return submitOperation(doc, {
        opId: `op-${n}`,
        vmId: vm.id,
        action: c.kind,
        strategy: c.strategy,
        nowMs: 1000 + 50 * n,
      }).doc;
    }
    case 'advance': {
      if (Object.keys(doc.ops).length === 0) return doc;
      return advanceHost(doc, {
        nowMs: 1000 + 50 * n,
        timeScale: c.timeScale,
        hostConcurrency: 2,
        maxWaitMs: 0,
        pollMs: 10,
      }).doc;
    }
  }
}

// One redis-server for the file: every test uses key prefixes of its own.
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

describe('host documents in Redis', () => {
  it('what two processes commit in turn, a third reads back exactly', async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ writer: fc.nat(1), change }), { minLength: 1, maxLength: 25 }),
        async (steps) => {
          const prefix = `interleave-${run++}`;
          const writers = [new FleetStore(client, prefix), new FleetStore(client, prefix)];
          const created = await writers[0]!.createHost(newHost('h'));
          let latest = created;
          for (const [n, step] of steps.entries()) {
            const writer = writers[step.writer]!;
            const { doc } = await writer.update('h', (current) => ({
              doc: apply(current, step.change, n),
              value: null,
            }));
            latest = doc;
            const reader = new FleetStore(client, prefix);
            assert.deepEqual(await reader.getHost('h'), latest, `after step ${n}`);
          }
          assert.deepEqual(await new FleetStore(client, prefix).listHosts(), [latest]);
        },
      ),
      { numRuns: 40 },
    );
  });

  it('a commit on a version that is no longer current is refused and changes nothing', async () => {
    const a = new FleetStore(client, 'conflict');
    const b = new FleetStore(client, 'conflict');
    const created = await a.createHost(newHost('h'));
    const booted = createVm(created, {
      vmId: 'vm-1',
      opId: 'boot-1',
      vcpus: 1,
      memoryBytes: GIB,
      nowMs: 1000,
    }).doc;
    assert.ok(await b.commit(booted), 'the first commit on version 1 lands');
    const other = createVm(created, {
      vmId: 'vm-2',
      opId: 'boot-2',
      vcpus: 1,
      memoryBytes: GIB,
      nowMs: 1000,
    }).doc;
    assert.equal(await a.commit(other), null, 'a second commit on version 1 is refused');
    const stored = await new FleetStore(client, 'conflict').getHost('h');
    assert.equal(stored?.version, 2);
    assert.deepEqual(Object.keys(stored?.vms ?? {}), ['vm-1']);
  });

  it('a host id that exists cannot be created again', async () => {
    const store = new FleetStore(client, 'exists');
    const first = await store.createHost(newHost('h'));
    await assert.rejects(store.createHost(newHost('h')), HostExistsError);
    assert.deepEqual(await new FleetStore(client, 'exists').getHost('h'), first);
  });

  it('reads a document of the earlier one-field layout, and its next commit converts it', async () => {
    const doc = { ...newHost('h'), version: 7 };
    const key = new FleetStore(client, 'legacy').keys.hostDoc('h');
    await client.hset(key, 'version', '7', 'doc', JSON.stringify(doc));
    const store = new FleetStore(client, 'legacy');
    assert.deepEqual(await store.getHost('h'), doc);
    const { doc: updated } = await store.update('h', (current) => ({
      doc: createVm(current, {
        vmId: 'vm-1',
        opId: 'boot-1',
        vcpus: 1,
        memoryBytes: GIB,
        nowMs: 1000,
      }).doc,
      value: null,
    }));
    assert.equal(await client.hexists(key, 'doc'), 0, 'the one-field copy is gone');
    assert.deepEqual(await new FleetStore(client, 'legacy').getHost('h'), updated);
  });

  it('a terminated VM leaves its host document: its last record is kept 7 days, its id is free', async () => {
    const store = new FleetStore(client, 'terminated');
    let doc = await store.createHost(newHost('h'));
    await store.createHost(newHost('h2'));
    const run = (d: HostDocument, _opId: string): HostDocument =>
      advanceHost(d, {
        nowMs: 1000,
        timeScale: 0,
        hostConcurrency: 2,
        maxWaitMs: 0,
        pollMs: 10,
      }).doc;
    for (const vmId of ['vm-1', 'vm-2']) {
      const created = createVm(doc, {
        vmId,
        opId: `boot-${vmId}`,
        vcpus: 1,
        memoryBytes: GIB,
        nowMs: 1000,
      });
      assert.ok(await store.claimVmId(vmId, 'h'));
      doc = (await store.commit(run(created.doc, `boot-${vmId}`))) ?? assert.fail('boot commit');
    }
    const terminate = submitOperation(doc, {
      opId: 'end-1',
      vmId: 'vm-1',
      action: 'terminate',
      strategy: 'close',
      nowMs: 1000,
    }).doc;
    const ended = run(terminate, 'end-1');
    assert.equal(ended.vms['vm-1']?.state, 'terminated');
    const committed = await store.commit(ended);
    assert.deepEqual(Object.keys(committed?.vms ?? {}), ['vm-2']);

    const reader = new FleetStore(client, 'terminated');
    assert.deepEqual(await reader.getHost('h'), committed, 'another process reads the same');
    assert.equal(await client.hexists(store.keys.hostDoc('h'), 'vm:vm-1'), 0);
    const { doc: found, vm } = await reader.requireVm('vm-1');
    assert.equal(found.id, 'h');
    assert.deepEqual(vm, ended.vms['vm-1']);
    for (const key of [store.keys.terminatedVm('h', 'vm-1'), store.keys.terminatedVms('h')]) {
      const ttl = await client.ttl(key);
      assert.ok(ttl > FINISHED_JOB_TTL_SECONDS - 60 && ttl <= FINISHED_JOB_TTL_SECONDS, key);
    }
    // It is listed, and counted, for as long as its record is kept.
    const h2 = (await reader.getHost('h2')) ?? assert.fail('h2');
    const listed = async () =>
      (await reader.terminatedVms([h2, (await reader.getHost('h')) ?? assert.fail('h')])).map(
        ({ doc: on, vm: terminated }) => [on.id, terminated],
      );
    assert.deepEqual(await listed(), [['h', ended.vms['vm-1']]]);
    assert.deepEqual(await reader.terminatedVmCounts(['h', 'h2', 'none']), [1, 0, 0]);
    // Its id may be given to a new VM, on any host; a running VM's may not. Meanwhile the
    // terminated VM is out of reach and not listed; a create that gives the id back leaves it
    // in reach again.
    assert.equal(await reader.claimVmId('vm-2', 'h2'), null);
    const claim = await reader.claimVmId('vm-1', 'h2');
    assert.deepEqual(claim, { previousHostId: 'h' });
    assert.equal(await client.hget(store.keys.vmHost, 'vm-1'), 'h2');
    assert.deepEqual(await listed(), []);
    await reader.releaseVmId('vm-1', 'h2', claim ?? assert.fail('claimed'));
    assert.deepEqual((await reader.requireVm('vm-1')).vm, ended.vms['vm-1']);
    assert.deepEqual(await listed(), [['h', ended.vms['vm-1']]]);
    // A new VM with its id on the same host is the one shown.
    const reborn = createVm(committed ?? assert.fail('committed'), {
      vmId: 'vm-1',
      opId: 'boot-again',
      vcpus: 1,
      memoryBytes: GIB,
      nowMs: 2000,
    });
    assert.ok(await reader.commit(reborn.doc));
    assert.deepEqual(await listed(), []);
    // A fresh id given back leaves no entry.
    const fresh = await reader.claimVmId('vm-9', 'h2');
    assert.deepEqual(fresh, { previousHostId: null });
    await reader.releaseVmId('vm-9', 'h2', fresh ?? assert.fail('claimed'));
    assert.equal(await client.hexists(store.keys.vmHost, 'vm-9'), 0);
  });

  it('a field that is not JSON is reported as a corrupt record', async () => {
    const store = new FleetStore(client, 'corrupt');
    await store.createHost(newHost('h'));
    await client.hset(store.keys.hostDoc('h'), 'sim', '{not json');
    await assert.rejects(new FleetStore(client, 'corrupt').getHost('h'), CorruptRecordError);
  });
});

/** A running batch of no members (what the store keeps does not depend on them). */
function runningBatch(id: string, createdAtMs: number): BatchRecord {
  return {
    id,
    spec: {
      selector: { all: true },
      action: 'reboot',
      strategy: 'cold',
      maxConcurrency: 1,
      ratePerSecond: null,
    },
    state: 'running',
    members: [],
    createdAtMs,
    finishedAtMs: null,
  };
}

describe('batch records in Redis', () => {
  it('a finished batch is kept for the 7 days of finished jobs, a running one until it ends', async () => {
    const store = new FleetStore(client, 'batches');
    const batch = runningBatch('b1', 1_000_000_000_000);
    await store.saveBatch(batch);
    assert.equal(await client.ttl(store.keys.batch('b1')), -1);
    await store.saveBatch({ ...batch, state: 'done', finishedAtMs: batch.createdAtMs + 1 });
    const ttl = await client.ttl(store.keys.batch('b1'));
    assert.ok(ttl > FINISHED_JOB_TTL_SECONDS - 60 && ttl <= FINISHED_JOB_TTL_SECONDS, `ttl ${ttl}`);
    assert.equal((await store.getBatch('b1'))?.state, 'done');
  });

  it('the list of batches forgets those created more than 7 days before the newest', async () => {
    const store = new FleetStore(client, 'batch-list');
    const day = 24 * 3600 * 1000;
    await store.saveBatch(runningBatch('old', 0));
    await store.saveBatch(runningBatch('week', 7 * day));
    await store.saveBatch(runningBatch('new', 8 * day));
    assert.deepEqual(await client.zrange(store.keys.batches, 0, -1), ['week', 'new']);
  });
});
