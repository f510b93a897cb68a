/**
 * Boot, reboot and terminate flows run end to end on simulated hosts: what an operator sees in
 * the run's timeline and summary, and what is left on the host afterwards (domain sections 4-7).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  type CostContext,
  GIB_BYTES,
  type HostConfigInput,
  type HostState,
  type KernelFeatures,
  MAINLINE_KERNEL,
  PAGES_PER_GIB,
  PAGE_BYTES,
  type PrivatePageSize,
  type TerminateVmSemantics,
  applyCall,
  applyCalls,
  checkInvariants,
  countPages,
  createHost,
  dynamicRemovalSeconds,
  freeSeconds,
  hkidReleaseSeconds,
  hkidUsage,
  makeHostConfig,
  memoryUsage,
  settleAll,
  ALL_KERNELS,
  kernelLabel,
} from '#tdx-sim';
import {
  type Intent,
  type Plan,
  type PlanRun,
  REBOOT_STRATEGIES,
  type RebootStrategy,
  type StepName,
  TERMINATE_STRATEGIES,
  type TimelineEntry,
  type TerminateStrategy,
  type VmHandles,
  type VmShape,
  bindResults,
  handlesAfter,
  planFor,
  resolveStep,
  runPlan,
  shapeOfGiB,
} from './index.js';

const MIB = 1024 * 1024;
const SHAPE: VmShape = shapeOfGiB(4, 2);
const GUEST_PAGES = SHAPE.memoryBytes / PAGE_BYTES;

function kernel(
  terminateVm: TerminateVmSemantics,
  linkGuestMemfd: boolean,
  privatePageSize: PrivatePageSize = '4K',
): KernelFeatures {
  return { ...MAINLINE_KERNEL, terminateVm, linkGuestMemfd, privatePageSize };
}

/** A host with room for a few VMs of {@link SHAPE}: 16 GiB, 8 HKIDs, 2 packages, 32 CPUs. */
function newHost(k: KernelFeatures, input: HostConfigInput = {}): HostState {
  return createHost(
    makeHostConfig({ memoryGiB: 16, hkids: 8, packages: 2, cpus: 32, ...input, kernel: k }),
  );
}

function plan(intent: Intent, state: HostState, shape: VmShape, handles?: VmHandles): Plan {
  const result = planFor(intent, state.config.kernel, shape, handles);
  if (!result.ok) assert.fail(`plan refused: ${result.refusal.message}`);
  return result.plan;
}

function mustRun(state: HostState, p: Plan): PlanRun {
  const run = runPlan(state, p);
  assert.ok(run.ok, `run failed at ${run.failure?.step ?? '?'}: ${run.failure?.message ?? ''}`);
  return run;
}

interface Booted {
  state: HostState;
  handles: VmHandles;
  run: PlanRun;
}

function boot(state: HostState, shape: VmShape = SHAPE): Booted {
  const run = mustRun(state, plan({ action: 'boot' }, state, shape));
  return { state: run.state, handles: handlesAfter(shape, run.bindings), run };
}

function reboot(
  strategy: RebootStrategy,
  vm: Booted,
  shape: VmShape = SHAPE,
): Booted & { before: HostState } {
  const run = mustRun(vm.state, plan({ action: 'reboot', strategy }, vm.state, shape, vm.handles));
  return { before: vm.state, state: run.state, handles: handlesAfter(shape, run.bindings), run };
}

/** The guest_memfd inode ids behind a VM's handles. */
function inodesOf(state: HostState, handles: VmHandles): number[] {
  return handles.guestMemfds.map((m) => {
    const file = state.files[m.fd];
    assert.ok(file?.kind === 'gmem', `fd ${m.fd} is not an open guest_memfd`);
    return file.inode;
  });
}

function vmIdOf(state: HostState, handles: VmHandles): number {
  const file = state.files[handles.vm];
  assert.ok(file?.kind === 'vm', `fd ${handles.vm} is not a VM fd`);
  return file.vm;
}

