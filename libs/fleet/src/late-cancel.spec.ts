import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { NoCapacityError } from './errors.js';
import { createVm, requestCancel, submitOperation } from './operations.js';
import { GIB_BYTES, V4_LINK, drive, finishedOp, hostWithVms, makeHost } from './testing/driver.js';

describe('cancelling late', () => {
  it('a cancel that arrives after every step was applied lets the reboot finish', () => {
    const booted = hostWithVms(makeHost(V4_LINK), 1, { vcpus: 2, memoryBytes: 4 * GIB_BYTES });
    const submitted = submitOperation(booted.doc, {
      opId: 'r1',
      vmId: 'vm1',
      action: 'reboot',
      strategy: 'reuse',
      nowMs: booted.nowMs,
    });
    // Drive until the last step (run) has been applied; its virtual time has not passed yet.
    const partial = drive(submitted.doc, 'r1', booted.nowMs, {
      stopWhen: (commit) => commit.doc.ops.r1?.steps.every((s) => s.state === 'done') === true,
    });
    const running = partial.doc.ops.r1;
    assert.ok(running !== undefined && running.finishedAtMs === null, 'still running');
    const cancelled = requestCancel(partial.doc, 'r1', partial.nowMs);
    assert.equal(cancelled.finished, false);
    const end = drive(cancelled.doc, 'r1', partial.nowMs);
    const op = finishedOp(end, 'r1');
    assert.equal(op.state, 'succeeded');
    assert.equal(op.cancelRequested, true);
    assert.equal(end.doc.vms.vm1?.state, 'running');
    assert.equal(end.doc.vms.vm1?.generation, 2);
  });

  it('a stopped VM is not rebooted onto a host that has no room for it', () => {
    const host = makeHost(V4_LINK, { memoryGiB: 10 });
    const booted = hostWithVms(host, 2, { vcpus: 2, memoryBytes: 4 * GIB_BYTES });
    // Stop vm1 by cancelling its reboot mid-way, then fill the room it left.
    const submitted = submitOperation(booted.doc, {
      opId: 'c1',
      vmId: 'vm1',
      action: 'reboot',
      strategy: 'cold',
      nowMs: booted.nowMs,
    });
    const started = drive(submitted.doc, 'c1', booted.nowMs, {
      stopWhen: (commit) =>
        (commit.doc.ops.c1?.steps.filter((s) => s.state === 'done').length ?? 0) > 0,
    });
    const stopped = drive(requestCancel(started.doc, 'c1', started.nowMs).doc, 'c1', started.nowMs);
    assert.equal(stopped.doc.vms.vm1?.state, 'stopped');
    const third = createVm(stopped.doc, {
      vmId: 'vm3',
      opId: 'boot-vm3',
      vcpus: 2,
      memoryBytes: 4 * GIB_BYTES,
      nowMs: stopped.nowMs,
    });
    const doc = drive(third.doc, 'boot-vm3', stopped.nowMs).doc;
    assert.equal(doc.vms.vm3?.state, 'running');
    assert.throws(
      () =>
        submitOperation(doc, {
          opId: 'b1',
          vmId: 'vm1',
          action: 'reboot',
          strategy: 'cold',
          nowMs: stopped.nowMs,
        }),
      NoCapacityError,
    );
  });
});
