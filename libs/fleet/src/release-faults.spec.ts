import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { InvalidRequestError } from './errors.js';
import { setReleaseFaults } from './host-document.js';
import { submitOperation } from './operations.js';
import { attemptFails, checkReleaseFaults } from './release-faults.js';
import { V4, drive, finishedOp, hostWithVms, makeHost } from './testing/driver.js';
import { hostView } from './views.js';

describe('HKID release fault setting', () => {
  it('fails the attempts its rule names, counting from 0', () => {
    const fails = (rule: Parameters<typeof attemptFails>[0]) =>
      [0, 1, 2, 3, 4, 5].map((attempts) => attemptFails(rule, attempts));
    assert.deepEqual(fails(undefined), [false, false, false, false, false, false]);
    assert.deepEqual(fails({ failNext: 0 }), [false, false, false, false, false, false]);
    assert.deepEqual(fails({ failNext: 2 }), [true, true, false, false, false, false]);
    assert.deepEqual(fails({ everyNth: 1 }), [true, true, true, true, true, true]);
    assert.deepEqual(fails({ everyNth: 3 }), [false, false, true, false, false, true]);
  });

  for (const bad of [
    null,
    [],
    { KEYID: { failNext: 1 } },
    { FREEID: {} },
    { FREEID: { failNext: -1 } },
    { FREEID: { everyNth: 0 } },
    { FREEID: { everyNth: 1.5 } },
    { FREEID: { failNext: 1, everyNth: 2 } },
    { VPFLUSHDONE: 'always' },
  ]) {
    it(`refuses ${JSON.stringify(bad)}`, () => {
      assert.throws(() => checkReleaseFaults(bad), InvalidRequestError);
      assert.throws(() => makeHost(V4, { hkidReleaseFaults: bad as never }), InvalidRequestError);
    });
  }

  it('a setting the host has already changes nothing; another counts afresh', () => {
    const doc = makeHost(V4, { hkidReleaseFaults: { FREEID: { everyNth: 2 } } });
    const counted = { ...doc, hkidReleaseAttempts: { VPFLUSHDONE: 3, FREEID: 3 } };
    assert.equal(setReleaseFaults(counted, { FREEID: { everyNth: 2 } }), counted);
    const changed = setReleaseFaults(counted, { VPFLUSHDONE: { failNext: 1 } });
    assert.deepEqual(changed.hkidReleaseFaults, { VPFLUSHDONE: { failNext: 1 } });
    assert.deepEqual(changed.hkidReleaseAttempts, { VPFLUSHDONE: 0, FREEID: 0 });
    assert.deepEqual(setReleaseFaults(changed, {}).hkidReleaseFaults, {});
  });

  it('a failed VPFLUSHDONE at KVM_TDX_TERMINATE_VM is retried when the VM is closed', () => {
    const host = makeHost(V4, { hkidReleaseFaults: { VPFLUSHDONE: { failNext: 1 } } });
    const { doc, nowMs } = hostWithVms(host, 1);
    const opId = 'terminate';
    const submitted = submitOperation(doc, {
      opId,
      vmId: 'vm1',
      action: 'terminate',
      strategy: 'terminate',
      nowMs,
    }).doc;
    const driven = drive(submitted, opId, nowMs);
    assert.equal(finishedOp(driven, opId).state, 'succeeded');
    const view = hostView(driven.doc, driven.nowMs);
    // Two attempts reached VPFLUSHDONE (the first failed); the second went on to FREEID.
    assert.deepEqual(view.hkidReleaseAttempts, { VPFLUSHDONE: 2, FREEID: 1 });
    assert.deepEqual(view.usage.hkids, { used: 0, total: 8, zombies: 0, leaked: 0 });
    assert.equal(view.usage.memory.leakedBytes, 0);
    assert.equal(driven.doc.sim.failNext.VPFLUSHDONE, false, 'disarmed: its one failure is spent');
  });
});