/** Control (TDR, TDCS, vCPU) and S-EPT pages of a VM: all a reuse reboot may give back. */
function metadataPages(state: HostState, handles: VmHandles): number {
  const vm = state.vms[vmIdOf(state, handles)];
  assert.ok(vm !== undefined);
  return vm.controlPages + vm.septPages + vm.vcpus.reduce((sum, v) => sum + v.controlPages, 0);
}

function record(run: PlanRun, name: StepName, track?: TimelineEntry['track']): TimelineEntry {
  const found = run.timeline.find(
    (r) => r.name === name && (track === undefined || r.track === track),
  );
  assert.ok(found, `no ${name} step in the timeline`);
  return found;
}

/** The new VM runs: RUNNABLE, not dead, with an HKID, every vCPU inside KVM_RUN, all memory mapped. */
function assertRunning(state: HostState, handles: VmHandles, shape: VmShape): void {
  const vm = state.vms[vmIdOf(state, handles)];
  assert.ok(vm !== undefined);
  assert.equal(vm.tdState, 'RUNNABLE');
  assert.equal(vm.dead, false);
  assert.notEqual(vm.hkid, null);
  assert.equal(vm.vcpus.length, shape.vcpus);
  assert.ok(vm.vcpus.every((v) => v.inIoctl));
  assert.equal(vm.mappedPages, shape.memoryBytes / PAGE_BYTES);
}

function closeTo(actual: number, expected: number, relative: number, what: string): void {
  assert.ok(
    Math.abs(actual - expected) <= Math.abs(expected) * relative,
    `${what}: ${actual} is not within ${relative * 100}% of ${expected}`,
  );
}

const REBOOT_ALLOWED: Record<RebootStrategy, (k: KernelFeatures) => boolean> = {
  cold: () => true,
  terminate: (k) => k.terminateVm !== 'none',
  reuse: (k) => k.terminateVm !== 'none' && k.linkGuestMemfd,
};
const TERMINATE_ALLOWED: Record<TerminateStrategy, (k: KernelFeatures) => boolean> = {
  close: () => true,
  terminate: (k) => k.terminateVm !== 'none',
};

describe('boot', () => {
  for (const k of ALL_KERNELS) {
    it(`on ${kernelLabel(k)}: the VM runs with fresh memory`, () => {
      const host = newHost(k);
      const vm = boot(host);
      assertRunning(vm.state, vm.handles, SHAPE);
      assert.deepEqual(checkInvariants(vm.state), []);
      assert.equal(vm.run.summary.bytesAllocated, SHAPE.memoryBytes);
      assert.equal(vm.run.summary.bytesReused, 0);
      assert.equal(vm.run.summary.bytesFreed, 0);
      assert.equal(vm.run.summary.hkidHeldSeconds, 0, 'no old VM held an HKID');
      assert.equal(vm.run.summary.downtimeSeconds, record(vm.run, 'run').endSeconds);
      assert.equal(hkidUsage(vm.state).owned, 1);
      assert.ok(vm.run.timeline.every((r) => r.waitedSeconds === 0 && r.state === 'done'));
    });
  }
});

