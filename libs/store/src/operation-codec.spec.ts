import { MAINLINE_KERNEL } from '#tdx-sim';
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  type HostDocument,
  type JobStep,
  type OperationRecord,
  advanceHost,
  createHostDocument,
  createVm,
  submitOperation,
} from '#fleet';
import { REBOOT_STRATEGIES, type RebootStrategy } from '#vmm';
import { decodeOperation, encodeOperation } from './operation-codec.js';

const GIB = 1024 ** 3;
const KERNEL = {
  ...MAINLINE_KERNEL,
  terminateVm: 'aug2025',
  linkGuestMemfd: true,
  privatePageSize: '2M',
} as const;
const RUN = { hostConcurrency: 8, maxWaitMs: 0, pollMs: 50 };

/** Advances every operation of the document at `timeScale`; the records as committed. */
function advanceAll(
  doc: HostDocument,
  timeScale: number,
): { doc: HostDocument; ops: OperationRecord[] } {
  const advance = advanceHost(doc, { nowMs: 1000, ...RUN, timeScale });
  return { doc: advance.doc, ops: advance.ops };
}

/** The record of a reboot with `strategy` of a booted VM: finished, or running at 1000x. */
function reboot(strategy: RebootStrategy, timeScale = 0): OperationRecord {
  let doc = createHostDocument(
    { id: 'h', memoryGiB: 32, hkids: 8, packages: 2, cpus: 16, kernel: KERNEL },
    1000,
  );
  doc = createVm(doc, {
    vmId: 'vm',
    opId: 'boot',
    vcpus: 2,
    memoryBytes: 2 * GIB,
    nowMs: 1000,
  }).doc;
  doc = advanceAll(doc, 0).doc;
  doc = submitOperation(doc, {
    opId: 'reboot',
    vmId: 'vm',
    action: 'reboot',
    strategy,
    nowMs: 1000,
  }).doc;
  const [op] = advanceAll(doc, timeScale).ops;
  assert.ok(op !== undefined);
  return op;
}

function finishedReboot(strategy: RebootStrategy): OperationRecord {
  const op = reboot(strategy);
  assert.equal(op.state, 'succeeded');
  return op;
}

const roundTrip = (op: OperationRecord): OperationRecord | null =>
  decodeOperation(JSON.parse(encodeOperation(op)));

const step: fc.Arbitrary<JobStep> = fc.record(
  {
    name: fc.constantFrom('create-vm' as const, 'terminate-vm' as const, 'close-vm' as const),
    track: fc.constantFrom('teardown' as const, 'boot' as const),
    state: fc.constantFrom(
      'pending' as const,
      'waiting' as const,
      'done' as const,
      'failed' as const,
      'skipped' as const,
    ),
    virtualSeconds: fc.double({ min: 0, max: 1e4, noNaN: true }),
    virtualStart: fc.option(fc.double({ min: 0, max: 1e4, noNaN: true })),
    wallMs: fc.double({ min: 0, max: 1e7, noNaN: true }),
    startedAtMs: fc.option(fc.integer({ min: 0, max: 2 ** 42 })),
    endsAtMs: fc.option(fc.double({ min: 0, max: 2 ** 42, noNaN: true })),
    waitedMs: fc.nat(),
    waitedSeconds: fc.double({ min: 0, max: 1e4, noNaN: true }),
    errno: fc.constantFrom('ENOSPC' as const, 'ENOMEM' as const, 'EBUSY' as const),
    call: fc.constantFrom('KVM_CREATE_VM' as const, 'close' as const),
    message: fc.string(),
    cleanup: fc.boolean(),
  },
  {
    requiredKeys: [
      'name',
      'track',
      'state',
      'virtualSeconds',
      'virtualStart',
      'wallMs',
      'startedAtMs',
      'endsAtMs',
      'waitedMs',
      'waitedSeconds',
    ],
    noNullPrototype: true,
  },
);

describe('stored operation records', () => {
  it('read back as written, whatever their steps hold (the plan is stored apart)', () => {
    const base = finishedReboot('reuse');
    fc.assert(
      fc.property(fc.array(step, { maxLength: 24 }), (steps) => {
        const op: OperationRecord = { ...base, steps };
        assert.deepEqual(roundTrip(op), op);
      }),
    );
  });

  it('a finished reboot reads back equal, in less than 60% of the plain JSON', () => {
    for (const strategy of REBOOT_STRATEGIES) {
      const op = finishedReboot(strategy);
      assert.equal(op.plan, null);
      assert.deepEqual(roundTrip(op), op);
      const stored = encodeOperation(op).length;
      const plain = JSON.stringify(op).length;
      assert.ok(stored < plain * 0.6, `${strategy}: ${stored} bytes stored, ${plain} plain`);
    }
  });

  it('a running record is stored without its plan, and reads back with plan null', () => {
    const running = reboot('cold', 1000);
    assert.equal(running.state, 'running');
    assert.ok(running.plan !== null && running.plan.steps.length > 0);
    assert.doesNotMatch(encodeOperation(running), /initialBindings/);
    assert.deepEqual(roundTrip(running), { ...running, plan: null });
  });

  it('reads the plain records earlier versions wrote; anything else is refused', () => {
    const op = finishedReboot('terminate');
    assert.deepEqual(decodeOperation(JSON.parse(JSON.stringify(op))), op);
    assert.equal(decodeOperation('text'), null);
    assert.equal(decodeOperation([op]), null);
    assert.equal(decodeOperation({ id: 'j', state: 'succeeded' }), null);
    assert.equal(
      decodeOperation({ id: 'j', state: 'succeeded', stepArrays: [['create-vm']] }),
      null,
    );
  });
});
