/**
 * Submitting operations: what is refused (and that a refusal changes nothing), what is queued,
 * and the capacity a host keeps for the VMs it has accepted.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { GIB_BYTES, PAGE_BYTES } from '#tdx-sim';
import { REBOOT_STRATEGIES, TERMINATE_STRATEGIES } from '#vmm';
import {
  FleetError,
  InvalidRequestError,
  KernelFeatureMissingError,
  NoCapacityError,
  NotFoundError,
  VmBusyError,
  VmExistsError,
  VmStateConflictError,
} from './errors.js';
import type { HostDocument, Strategy } from './model.js';
import {
  type OperationRequest,
  createVm,
  hostCapacity,
  pagesNeeded,
  requestCancel,
  submitOperation,
} from './operations.js';
import {
  ALL_KERNELS,
  MAINLINE,
  MIB,
  V4,
  V4_LINK,
  canReboot,
  canTerminate,
  drive,
  finishedOp,
  hostWithVms,
  kernelLabel,
  makeHost,
} from './testing/driver.js';
import { jobView, vmView } from './views.js';

function request(
  vmId: string,
  action: 'reboot' | 'terminate',
  strategy: Strategy,
  opId = 'op',
): OperationRequest {
  return { opId, vmId, action, strategy, nowMs: 1000 };
}

/** Runs `fn` on `doc`, expects it to throw, and checks that `doc` was not touched. */
function refused<E extends Error>(
  doc: HostDocument,
  fn: (doc: HostDocument) => unknown,
  type: new (...args: never[]) => E,
): E {
  const before = structuredClone(doc);
  let caught: unknown;
  try {
    fn(doc);
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof type, `expected ${type.name}, got ${String(caught)}`);
  assert.ok(caught instanceof FleetError, 'every refusal is a FleetError');
  assert.deepEqual(doc, before, 'a refusal leaves the document as it was');
  return caught;
}