describe('reboot, every strategy on every kernel that allows it', () => {
  for (const strategy of REBOOT_STRATEGIES) {
    for (const k of ALL_KERNELS.filter(REBOOT_ALLOWED[strategy])) {
      it(`${strategy} on ${kernelLabel(k)}`, () => {
        const vm = boot(newHost(k));
        const oldInodes = inodesOf(vm.state, vm.handles);
        const oldVmId = vmIdOf(vm.state, vm.handles);
        const oldMetadata = metadataPages(vm.state, vm.handles);
        const freeBefore = vm.state.freePages;
        const next = reboot(strategy, vm);
        const { summary } = next.run;

        assert.deepEqual(checkInvariants(next.state), []);
        assertRunning(next.state, next.handles, SHAPE);
        // The old VM is gone, with all its fds; only the new one remains.
        assert.equal(next.state.vms[oldVmId], undefined);
        assert.deepEqual(Object.keys(next.state.vms), [String(vmIdOf(next.state, next.handles))]);
        for (const fd of [vm.handles.vm, ...vm.handles.vcpus, vm.handles.guestMemfds[0]?.fd]) {
          assert.equal(next.state.files[String(fd)], undefined, `old fd ${String(fd)} still open`);
        }
        assert.equal(hkidUsage(next.state).owned, 1);
        assert.equal(hkidUsage(next.state).free, 7);
        // Nothing leaked: the new VM maps all its memory, nothing orphaned or retained.
        const usage = memoryUsage(next.state);
        assert.equal(usage.orphaned, 0);
        assert.equal(usage.retained, 0);
        assert.equal(usage.private, GUEST_PAGES);
        assert.equal(Object.keys(next.state.inodes).length, 1);
        // Same shape, same footprint afterwards.
        assert.equal(next.state.freePages, freeBefore);

        const newInodes = inodesOf(next.state, next.handles);
        if (strategy === 'reuse') {
          assert.deepEqual(newInodes, oldInodes, 'the new VM boots on the old inodes');
          assert.equal(summary.bytesAllocated, 0);
          assert.equal(summary.bytesReused, SHAPE.memoryBytes);
          // Only the old VM's control and S-EPT pages went back to the host.
          assert.equal(summary.bytesFreed, oldMetadata * PAGE_BYTES);
          assert.ok(summary.bytesFreed < SHAPE.memoryBytes / 100);
        } else {
          assert.equal(
            newInodes.some((i) => oldInodes.includes(i)),
            false,
            'new inodes',
          );
          assert.equal(summary.bytesAllocated, SHAPE.memoryBytes);
          assert.equal(summary.bytesReused, 0);
          assert.equal(summary.bytesFreed, SHAPE.memoryBytes + oldMetadata * PAGE_BYTES);
        }
        // Every page of the old VM is taken back from the TD, by one way or the other.
        assert.equal(summary.bytesReclaimed, SHAPE.memoryBytes + oldMetadata * PAGE_BYTES);
        assert.ok(summary.downtimeSeconds > 0);
        assert.equal(summary.downtimeSeconds, record(next.run, 'run').endSeconds);
        assert.ok(summary.totalSeconds >= summary.downtimeSeconds);
        assert.ok(next.run.timeline.every((r) => r.state === 'done'));
      });
    }
  }
});

describe('terminate, every strategy on every kernel that allows it', () => {
  for (const strategy of TERMINATE_STRATEGIES) {
    for (const k of ALL_KERNELS.filter(TERMINATE_ALLOWED[strategy])) {
      it(`${strategy} on ${kernelLabel(k)}: the VM is gone and the host has everything back`, () => {
        const host = newHost(k);
        const vm = boot(host);
        const metadata = metadataPages(vm.state, vm.handles);
        const run = mustRun(
          vm.state,
          plan({ action: 'terminate', strategy }, vm.state, SHAPE, vm.handles),
        );
        assert.deepEqual(checkInvariants(run.state), []);
        assert.deepEqual(run.state.vms, {});
        assert.deepEqual(run.state.files, {});
        assert.deepEqual(run.state.inodes, {});
        assert.deepEqual(run.state.mmaps, {});
        assert.deepEqual(run.state.inFlight, []);
        assert.equal(run.state.freePages, host.freePages);
        assert.deepEqual(run.state.freeHkids, host.freeHkids);
        assert.equal(run.summary.bytesFreed, SHAPE.memoryBytes + metadata * PAGE_BYTES);
        assert.equal(run.summary.bytesAllocated, 0);
        assert.equal(run.summary.bytesReused, 0);
        assert.equal(run.summary.downtimeSeconds, run.summary.totalSeconds);
        assert.ok(run.summary.reclaimSeconds > 0);
      });
    }
  }

  it('terminate first is faster than close (TEARDOWN reclaim vs Dynamic Page Removal)', () => {
    const k = kernel('v4', false);
    const vm = boot(newHost(k), shapeOfGiB(16, 8));
    const shape = shapeOfGiB(16, 8);
    const seconds = (strategy: TerminateStrategy) =>
      mustRun(vm.state, plan({ action: 'terminate', strategy }, vm.state, shape, vm.handles))
        .summary.reclaimSeconds;
    assert.ok(seconds('terminate') * 2 < seconds('close'));
  });
});

