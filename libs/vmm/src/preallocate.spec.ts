// Preallocation as an option of a VM's boot plan: the guest memory is taken from the host when
// the guest_memfd is created (fallocate with FALLOC_FL_KEEP_SIZE), before the guest touches it,
// and a reuse reboot keeps all of it.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  ALL_KERNELS,
  type HostState,
  type KernelFeatures,
  PAGE_BYTES,
  createHost,
  kernelLabel,
  makeHostConfig,
  memoryUsage,
} from '#tdx-sim';
import { type VmShape, handlesAfter, planFor, runPlan, shapeOfGiB } from './index.js';

/** 1 GiB of guest memory of which the guest touches only 64 MiB. */
const SHAPE: VmShape = {
  ...shapeOfGiB(2, 1),
  faultInBytes: 64 * 1024 * 1024,
  preallocate: true,
};
const GUEST_PAGES = SHAPE.memoryBytes / PAGE_BYTES;

function newHost(kernel: KernelFeatures): HostState {
  return createHost(makeHostConfig({ memoryGiB: 8, hkids: 4, kernel }));
}

describe('preallocated guest memory', () => {
  it('the boot plan fallocates each new guest_memfd right after creating it', () => {
    const planned = planFor({ action: 'boot' }, ALL_KERNELS[0] as KernelFeatures, SHAPE);
    assert.ok(planned.ok);
    const names = planned.plan.steps.map((s) => s.name);
    assert.equal(names.indexOf('preallocate-guest-memfd'), names.indexOf('create-guest-memfd') + 1);
    const plain = planFor({ action: 'boot' }, ALL_KERNELS[0] as KernelFeatures, {
      ...SHAPE,
      preallocate: false,
    });
    assert.ok(plain.ok && !plain.plan.steps.some((s) => s.name === 'preallocate-guest-memfd'));
  });

  for (const kernel of ALL_KERNELS) {
    it(`a boot takes all the memory from the host, not only what the guest touches [${kernelLabel(kernel)}]`, () => {
      const host = newHost(kernel);
      const planned = planFor({ action: 'boot' }, kernel, SHAPE);
      assert.ok(planned.ok);
      const run = runPlan(host, planned.plan);
      assert.ok(run.ok, run.failure?.message);
      assert.equal(run.summary.bytesAllocated, GUEST_PAGES * PAGE_BYTES);
      const usage = memoryUsage(run.state);
      assert.equal(usage.private + usage.retained, GUEST_PAGES);
    });
  }

  for (const kernel of ALL_KERNELS.filter((k) => k.terminateVm !== 'none' && k.linkGuestMemfd)) {
    it(`a reuse reboot keeps it all: nothing allocated, nothing freed but metadata [${kernelLabel(kernel)}]`, () => {
      const host = newHost(kernel);
      const booted = planFor({ action: 'boot' }, kernel, SHAPE);
      assert.ok(booted.ok);
      const first = runPlan(host, booted.plan);
      assert.ok(first.ok);
      const handles = handlesAfter(SHAPE, first.bindings);
      const planned = planFor({ action: 'reboot', strategy: 'reuse' }, kernel, SHAPE, handles);
      assert.ok(planned.ok);
      assert.ok(!planned.plan.steps.some((s) => s.name === 'preallocate-guest-memfd'));
      const second = runPlan(first.state, planned.plan);
      assert.ok(second.ok, second.failure?.message);
      assert.equal(second.summary.bytesAllocated, 0);
      const usage = memoryUsage(second.state);
      assert.equal(usage.private + usage.retained, GUEST_PAGES, 'the whole inode is kept');
    });
  }
});