describe('submitOperation refusals', () => {
  it('an unknown VM is not found', () => {
    const { doc } = hostWithVms(makeHost(V4_LINK), 1);
    const error = refused(
      doc,
      (d) => submitOperation(d, request('nope', 'reboot', 'cold')),
      NotFoundError,
    );
    assert.equal(error.code, 'not_found');
    assert.deepEqual(error.details, { kind: 'vm', id: 'nope' });
  });

  it('a VM with a queued or running operation is busy, naming that job', () => {
    const host = makeHost(V4_LINK);
    const created = createVm(host, {
      vmId: 'vm1',
      opId: 'boot-1',
      vcpus: 2,
      memoryBytes: GIB_BYTES,
      nowMs: 0,
    });
    // Its boot is queued.
    const queued = refused(
      created.doc,
      (d) => submitOperation(d, request('vm1', 'terminate', 'close')),
      VmBusyError,
    );
    assert.equal(queued.jobId, 'boot-1');
    assert.equal(queued.code, 'vm_busy');
    assert.deepEqual(queued.details, { vmId: 'vm1', jobId: 'boot-1' });

    // A reboot is running.
    const booted = hostWithVms(makeHost(V4_LINK), 1);
    const submitted = submitOperation(booted.doc, request('vm1', 'reboot', 'reuse', 'reboot-7'));
    const running = drive(submitted.doc, 'reboot-7', booted.nowMs, { stopWhen: () => true });
    assert.equal(running.doc.ops['reboot-7']?.state, 'running');
    for (const [action, strategy] of [
      ['reboot', 'cold'],
      ['terminate', 'terminate'],
    ] as const) {
      const busy = refused(
        running.doc,
        (d) => submitOperation(d, request('vm1', action, strategy, 'another')),
        VmBusyError,
      );
      assert.equal(busy.jobId, 'reboot-7');
      assert.equal(busy.vmId, 'vm1');
    }
  });

  it('a terminated VM cannot be rebooted or terminated again', () => {
    const booted = hostWithVms(makeHost(V4), 1);
    const submitted = submitOperation(booted.doc, request('vm1', 'terminate', 'terminate', 't'));
    const done = drive(submitted.doc, 't', booted.nowMs);
    assert.equal(done.doc.vms.vm1?.state, 'terminated');
    for (const [action, strategy] of [
      ['reboot', 'cold'],
      ['reboot', 'terminate'],
      ['terminate', 'close'],
      ['terminate', 'terminate'],
    ] as const) {
      const error = refused(
        done.doc,
        (d) => submitOperation(d, request('vm1', action, strategy)),
        VmStateConflictError,
      );
      assert.equal(error.code, 'vm_state_conflict');
      assert.deepEqual(error.details, { vmId: 'vm1', state: 'terminated', action });
    }
  });

  it('reuse without linkGuestMemfd names KVM_LINK_GUEST_MEMFD', () => {
    const { doc } = hostWithVms(makeHost(V4), 1);
    const error = refused(
      doc,
      (d) => submitOperation(d, request('vm1', 'reboot', 'reuse')),
      KernelFeatureMissingError,
    );
    assert.equal(error.code, 'kernel_feature_missing');
    assert.equal(error.feature, 'KVM_LINK_GUEST_MEMFD');
    assert.deepEqual(error.details, { feature: 'KVM_LINK_GUEST_MEMFD', switch: 'linkGuestMemfd' });
    assert.match(error.message, /KVM_LINK_GUEST_MEMFD/);
  });

  it('terminate strategies without terminateVm name KVM_TDX_TERMINATE_VM', () => {
    const { doc } = hostWithVms(makeHost(MAINLINE), 1);
    for (const [action, strategy] of [
      ['reboot', 'terminate'],
      ['reboot', 'reuse'],
      ['terminate', 'terminate'],
    ] as const) {
      const error = refused(
        doc,
        (d) => submitOperation(d, request('vm1', action, strategy)),
        KernelFeatureMissingError,
      );
      assert.equal(error.feature, 'KVM_TDX_TERMINATE_VM', `${action} ${strategy}`);
      assert.deepEqual(error.details, { feature: 'KVM_TDX_TERMINATE_VM', switch: 'terminateVm' });
      assert.match(error.message, /KVM_TDX_TERMINATE_VM/);
    }
  });

  it('a stopped VM is refused a strategy its kernel lacks, too', () => {
    // Stop the VM by cancelling a running reboot.
    const booted = hostWithVms(makeHost(V4), 1);
    const submitted = submitOperation(booted.doc, request('vm1', 'reboot', 'cold', 'r'));
    const first = drive(submitted.doc, 'r', booted.nowMs, { stopWhen: () => true });
    const cancelled = drive(requestCancel(first.doc, 'r', first.nowMs).doc, 'r', first.nowMs);
    assert.equal(cancelled.doc.vms.vm1?.state, 'stopped');
    const error = refused(
      cancelled.doc,
      (d) => submitOperation(d, request('vm1', 'reboot', 'reuse')),
      KernelFeatureMissingError,
    );
    assert.equal(error.feature, 'KVM_LINK_GUEST_MEMFD');
  });

  for (const kernel of ALL_KERNELS) {
    it(`accepts exactly the strategies the kernel can run (${kernelLabel(kernel)})`, () => {
      const { doc } = hostWithVms(makeHost(kernel), 1);
      const vmBefore = vmView(doc, doc.vms.vm1!);
      for (const strategy of REBOOT_STRATEGIES) {
        const ok = canReboot(kernel, strategy);
        if (!ok) {
          refused(
            doc,
            (d) => submitOperation(d, request('vm1', 'reboot', strategy)),
            KernelFeatureMissingError,
          );
          continue;
        }
        const { doc: next, op } = submitOperation(doc, request('vm1', 'reboot', strategy));
        assert.equal(jobView(op, 1000).state, 'queued');
        assert.equal(next.vms.vm1?.state, 'rebooting');
        assert.equal(next.vms.vm1?.activeJob, 'op');
        assert.equal(next.ops.op, op);
        assert.equal(op.previousVmState, 'running');
        assert.equal(op.action, 'reboot');
        assert.equal(op.strategy, strategy);
        // Submitting does not touch the host.
        assert.equal(next.sim, doc.sim);
        assert.deepEqual(vmView(doc, doc.vms.vm1!), vmBefore);
      }
      for (const strategy of TERMINATE_STRATEGIES) {
        if (!canTerminate(kernel, strategy)) {
          refused(
            doc,
            (d) => submitOperation(d, request('vm1', 'terminate', strategy)),
            KernelFeatureMissingError,
          );
          continue;
        }
        const { doc: next } = submitOperation(doc, request('vm1', 'terminate', strategy));
        assert.equal(next.vms.vm1?.state, 'terminating');
      }
    });
  }

  it('cancelling an unknown job is not found', () => {
    const { doc } = hostWithVms(makeHost(MAINLINE), 1);
    refused(doc, (d) => requestCancel(d, 'nope', 0), NotFoundError);
  });
});