/** One row of a step-by-step trace: host memory right after a step, its releases settled. */
interface TraceRow {
  step: StepName;
  freePages: number;
  /** Pages held by guest_memfd inodes (the guest memory, wherever it is mapped). */
  inodePages: number;
}

/**
 * Runs a plan's steps one at a time in plan order (the order the runner uses when the boot
 * track waits for the whole teardown), settling what each step frees right away, and records
 * host memory after every step.
 */
function stepThrough(initial: HostState, p: Plan): { state: HostState; trace: TraceRow[] } {
  let state = initial;
  let bindings = { ...p.initialBindings };
  const trace: TraceRow[] = [];
  for (const step of p.steps) {
    const result = applyCalls(state, resolveStep(step, bindings));
    assert.equal(result.failedAt, null, `step ${step.name} refused`);
    bindings = bindResults(step, result.outcomes, bindings);
    state = settleAll(result.state);
    assert.deepEqual(checkInvariants(state), [], `after ${step.name}`);
    const inodePages = Object.values(state.inodes).reduce(
      (sum, inode) => sum + countPages(inode.allocated),
      0,
    );
    trace.push({ step: step.name, freePages: state.freePages, inodePages });
  }
  return { state, trace };
}

describe("the seed's reuse scenario never returns the guest memory to the host", () => {
  for (const k of [kernel('v4', true), kernel('aug2025', true), kernel('v4', true, '2M')]) {
    it(`on ${kernelLabel(k)}: free memory never rises by the guest size`, () => {
      const vm = boot(newHost(k));
      const freeBefore = vm.state.freePages;
      const metadata = metadataPages(vm.state, vm.handles);
      const reuse = plan({ action: 'reboot', strategy: 'reuse' }, vm.state, SHAPE, vm.handles);
      const { trace, state } = stepThrough(vm.state, reuse);

      const maxFree = Math.max(...trace.map((t) => t.freePages));
      assert.ok(
        maxFree - freeBefore <= metadata,
        `free memory rose by ${maxFree - freeBefore} pages; only ${metadata} metadata pages may come back`,
      );
      assert.ok(maxFree - freeBefore < GUEST_PAGES / 100);
      // The guest memory stays in the inode at every step, never more, never less.
      for (const row of trace) assert.equal(row.inodePages, GUEST_PAGES, `after ${row.step}`);
      assert.equal(state.freePages, freeBefore);

      // The runner agrees: what it frees is only control and S-EPT pages.
      const run = mustRun(vm.state, reuse);
      assert.equal(run.summary.bytesFreed, metadata * PAGE_BYTES);
      assert.ok(run.summary.bytesFreed < SHAPE.memoryBytes / 100);
      assert.equal(run.summary.bytesAllocated, 0);
      assert.equal(run.state.freePages, state.freePages);
    });
  }

  it('control: the same trace of a cold reboot shows the guest memory going back', () => {
    const vm = boot(newHost(kernel('v4', true)));
    const freeBefore = vm.state.freePages;
    const cold = plan({ action: 'reboot', strategy: 'cold' }, vm.state, SHAPE, vm.handles);
    const { trace } = stepThrough(vm.state, cold);
    const maxFree = Math.max(...trace.map((t) => t.freePages));
    assert.ok(maxFree - freeBefore >= GUEST_PAGES);
    assert.equal(trace.find((t) => t.step === 'close-guest-memfd')?.inodePages, 0);
  });

  it('reuse on a host with memory for barely one VM never waits for memory', () => {
    const k = kernel('aug2025', true);
    const vm = boot(newHost(k, { memoryBytes: SHAPE.memoryBytes + 32 * MIB }));
    const next = reboot('reuse', vm);
    assert.ok(next.run.timeline.every((r) => r.waitedSeconds === 0 && r.errno === undefined));
  });

  it('reuse of a VM whose guest_memfd the VMM has unmapped runs, and keeps the inode', () => {
    const vm = boot(newHost(kernel('aug2025', true)));
    const map = vm.handles.guestMemfds[0]?.map;
    assert.ok(typeof map === 'number');
    const unmapped = applyCall(vm.state, { op: 'munmap', map });
    assert.ok(unmapped.outcome.ok);
    const handles: VmHandles = {
      ...vm.handles,
      guestMemfds: vm.handles.guestMemfds.map((m) => ({ ...m, map: null })),
    };
    const next = reboot('reuse', { ...vm, state: unmapped.state, handles });
    assert.deepEqual(checkInvariants(next.state), []);
    assertRunning(next.state, next.handles, SHAPE);
    assert.deepEqual(inodesOf(next.state, next.handles), inodesOf(vm.state, vm.handles));
    assert.equal(next.run.summary.bytesAllocated, 0);
    assert.equal(memoryUsage(next.state).orphaned, 0);
  });

  for (const gib of [1, 3]) {
    it(`reuse into a ${gib} GiB VM from a 2 GiB one is refused and the VM keeps running`, () => {
      const vm = boot(newHost(kernel('v4', true)));
      const before = structuredClone(vm.state);
      const result = planFor(
        { action: 'reboot', strategy: 'reuse' },
        vm.state.config.kernel,
        shapeOfGiB(SHAPE.vcpus, gib),
        vm.handles,
      );
      assert.ok(!result.ok);
      assert.equal(result.refusal.code, 'INVALID_VM_SHAPE');
      assert.deepEqual(vm.state, before);
      assertRunning(vm.state, vm.handles, SHAPE);
    });
  }

  it('ten reuse reboots in a row: nothing leaks, the inode stays the same', () => {
    let vm: Booted = boot(newHost(kernel('v4', true)));
    const inodes = inodesOf(vm.state, vm.handles);
    const free = vm.state.freePages;
    for (let i = 0; i < 10; i += 1) {
      vm = reboot('reuse', vm);
      assert.deepEqual(checkInvariants(vm.state), []);
      assert.equal(vm.state.freePages, free, `reboot ${i + 1}`);
      assert.deepEqual(inodesOf(vm.state, vm.handles), inodes);
      assert.equal(Object.keys(vm.state.vms).length, 1);
      assert.equal(memoryUsage(vm.state).orphaned, 0);
    }
  });
});

