/**
 * Placement: `POST /v1/vms` without a host picks one with room and a free HKID, the one with
 * the most free memory, and says why when none fits.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { GIB_BYTES } from '#tdx-sim';
import { NoCapacityError } from './errors.js';
import type { HostDocument } from './model.js';
import { capacityProblem, createVm, hostCapacity, submitOperation } from './operations.js';
import { chooseHost } from './placement.js';
import { MAINLINE, V4, drive, hostWithVms, makeHost } from './testing/driver.js';

function host(id: string, memoryGiB: number, extra: { hkids?: number; cpus?: number } = {}) {
  return makeHost(MAINLINE, { id, memoryGiB, ...extra });
}

/** A host with one running VM of `vmGiB`. */
function hostWith(id: string, memoryGiB: number, vmGiB: number, hkids = 8): HostDocument {
  return hostWithVms(makeHost(MAINLINE, { id, memoryGiB, hkids }), 1, {
    vcpus: 2,
    memoryBytes: vmGiB * GIB_BYTES,
  }).doc;
}

function noCapacity(fn: () => unknown): NoCapacityError {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof NoCapacityError, `expected NoCapacityError, got ${String(caught)}`);
  return caught;
}

describe('chooseHost', () => {
  it('passes over a host without memory and one without a free HKID', () => {
    const docs = [hostWith('a-full', 16, 14), hostWith('b-no-hkid', 64, 1, 1), host('c-ok', 8)];
    assert.equal(chooseHost(docs, 2, 4 * GIB_BYTES).id, 'c-ok');
  });

  it('picks the host with the most free memory, the lowest id on a tie', () => {
    const docs = [hostWith('a', 64, 32), host('b', 48), hostWith('c', 128, 60), host('d', 48)];
    assert.equal(chooseHost(docs, 1, GIB_BYTES).id, 'c');
    assert.equal(chooseHost([docs[1]!, docs[3]!], 1, GIB_BYTES).id, 'b');
    assert.equal(chooseHost([docs[3]!, docs[1]!], 1, GIB_BYTES).id, 'b');
  });

  it('counts queued boots as taken', () => {
    const busy = createVm(host('a', 64), {
      vmId: 'q',
      opId: 'boot-q',
      vcpus: 2,
      memoryBytes: 40 * GIB_BYTES,
      nowMs: 0,
    }).doc;
    // a has 64 GiB free right now, but 40 of them are promised: b (32 GiB) has more room.
    assert.equal(chooseHost([busy, host('b', 32)], 1, GIB_BYTES).id, 'b');
    const error = noCapacity(() => chooseHost([busy], 2, 30 * GIB_BYTES));
    assert.match(error.message, /host a has 2[34]\.\d\d GiB free/);
  });

  it('counts memory on its way back from a terminate as free', () => {
    const booted = hostWithVms(makeHost(V4, { id: 'a', memoryGiB: 32 }), 1, {
      vcpus: 2,
      memoryBytes: 24 * GIB_BYTES,
    });
    const doc = submitOperation(booted.doc, {
      opId: 't',
      vmId: 'vm1',
      action: 'terminate',
      strategy: 'terminate',
      nowMs: booted.nowMs,
    }).doc;
    // Stop while the guest memory is on its way back (close-guest-memfd in flight).
    const driven = drive(doc, 't', booted.nowMs, {
      stopWhen: (c) => c.doc.sim.inFlight.some((r) => r.pages * 4096 >= 24 * GIB_BYTES),
    });
    assert.ok(driven.doc.ops.t, 'the terminate is still running');
    assert.ok(driven.doc.sim.freePages * 4096 < 24 * GIB_BYTES);
    const chosen = chooseHost([driven.doc, host('b', 16)], 2, 24 * GIB_BYTES);
    assert.equal(chosen.id, 'a');
    assert.equal(hostCapacity(driven.doc).freeHkids, 8);
  });

  it('lists why each host was passed over when none fits', () => {
    const docs = [hostWith('a', 16, 14), hostWith('b', 64, 1, 1), host('c', 8, { cpus: 2 })];
    const error = noCapacity(() => chooseHost(docs, 4, 4 * GIB_BYTES));
    const reasons = (error.details as { reasons: string[] }).reasons;
    assert.equal(reasons.length, 3);
    assert.match(reasons[0] ?? '', /^host a has .* GiB free, the VM needs 4\.\d\d GiB$/);
    assert.match(reasons[1] ?? '', /^host b has no free HKID/);
    assert.match(reasons[2] ?? '', /^host c has 2 CPUs, the VM wants 4 vCPUs$/);
    for (const reason of reasons) assert.ok(error.message.includes(reason));
    assert.equal(error.code, 'no_capacity');
  });

  it('says there are no hosts when there are none', () => {
    const error = noCapacity(() => chooseHost([], 1, GIB_BYTES));
    assert.equal(error.message, 'there are no hosts');
    assert.deepEqual(error.details, { reasons: [] });
  });

  it('never changes the documents it looks at', () => {
    const docs = [hostWith('a', 16, 4), host('b', 8)];
    const before = structuredClone(docs);
    chooseHost(docs, 1, GIB_BYTES);
    noCapacity(() => chooseHost(docs, 1, 64 * GIB_BYTES));
    assert.deepEqual(docs, before);
  });

  it('picks a host that fits with the most room, or refuses only when none fits', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            memoryGiB: fc.integer({ min: 1, max: 16 }),
            hkids: fc.integer({ min: 1, max: 3 }),
            cpus: fc.integer({ min: 2, max: 8 }),
            queued: fc.array(fc.integer({ min: 1, max: 8 }), { maxLength: 3 }),
          }),
          { maxLength: 4 },
        ),
        fc.integer({ min: 1, max: 8 }),
        fc.integer({ min: 1, max: 8 }),
        (specs, vcpus, vmGiB) => {
          const docs = specs.map((spec, i) => {
            let doc = makeHost(MAINLINE, {
              id: `h${i}`,
              memoryGiB: spec.memoryGiB,
              hkids: spec.hkids,
              cpus: spec.cpus,
            });
            spec.queued.forEach((gib, j) => {
              try {
                doc = createVm(doc, {
                  vmId: `v${j}`,
                  opId: `b${j}`,
                  vcpus: 1,
                  memoryBytes: gib * GIB_BYTES,
                  nowMs: 0,
                }).doc;
              } catch (error) {
                if (!(error instanceof NoCapacityError)) throw error;
              }
            });
            return doc;
          });
          const memoryBytes = vmGiB * GIB_BYTES;
          const fits = docs.filter((d) => capacityProblem(d, vcpus, memoryBytes) === null);
          if (fits.length === 0) {
            const error = noCapacity(() => chooseHost(docs, vcpus, memoryBytes));
            assert.equal((error.details as { reasons: string[] }).reasons.length, docs.length);
            return;
          }
          const chosen = chooseHost(docs, vcpus, memoryBytes);
          assert.ok(fits.includes(chosen));
          const most = Math.max(...fits.map((d) => hostCapacity(d).freePages));
          assert.equal(hostCapacity(chosen).freePages, most);
          // And the VM can be created there.
          assert.doesNotThrow(() =>
            createVm(chosen, { vmId: 'new', opId: 'new', vcpus, memoryBytes, nowMs: 0 }),
          );
        },
      ),
      { numRuns: 200 },
    );
  });
});