describe('in place (the offline engine gives its document up)', () => {
  it('createVm and submitOperation give the same document and operation as the pure calls', () => {
    const { doc, nowMs } = hostWithVms(makeHost(V4_LINK), 2);
    const boot = { vmId: 'vm3', opId: 'boot-vm3', nowMs, vcpus: 2, memoryBytes: GIB_BYTES };
    const created = createVm(doc, boot);
    const own = structuredClone(doc);
    const createdInPlace = createVm(own, { ...boot, inPlace: true });
    assert.equal(createdInPlace.doc, own);
    assert.deepEqual(createdInPlace, created);

    const reboot: OperationRequest = {
      opId: 'reboot-vm1',
      vmId: 'vm1',
      action: 'reboot',
      strategy: 'reuse',
      nowMs,
    };
    const submitted = submitOperation(created.doc, reboot);
    const submittedInPlace = submitOperation(own, { ...reboot, inPlace: true });
    assert.equal(submittedInPlace.doc, own);
    assert.deepEqual(submittedInPlace, submitted);
  });
});

describe('createVm', () => {
  const ok = { vmId: 'vm1', opId: 'boot', nowMs: 0 };

  it('queues a boot: the VM is booting with no generation yet', () => {
    const { doc, vm, op } = createVm(makeHost(MAINLINE), {
      ...ok,
      vcpus: 2,
      memoryBytes: GIB_BYTES,
    });
    const view = vmView(doc, vm);
    assert.equal(view.state, 'booting');
    assert.equal(view.generation, 0);
    assert.equal(view.activeJob, 'boot');
    assert.equal(view.hkid, null);
    assert.deepEqual(view.guestMemfds, []);
    assert.equal(view.memoryGiB, 1);
    const job = jobView(op, 0);
    assert.equal(job.state, 'queued');
    assert.equal(job.action, 'boot');
    assert.equal(job.strategy, null);
    assert.equal(job.progress.fraction, 0);
    assert.ok(job.steps.every((s) => s.state === 'pending'));
    assert.equal(doc.ops.boot, op);
  });

  for (const [vcpus, memoryBytes, what] of [
    [0, GIB_BYTES, 'no vCPU'],
    [-1, GIB_BYTES, 'negative vCPUs'],
    [1.5, GIB_BYTES, 'a fractional vCPU count'],
    [Number.NaN, GIB_BYTES, 'NaN vCPUs'],
    [2, 0, 'no memory'],
    [2, -2 * MIB, 'negative memory'],
    [2, 3 * MIB, 'memory not a multiple of 2 MiB'],
    [2, 2 * MIB, 'memory smaller than the 4 MiB firmware region'],
    [2, Number.POSITIVE_INFINITY, 'infinite memory'],
  ] as const) {
    it(`refuses ${what} as an invalid request`, () => {
      const error = refused(
        makeHost(MAINLINE),
        (d) => createVm(d, { ...ok, vcpus, memoryBytes }),
        InvalidRequestError,
      );
      assert.equal(error.code, 'invalid_request');
    });
  }

  it('refuses a VM id that exists already', () => {
    const { doc } = hostWithVms(makeHost(MAINLINE), 1);
    refused(
      doc,
      (d) => createVm(d, { vmId: 'vm1', opId: 'x', vcpus: 1, memoryBytes: GIB_BYTES, nowMs: 0 }),
      VmExistsError,
    );
  });

  it('refuses a VM larger than the host as no capacity', () => {
    const host = makeHost(MAINLINE, { memoryGiB: 16 });
    const error = refused(
      host,
      (d) => createVm(d, { ...ok, vcpus: 2, memoryBytes: 16 * GIB_BYTES }),
      NoCapacityError,
    );
    assert.equal(error.code, 'no_capacity');
    assert.deepEqual(error.details, { hostId: 'h1' });
    assert.match(error.message, /GiB free/);
  });

  it('refuses more vCPUs than the host has CPUs', () => {
    const error = refused(
      makeHost(MAINLINE, { cpus: 4 }),
      (d) => createVm(d, { ...ok, vcpus: 5, memoryBytes: GIB_BYTES }),
      NoCapacityError,
    );
    assert.match(error.message, /CPUs/);
  });

  it('refuses a VM when every HKID is taken', () => {
    const { doc } = hostWithVms(makeHost(MAINLINE, { hkids: 2 }), 2);
    const error = refused(
      doc,
      (d) => createVm(d, { ...ok, vmId: 'vm3', vcpus: 1, memoryBytes: GIB_BYTES }),
      NoCapacityError,
    );
    assert.match(error.message, /HKID/);
  });

  it('counts the misc cgroup limit on HKIDs', () => {
    const { doc } = hostWithVms(makeHost(MAINLINE, { hkids: 8, hkidCgroupLimit: 2 }), 2);
    assert.equal(hostCapacity(doc).freeHkids, 0);
    const error = refused(
      doc,
      (d) => createVm(d, { ...ok, vmId: 'vm3', vcpus: 1, memoryBytes: GIB_BYTES }),
      NoCapacityError,
    );
    assert.match(error.message, /HKID/);
  });

  it('reserves memory for a queued boot: two 40 GiB VMs do not fit on a 64 GiB host', () => {
    const host = makeHost(MAINLINE, { memoryGiB: 64 });
    const first = createVm(host, { ...ok, vcpus: 4, memoryBytes: 40 * GIB_BYTES });
    // Nothing has run: the host's memory is all free, yet the first VM's boot holds its share.
    assert.equal(first.doc.sim.freePages, host.sim.freePages);
    refused(
      first.doc,
      (d) =>
        createVm(d, {
          vmId: 'vm2',
          opId: 'boot2',
          nowMs: 0,
          vcpus: 4,
          memoryBytes: 40 * GIB_BYTES,
        }),
      NoCapacityError,
    );
    // A smaller one still fits beside it.
    const small = createVm(first.doc, {
      vmId: 'vm3',
      opId: 'boot3',
      nowMs: 0,
      vcpus: 4,
      memoryBytes: 16 * GIB_BYTES,
    });
    assert.equal(small.vm.state, 'booting');
    // Once the first boot is cancelled, its share is free again.
    const cancelled = requestCancel(first.doc, 'boot', 1).doc;
    assert.doesNotThrow(() =>
      createVm(cancelled, {
        vmId: 'vm2',
        opId: 'boot2',
        nowMs: 1,
        vcpus: 4,
        memoryBytes: 40 * GIB_BYTES,
      }),
    );
  });

  it('reserves an HKID for a queued boot', () => {
    const host = makeHost(MAINLINE, { hkids: 1 });
    const first = createVm(host, { ...ok, vcpus: 1, memoryBytes: GIB_BYTES });
    assert.equal(first.doc.sim.freeHkids.length, 1);
    refused(
      first.doc,
      (d) =>
        createVm(d, { vmId: 'vm2', opId: 'boot2', nowMs: 0, vcpus: 1, memoryBytes: GIB_BYTES }),
      NoCapacityError,
    );
  });

  it('reserves memory for a queued reboot of a stopped VM (it boots too)', () => {
    // vm1 (40 GiB) is stopped by a cancelled reboot: it holds nothing on the host.
    const booted = hostWithVms(makeHost(MAINLINE, { memoryGiB: 64 }), 1, {
      vcpus: 4,
      memoryBytes: 40 * GIB_BYTES,
    });
    const submitted = submitOperation(booted.doc, request('vm1', 'reboot', 'cold', 'r'));
    const first = drive(submitted.doc, 'r', booted.nowMs, { stopWhen: () => true });
    const stopped = drive(requestCancel(first.doc, 'r', first.nowMs).doc, 'r', first.nowMs);
    assert.equal(stopped.doc.vms.vm1?.state, 'stopped');
    // Its reboot is queued: it will take 40 GiB again.
    const queued = submitOperation(stopped.doc, {
      ...request('vm1', 'reboot', 'cold', 'again'),
      nowMs: stopped.nowMs,
    });
    refused(
      queued.doc,
      (d) =>
        createVm(d, {
          vmId: 'vm2',
          opId: 'boot2',
          nowMs: stopped.nowMs,
          vcpus: 4,
          memoryBytes: 40 * GIB_BYTES,
        }),
      NoCapacityError,
    );
    const again = drive(queued.doc, 'again', stopped.nowMs);
    assert.equal(finishedOp(again, 'again').state, 'succeeded');
    assert.equal(again.doc.vms.vm1?.generation, 2);
  });

  it('the reservation never promises less than a boot will take', () => {
    for (const kernel of [MAINLINE, { ...V4_LINK, privatePageSize: '2M' as const }]) {
      for (const [vcpus, gib] of [
        [1, 0.5],
        [2, 1],
        [8, 40],
      ] as const) {
        const host = makeHost(kernel);
        const memoryBytes = gib * GIB_BYTES;
        const created = createVm(host, { ...ok, vcpus, memoryBytes });
        const reserved = hostCapacity(host).freePages - hostCapacity(created.doc).freePages;
        assert.equal(reserved, pagesNeeded(vcpus, memoryBytes));
        const driven = drive(created.doc, 'boot', 0);
        const used = host.sim.freePages - driven.doc.sim.freePages;
        assert.ok(used <= reserved, `${vcpus} vCPUs ${gib} GiB: used ${used} <= ${reserved}`);
        assert.ok(used >= memoryBytes / PAGE_BYTES);
        const final = hostCapacity(driven.doc).freePages;
        for (const commit of driven.commits) {
          // What placement sees while the boot runs is never more than what will be left.
          assert.ok(hostCapacity(commit.doc).freePages <= final);
          assert.ok(hostCapacity(commit.doc).freeHkids <= hostCapacity(driven.doc).freeHkids);
        }
      }
    }
  });
});