describe('HKID capacity', () => {
  /** A host with `hkids` HKIDs and `vms` VMs booted; returns the first VM to reboot. */
  function fullHost(k: KernelFeatures, hkids: number, vms: number): Booted {
    let state = newHost(k, { hkids, memoryGiB: 32 });
    let first: Booted | undefined;
    for (let i = 0; i < vms; i += 1) {
      const vm = boot(state);
      first ??= vm;
      state = vm.state;
    }
    assert.ok(first !== undefined);
    return { ...first, state };
  }

  for (const n of [1, 2, 3]) {
    it(`cold reboot with ${n} of ${n} HKIDs taken: the new VM waits for the old one's destruction`, () => {
      const vm = fullHost(kernel('none', false), n, n);
      assert.equal(vm.state.freeHkids.length, 0);
      const next = reboot('cold', vm);
      const init = record(next.run, 'init-vm');
      const closeVm = record(next.run, 'close-vm');
      assert.equal(init.errno, 'ENOSPC');
      assert.ok(init.waitedSeconds > 0);
      assert.ok(init.startSeconds >= closeVm.endSeconds, 'init-vm ran before the old VM was gone');
      assert.equal(init.waitedSeconds, init.startSeconds - init.readySeconds);
      // It waited for the whole Dynamic Page Removal: many seconds.
      assert.ok(init.waitedSeconds > record(next.run, 'close-guest-memfd').virtualSeconds);
      assert.deepEqual(checkInvariants(next.state), []);
      assert.equal(next.state.freeHkids.length, 0);
    });
  }

  it('cold reboot with a spare HKID: the new VM initialises beside the teardown', () => {
    const vm = fullHost(kernel('none', false), 3, 2);
    const next = reboot('cold', vm);
    const init = record(next.run, 'init-vm');
    assert.equal(init.waitedSeconds, 0);
    assert.equal(init.errno, undefined);
    assert.ok(init.startSeconds < record(next.run, 'close-guest-memfd').endSeconds);
    assert.ok(next.run.timeline.every((r) => r.waitedSeconds === 0));
    // Overlap makes the reboot shorter than at full capacity.
    const full = reboot('cold', fullHost(kernel('none', false), 2, 2));
    assert.ok(next.run.summary.downtimeSeconds < full.run.summary.downtimeSeconds);
  });

  for (const terminateVm of ['v4', 'aug2025'] as const) {
    it(`terminate reboot at full capacity (${terminateVm}) waits only for the HKID release`, () => {
      const k = kernel(terminateVm, false);
      const vm = fullHost(k, 2, 2);
      const next = reboot('terminate', vm);
      const init = record(next.run, 'init-vm');
      const terminate = record(next.run, 'terminate-vm');
      assert.ok(init.startSeconds >= terminate.endSeconds);
      assert.ok(init.startSeconds - terminate.endSeconds < 0.01);
      const release = hkidReleaseSeconds(vm.state.config.costParams, SHAPE.vcpus, 2);
      closeTo(terminate.virtualSeconds, release, 0.001, 'terminate-vm cost');
      assert.ok(init.startSeconds < release + 0.01);
      // The cold reboot of the same host waits several times longer for its HKID.
      const cold = reboot('cold', fullHost(k, 2, 2));
      assert.ok(record(cold.run, 'init-vm').startSeconds > 3 * init.startSeconds);
      assert.ok(cold.run.summary.downtimeSeconds > 2 * next.run.summary.downtimeSeconds);
    });
  }

  it('the cgroup limit makes init-vm wait the same way (EBUSY)', () => {
    const vm = fullHost(kernel('none', false), 8, 2);
    const limited = {
      ...vm,
      state: { ...vm.state, config: { ...vm.state.config, hkidCgroupLimit: 2 } },
    };
    const next = reboot('cold', limited);
    const init = record(next.run, 'init-vm');
    assert.equal(init.errno, 'EBUSY');
    assert.ok(init.startSeconds >= record(next.run, 'close-vm').endSeconds);
  });
});

describe('memory pressure', () => {
  /** Room for one VM of SHAPE and its metadata, and 32 MiB more: not for two. */
  const tight: HostConfigInput = { memoryBytes: SHAPE.memoryBytes + 32 * MIB };

  it('cold reboot waits with ENOMEM until the old guest memory is freed', () => {
    const vm = boot(newHost(kernel('none', false), tight));
    const next = reboot('cold', vm);
    const waited = next.run.timeline.filter((r) => r.errno === 'ENOMEM');
    assert.ok(waited.length > 0, 'some boot step waited for memory');
    const freed = record(next.run, 'close-guest-memfd');
    for (const r of waited) {
      assert.equal(r.track, 'boot');
      assert.ok(r.waitedSeconds > 0);
      assert.ok(r.startSeconds >= freed.endSeconds, `${r.name} ran before the memory was freed`);
    }
    // The fault-in of the guest's memory is what cannot fit twice.
    assert.equal(record(next.run, 'run').errno, 'ENOMEM');
    assertRunning(next.state, next.handles, SHAPE);
    assert.deepEqual(checkInvariants(next.state), []);
  });

  it('terminate reboot waits too, but only for the fast TEARDOWN reclaim', () => {
    const k = kernel('v4', false);
    const cold = reboot('cold', boot(newHost(k, tight)));
    const terminate = reboot('terminate', boot(newHost(k, tight)));
    const run = record(terminate.run, 'run');
    assert.equal(run.errno, 'ENOMEM');
    assert.ok(run.startSeconds >= record(terminate.run, 'close-guest-memfd').endSeconds);
    assert.ok(terminate.run.summary.downtimeSeconds < cold.run.summary.downtimeSeconds);
  });

  it('on a host with memory for one VM, reuse has the shortest downtime, cold the longest', () => {
    const k = kernel('aug2025', true);
    const downtime = (strategy: RebootStrategy) =>
      reboot(strategy, boot(newHost(k, tight))).run.summary.downtimeSeconds;
    assert.ok(downtime('reuse') < downtime('terminate'));
    assert.ok(downtime('terminate') < downtime('cold'));
  });

  it('with room for two VMs nothing waits', () => {
    const next = reboot('cold', boot(newHost(kernel('none', false))));
    assert.ok(next.run.timeline.every((r) => r.errno === undefined));
  });
});

describe('summary.hkidHeldSeconds', () => {
  const shapes: VmShape[] = [shapeOfGiB(4, 2), shapeOfGiB(16, 8), shapeOfGiB(1, 1)];
  for (const shape of shapes) {
    const gib = shape.memoryBytes / GIB_BYTES;
    const pages = gib * PAGES_PER_GIB;
    const name = `${shape.vcpus} vCPUs, ${gib} GiB`;

    for (const strategy of ['terminate', 'reuse'] as const) {
      it(`${strategy}, ${name}: the HKID release cost (about 2.6 s on 2 packages)`, () => {
        const vm = boot(newHost(kernel('aug2025', true)), shape);
        const next = reboot(strategy, vm, shape);
        const release = hkidReleaseSeconds(vm.state.config.costParams, shape.vcpus, 2);
        closeTo(next.run.summary.hkidHeldSeconds, release, 0.01, 'hkidHeldSeconds');
        closeTo(next.run.summary.hkidHeldSeconds, 2.6, 0.01, 'hkidHeldSeconds');
        assert.equal(next.run.summary.hkidHeldSeconds, record(next.run, 'terminate-vm').endSeconds);
      });
    }

    it(`cold, ${name}: the whole Dynamic Page Removal (and the release)`, () => {
      const vm = boot(newHost(kernel('aug2025', true)), shape);
      const next = reboot('cold', vm, shape);
      const params = vm.state.config.costParams;
      const ctx: CostContext = { model: 'calibrated', params, pageSize: '4K' };
      const removal = dynamicRemovalSeconds(ctx, pages, shape.vcpus, gib);
      const release = hkidReleaseSeconds(params, shape.vcpus, 2);
      const held = next.run.summary.hkidHeldSeconds;
      assert.ok(held >= removal, `${held} s < ${removal} s of Dynamic Page Removal`);
      closeTo(held, removal + freeSeconds(params, pages) + release, 0.01, 'hkidHeldSeconds');
      assert.equal(held, record(next.run, 'close-vm').endSeconds);
    });
  }

  it('a boot holds no old HKID', () => {
    assert.equal(boot(newHost(kernel('none', false))).run.summary.hkidHeldSeconds, 0);
  });
});
