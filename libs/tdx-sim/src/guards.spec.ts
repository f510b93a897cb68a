// Guards and errnos of domain section 3, per kernel switch (section 7), table-driven: each case
// builds a small host, puts it in a precondition with a few calls, makes one call and checks the
// errno (a refused call must hand back the very same state object, untouched) or the success.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { SimCall } from './calls.js';
import type { KernelFeatures } from './kernel-switches.js';
import { applyCall, settleRelease } from './host.js';
import { countPages } from './ranges.js';
import type { HostState } from './state.js';
import {
  ALL_KERNELS,
  Driver,
  MIB,
  TWO_MIB,
  type Td,
  bootTd,
  defined,
  kernelLabel,
  smallHost,
} from './testing/harness.js';
import { type Expect, check, runCases } from './testing/cases.js';

const SPEC = { describe, it, assert };

const withTerminate = (k: KernelFeatures): boolean => k.terminateVm !== 'none';
const mainline = (k: KernelFeatures): boolean => k.terminateVm === 'none';
const withLink = (k: KernelFeatures): boolean => k.linkGuestMemfd;
const isAug2025 = (k: KernelFeatures): boolean => k.terminateVm === 'aug2025';
/** Kernels both with TERMINATE_VM and with KVM_LINK_GUEST_MEMFD. */
const terminateAndLink = (k: KernelFeatures): boolean => withTerminate(k) && withLink(k);

/** Builds a second guest_memfd of `bytes` on the VM of `vmFd`; returns its fd. */
function extraGmem(d: Driver, vmFd: number, bytes = 64 * MIB): number {
  return defined(d.ok({ op: 'KVM_CREATE_GUEST_MEMFD', vm: vmFd, bytes }).fd, 'gmem fd');
}

/**
 * Two running TDs viewing one inode (the second through KVM_LINK_GUEST_MEMFD): the first maps
 * inode pages [0, 6 MiB), the second, whose slot 0 covers the whole inode at GPA 0,
 * [32, 36 MiB). Both vCPUs are out of KVM_RUN.
 */
function twoViewers(d: Driver): { first: Td; second: Td } {
  const first = bootTd(d, 'exited');
  const created = d.ok({ op: 'KVM_CREATE_VM' });
  const second: Td = { vmFd: defined(created.fd, 'fd'), vmId: defined(created.vm, 'vm') };
  const linked = d.ok({
    op: 'KVM_LINK_GUEST_MEMFD',
    vm: second.vmFd,
    gmem: defined(first.gmemFd, 'gmem'),
  });
  second.gmemFd = defined(linked.fd, 'linked fd');
  second.inode = linked.inode;
  d.ok({
    op: 'KVM_SET_USER_MEMORY_REGION2',
    vm: second.vmFd,
    slot: 0,
    gpa: 0,
    bytes: 64 * MIB,
    gmem: second.gmemFd,
    gmemOffset: 0,
  });
  d.ok(initVm(second.vmFd));
  second.vcpuFd = defined(d.ok({ op: 'KVM_CREATE_VCPU', vm: second.vmFd }).fd, 'vcpu');
  d.ok({ op: 'KVM_TDX_INIT_VCPU', vcpu: second.vcpuFd });
  d.ok({ op: 'KVM_TDX_FINALIZE_VM', vm: second.vmFd });
  d.ok({ op: 'KVM_RUN', vcpu: second.vcpuFd, faultIn: { gpa: 32 * MIB, bytes: 4 * MIB } });
  d.ok({ op: 'vcpu_exit', vcpu: second.vcpuFd });
  return { first, second };
}

/**
 * A state no call sequence reaches (CREATE_VCPU needs an INITIALIZED TD): an UNINITIALIZED VM
 * with one vCPU and its fd, references kept consistent.
 */
function withVcpuBeforeInit(state: HostState, vmId: number): HostState {
  const copy = structuredClone(state);
  const vm = defined(copy.vms[vmId], 'vm');
  const fd = copy.next.fd++;
  vm.vcpus.push({ index: 0, state: 'UNINITIALIZED', inIoctl: false, controlPages: 0 });
  vm.refs += 1;
  copy.files[fd] = { fd, kind: 'vcpu', vm: vmId, vcpu: 0 };
  return copy;
}

/**
 * A state no call sequence reaches (the HKID goes only by TERMINATE, which kills the VM, or by
 * destruction): a live INITIALIZED TD whose HKID was taken back, with HKIDs still conserved.
 */
function withoutHkid(state: HostState, vmId: number): HostState {
  const copy = structuredClone(state);
  const vm = defined(copy.vms[vmId], 'vm');
  copy.freeHkids = [...copy.freeHkids, defined(vm.hkid, 'hkid')].sort((a, b) => a - b);
  vm.hkid = null;
  vm.keyState = 'TEARDOWN';
  return copy;
}

/**
 * A 48 MiB host where a first TD's 30 MiB of guest memory was just freed (its guest_memfd
 * closed) and a second TD asks for 24 MiB more; `settle` first returns the freed pages.
 */
function inFlightFault(d: Driver, settle: boolean): SimCall {
  const first = bootTd(d, 'exited', { memoryBytes: 32 * MIB, faultBytes: 28 * MIB });
  d.ok({ op: 'close', fd: defined(first.gmemFd, 'gmem') });
  if (settle) d.settle();
  const second = bootTd(d, 'exited', { memoryBytes: 32 * MIB });
  return {
    op: 'KVM_RUN',
    vcpu: defined(second.vcpuFd, 'vcpu'),
    faultIn: { gpa: 8 * MIB, bytes: 24 * MIB },
  };
}

const initVm = (vm: number): SimCall => ({ op: 'KVM_TDX_INIT_VM', vm });
const terminate = (vm: number): SimCall => ({ op: 'KVM_TDX_TERMINATE_VM', vm });
const deleteSlot = (vm: number, slot: number): SimCall => ({
  op: 'KVM_SET_USER_MEMORY_REGION2',
  vm,
  slot,
  gpa: 0,
  bytes: 0,
});

// --- KVM_TDX_INIT_VM ---------------------------------------------------------------------------

runCases(SPEC, 'KVM_TDX_INIT_VM', [
  {
    name: 'succeeds on a new VM: first free HKID, keys configured, TDR + TDCS charged',
    arrange: (d) => {
      const td = bootTd(d, 'created');
      return {
        call: initVm(td.vmFd),
        then: (after, _outcome, before) => {
          const vm = defined(after.vms[td.vmId], 'vm');
          assert.equal(vm.hkid, 1);
          assert.equal(vm.keyState, 'KEYS_CONFIGURED');
          assert.equal(vm.tdState, 'INITIALIZED');
          assert.deepEqual(after.freeHkids, [2, 3, 4]);
          assert.equal(before.freePages - after.freePages, 1 + after.config.costParams.tdcsPages);
        },
      };
    },
    expect: 'ok',
  },
  {
    name: 'EINVAL when the TD is already INITIALIZED',
    arrange: (d) => initVm(bootTd(d, 'initVm').vmFd),
    expect: 'EINVAL',
  },
  {
    name: 'EINVAL when the TD is already RUNNABLE',
    arrange: (d) => initVm(bootTd(d, 'exited').vmFd),
    expect: 'EINVAL',
  },
  {
    name: 'EBUSY when vCPUs already exist (hand-built state)',
    arrange: (d) => {
      const td = bootTd(d, 'created');
      d.state = withVcpuBeforeInit(d.state, td.vmId);
      return initVm(td.vmFd);
    },
    expect: 'EBUSY',
  },
  {
    name: 'ENOSPC when another TD holds the only HKID',
    host: { hkids: 1 },
    arrange: (d) => {
      bootTd(d, 'exited');
      return initVm(bootTd(d, 'created').vmFd);
    },
    expect: 'ENOSPC',
  },
  {
    name: 'ENOSPC when every HKID of the pool is taken',
    host: { hkids: 3 },
    arrange: (d) => {
      for (let i = 0; i < 3; i++) bootTd(d, 'initVm', { memoryBytes: 0 });
      return initVm(bootTd(d, 'created').vmFd);
    },
    expect: 'ENOSPC',
  },
  {
    name: 'ENOSPC while the HKID a TERMINATE released is still in flight',
    kernels: withTerminate,
    host: { hkids: 1 },
    arrange: (d) => {
      d.ok(terminate(bootTd(d, 'exited').vmFd));
      return initVm(bootTd(d, 'created').vmFd);
    },
    expect: 'ENOSPC',
  },
  {
    name: 'succeeds once the HKID TERMINATE released has settled, the old VM still open',
    kernels: withTerminate,
    host: { hkids: 1 },
    arrange: (d) => {
      const old = bootTd(d, 'exited');
      d.ok(terminate(old.vmFd));
      d.settle();
      const fresh = bootTd(d, 'created');
      return {
        call: initVm(fresh.vmFd),
        then: (after) => {
          assert.equal(after.vms[fresh.vmId]?.hkid, 1);
          assert.equal(after.vms[old.vmId]?.dead, true, 'the terminated VM is still there');
        },
      };
    },
    expect: 'ok',
  },
  {
    name: 'EBUSY at the misc cgroup tdx limit, HKIDs still free',
    host: { hkids: 4, hkidCgroupLimit: 1 },
    arrange: (d) => {
      bootTd(d, 'initVm');
      return initVm(bootTd(d, 'created').vmFd);
    },
    expect: 'EBUSY',
  },
  {
    name: 'EBUSY with a misc cgroup tdx limit of 0',
    host: { hkids: 4, hkidCgroupLimit: 0 },
    arrange: (d) => initVm(bootTd(d, 'created').vmFd),
    expect: 'EBUSY',
  },
  {
    name: 'succeeds below the misc cgroup tdx limit',
    host: { hkids: 4, hkidCgroupLimit: 2 },
    arrange: (d) => {
      bootTd(d, 'initVm');
      return initVm(bootTd(d, 'created').vmFd);
    },
    expect: 'ok',
  },
  {
    name: 'EIO when a package has no online CPU',
    arrange: (d) => {
      d.ok({ op: 'cpu_hotplug', package: 1, online: false });
      return initVm(bootTd(d, 'created').vmFd);
    },
    expect: 'EIO',
  },
  {
    name: 'EIO on a one-package host whose package is offline',
    host: { packages: 1, cpus: 4 },
    arrange: (d) => {
      d.ok({ op: 'cpu_hotplug', package: 0, online: false });
      return initVm(bootTd(d, 'created').vmFd);
    },
    expect: 'EIO',
  },
  {
    name: 'succeeds once the package is back online',
    arrange: (d) => {
      d.ok({ op: 'cpu_hotplug', package: 1, online: false });
      d.ok({ op: 'cpu_hotplug', package: 1, online: true });
      return initVm(bootTd(d, 'created').vmFd);
    },
    expect: 'ok',
  },
  {
    name: 'ENOMEM when the host has no page for the TDR and TDCS',
    host: { memoryBytes: 4 * 4096 },
    arrange: (d) => initVm(bootTd(d, 'created', { memoryBytes: 0 }).vmFd),
    expect: 'ENOMEM',
  },
  {
    name: 'EBADF on an fd that was never opened',
    arrange: () => initVm(99),
    expect: 'EBADF',
  },
  {
    name: 'EINVAL on a guest_memfd instead of a VM fd',
    arrange: (d) => initVm(defined(bootTd(d, 'created').gmemFd, 'gmem')),
    expect: 'EINVAL',
  },
]);

// --- KVM_CREATE_VCPU ---------------------------------------------------------------------------

runCases(SPEC, 'KVM_CREATE_VCPU', [
  {
    name: 'EIO before KVM_TDX_INIT_VM (TD UNINITIALIZED)',
    arrange: (d) => ({ op: 'KVM_CREATE_VCPU', vm: bootTd(d, 'created').vmFd }),
    expect: 'EIO',
  },
  {
    name: 'EIO once the TD is RUNNABLE',
    arrange: (d) => ({ op: 'KVM_CREATE_VCPU', vm: bootTd(d, 'exited').vmFd }),
    expect: 'EIO',
  },
  {
    name: 'succeeds on an INITIALIZED TD: a vCPU fd that holds a VM reference',
    arrange: (d) => {
      const td = bootTd(d, 'initVm');
      return {
        call: { op: 'KVM_CREATE_VCPU', vm: td.vmFd },
        then: (after, outcome, before) => {
          const fd = defined(outcome.value.fd, 'vcpu fd');
          assert.deepEqual(after.files[fd], { fd, kind: 'vcpu', vm: td.vmId, vcpu: 0 });
          assert.equal(after.vms[td.vmId]?.refs, (before.vms[td.vmId]?.refs ?? 0) + 1);
          assert.equal(after.vms[td.vmId]?.vcpus[0]?.state, 'UNINITIALIZED');
        },
      };
    },
    expect: 'ok',
  },
  {
    name: 'EINVAL beyond the host CPU count',
    host: { packages: 2, cpus: 2 },
    arrange: (d) => {
      const td = bootTd(d, 'vcpu');
      d.ok({ op: 'KVM_CREATE_VCPU', vm: td.vmFd });
      return { op: 'KVM_CREATE_VCPU', vm: td.vmFd };
    },
    expect: 'EINVAL',
  },
]);

// --- KVM_TDX_INIT_VCPU -------------------------------------------------------------------------

runCases(SPEC, 'KVM_TDX_INIT_VCPU', [
  {
    name: 'succeeds on a new vCPU of an INITIALIZED TD',
    arrange: (d) => {
      const td = bootTd(d, 'vcpu');
      return {
        call: { op: 'KVM_TDX_INIT_VCPU', vcpu: defined(td.vcpuFd, 'vcpu') },
        then: (after) => assert.equal(after.vms[td.vmId]?.vcpus[0]?.state, 'INITIALIZED'),
      };
    },
    expect: 'ok',
  },
  {
    name: 'EINVAL when the vCPU is already initialised',
    arrange: (d) => ({ op: 'KVM_TDX_INIT_VCPU', vcpu: defined(bootTd(d, 'vcpuInit').vcpuFd, 'v') }),
    expect: 'EINVAL',
  },
  {
    name: 'EINVAL on an uninitialised vCPU once the TD is RUNNABLE',
    arrange: (d) => {
      const td = bootTd(d, 'vcpuInit');
      const second = defined(d.ok({ op: 'KVM_CREATE_VCPU', vm: td.vmFd }).fd, 'vcpu');
      d.ok({ op: 'KVM_TDX_FINALIZE_VM', vm: td.vmFd });
      return { op: 'KVM_TDX_INIT_VCPU', vcpu: second };
    },
    expect: 'EINVAL',
  },
  {
    name: 'EINVAL when the TD has no HKID (hand-built state)',
    arrange: (d) => {
      const td = bootTd(d, 'vcpu');
      d.state = withoutHkid(d.state, td.vmId);
      return { op: 'KVM_TDX_INIT_VCPU', vcpu: defined(td.vcpuFd, 'vcpu') };
    },
    expect: 'EINVAL',
  },
  {
    name: 'EINVAL on a VM fd instead of a vCPU fd',
    arrange: (d) => ({ op: 'KVM_TDX_INIT_VCPU', vcpu: bootTd(d, 'vcpu').vmFd }),
    expect: 'EINVAL',
  },
]);

// --- KVM_TDX_INIT_MEM_REGION -------------------------------------------------------------------

runCases(SPEC, 'KVM_TDX_INIT_MEM_REGION', [
  {
    name: 'succeeds: adds fresh pages to the slot, charges them and S-EPT pages',
    arrange: (d) => {
      const td = bootTd(d, 'vcpuInit');
      return {
        call: {
          op: 'KVM_TDX_INIT_MEM_REGION',
          vcpu: defined(td.vcpuFd, 'vcpu'),
          gpa: 0,
          bytes: 4 * MIB,
        },
        then: (after, outcome, before) => {
          const vm = defined(after.vms[td.vmId], 'vm');
          assert.deepEqual(vm.memslots[0]?.added, [[0, 1024]]);
          assert.equal(vm.mappedPages, 1024);
          assert.equal(outcome.effects.allocatedPages, 1024);
          assert.equal(before.freePages - after.freePages, 1024 + vm.septPages);
          assert.ok(vm.septPages >= 1);
        },
      };
    },
    expect: 'ok',
  },
  {
    name: 'EINVAL when the vCPU is not initialised',
    arrange: (d) => ({
      op: 'KVM_TDX_INIT_MEM_REGION',
      vcpu: defined(bootTd(d, 'vcpu').vcpuFd, 'vcpu'),
      gpa: 0,
      bytes: TWO_MIB,
    }),
    expect: 'EINVAL',
  },
  {
    name: 'EINVAL once the TD is RUNNABLE',
    arrange: (d) => ({
      op: 'KVM_TDX_INIT_MEM_REGION',
      vcpu: defined(bootTd(d, 'exited').vcpuFd, 'vcpu'),
      gpa: 16 * MIB,
      bytes: TWO_MIB,
    }),
    expect: 'EINVAL',
  },
  {
    name: 'EINVAL when the GPA range has no guest_memfd memslot',
    arrange: (d) => ({
      op: 'KVM_TDX_INIT_MEM_REGION',
      vcpu: defined(bootTd(d, 'vcpuInit').vcpuFd, 'vcpu'),
      gpa: 62 * MIB,
      bytes: 4 * MIB,
    }),
    expect: 'EINVAL',
  },
  {
    name: 'EINVAL when the pages were already added',
    arrange: (d) => ({
      op: 'KVM_TDX_INIT_MEM_REGION',
      vcpu: defined(bootTd(d, 'memRegion').vcpuFd, 'vcpu'),
      gpa: 0,
      bytes: TWO_MIB,
    }),
    expect: 'EINVAL',
  },
  {
    name: 'a 4 KiB region: fine with either leaf size (the ioctls stay 4 KiB-granular)',
    arrange: (d) => ({
      op: 'KVM_TDX_INIT_MEM_REGION',
      vcpu: defined(bootTd(d, 'vcpuInit').vcpuFd, 'vcpu'),
      gpa: 0,
      bytes: 4096,
    }),
    expect: 'ok',
  },
  {
    name: 'ENOMEM when the host lacks the memory',
    host: { memoryBytes: 32 * MIB },
    arrange: (d) => ({
      op: 'KVM_TDX_INIT_MEM_REGION',
      vcpu: defined(bootTd(d, 'vcpuInit').vcpuFd, 'vcpu'),
      gpa: 0,
      bytes: 32 * MIB,
    }),
    expect: 'ENOMEM',
  },
]);

// --- KVM_TDX_FINALIZE_VM -----------------------------------------------------------------------

runCases(SPEC, 'KVM_TDX_FINALIZE_VM', [
  {
    name: 'succeeds on an INITIALIZED TD: RUNNABLE',
    arrange: (d) => {
      const td = bootTd(d, 'memRegion');
      return {
        call: { op: 'KVM_TDX_FINALIZE_VM', vm: td.vmFd },
        then: (after) => assert.equal(after.vms[td.vmId]?.tdState, 'RUNNABLE'),
      };
    },
    expect: 'ok',
  },
  {
    name: 'EINVAL when the TD has no HKID (never initialised)',
    arrange: (d) => ({ op: 'KVM_TDX_FINALIZE_VM', vm: bootTd(d, 'created').vmFd }),
    expect: 'EINVAL',
  },
  {
    name: 'EINVAL when the TD is already RUNNABLE',
    arrange: (d) => ({ op: 'KVM_TDX_FINALIZE_VM', vm: bootTd(d, 'finalized').vmFd }),
    expect: 'EINVAL',
  },
  {
    name: 'EBUSY while the TDX module is busy',
    arrange: (d) => {
      const td = bootTd(d, 'memRegion');
      d.ok({ op: 'tdx_module_busy', busy: true });
      return { op: 'KVM_TDX_FINALIZE_VM', vm: td.vmFd };
    },
    expect: 'EBUSY',
  },
  {
    name: 'succeeds once the TDX module is no longer busy',
    arrange: (d) => {
      const td = bootTd(d, 'memRegion');
      d.ok({ op: 'tdx_module_busy', busy: true });
      d.ok({ op: 'tdx_module_busy', busy: false });
      return { op: 'KVM_TDX_FINALIZE_VM', vm: td.vmFd };
    },
    expect: 'ok',
  },
]);

// --- KVM_RUN -----------------------------------------------------------------------------------

runCases(SPEC, 'KVM_RUN', [
  {
    name: 'succeeds on an initialised vCPU of a RUNNABLE TD: the vCPU is inside the ioctl',
    arrange: (d) => {
      const td = bootTd(d, 'finalized');
      return {
        call: { op: 'KVM_RUN', vcpu: defined(td.vcpuFd, 'vcpu') },
        then: (after) => assert.equal(after.vms[td.vmId]?.vcpus[0]?.inIoctl, true),
      };
    },
    expect: 'ok',
  },
  {
    name: 'a fault-in allocates and accepts fresh pages',
    arrange: (d) => {
      const td = bootTd(d, 'exited');
      return {
        call: {
          op: 'KVM_RUN',
          vcpu: defined(td.vcpuFd, 'vcpu'),
          faultIn: { gpa: 16 * MIB, bytes: 8 * MIB },
        },
        then: (after, outcome, before) => {
          const slot = defined(after.vms[td.vmId]?.memslots[0], 'slot');
          assert.equal(outcome.effects.allocatedPages, 2048);
          assert.equal(outcome.effects.reusedPages, 0);
          assert.equal(countPages(slot.accepted), 1024 + 2048);
          const sept = (after.vms[td.vmId]?.septPages ?? 0) - (before.vms[td.vmId]?.septPages ?? 0);
          assert.equal(before.freePages - after.freePages, 2048 + sept);
        },
      };
    },
    expect: 'ok',
  },
  {
    name: 'EINVAL on a vCPU that was never initialised',
    arrange: (d) => {
      const td = bootTd(d, 'memRegion');
      const second = defined(d.ok({ op: 'KVM_CREATE_VCPU', vm: td.vmFd }).fd, 'vcpu');
      d.ok({ op: 'KVM_TDX_FINALIZE_VM', vm: td.vmFd });
      return { op: 'KVM_RUN', vcpu: second };
    },
    expect: 'EINVAL',
  },
  {
    name: 'EINVAL before the TD is finalized',
    arrange: (d) => ({ op: 'KVM_RUN', vcpu: defined(bootTd(d, 'memRegion').vcpuFd, 'vcpu') }),
    expect: 'EINVAL',
  },
  {
    name: 'EBUSY when the vCPU is already inside KVM_RUN',
    arrange: (d) => ({ op: 'KVM_RUN', vcpu: defined(bootTd(d, 'running').vcpuFd, 'vcpu') }),
    expect: 'EBUSY',
  },
  {
    name: 'EBUSY for a fault-in of inode pages another TD still maps',
    kernels: withLink,
    arrange: (d) => {
      const { second } = twoViewers(d);
      return {
        op: 'KVM_RUN',
        vcpu: defined(second.vcpuFd, 'vcpu'),
        faultIn: { gpa: 4 * MIB, bytes: 4 * MIB },
      };
    },
    expect: 'EBUSY',
  },
  {
    name: 'a fault-in of inode pages the other TD does not map allocates them and succeeds',
    kernels: withLink,
    arrange: (d) => {
      const { second } = twoViewers(d);
      return {
        call: {
          op: 'KVM_RUN',
          vcpu: defined(second.vcpuFd, 'vcpu'),
          faultIn: { gpa: 40 * MIB, bytes: 4 * MIB },
        },
        then: (_after, outcome) => assert.equal(outcome.effects.allocatedPages, 1024),
      };
    },
    expect: 'ok',
  },
  {
    name: 'EFAULT for a fault-in outside every memslot (a memory fault exit)',
    arrange: (d) => ({
      op: 'KVM_RUN',
      vcpu: defined(bootTd(d, 'exited').vcpuFd, 'vcpu'),
      faultIn: { gpa: 64 * MIB, bytes: TWO_MIB },
    }),
    expect: 'EFAULT',
  },
  {
    name: 'ENOMEM when the host lacks memory for a fault-in',
    host: { memoryBytes: 64 * MIB },
    arrange: (d) => ({
      op: 'KVM_RUN',
      vcpu: defined(bootTd(d, 'exited', { memoryBytes: 128 * MIB }).vcpuFd, 'vcpu'),
      faultIn: { gpa: 8 * MIB, bytes: 120 * MIB },
    }),
    expect: 'ENOMEM',
  },
  {
    name: 'ENOMEM while the memory the host needs is still in flight',
    host: { memoryBytes: 48 * MIB },
    arrange: (d) => inFlightFault(d, false),
    expect: 'ENOMEM',
  },
  {
    name: 'the same fault-in succeeds once the in-flight memory has settled',
    host: { memoryBytes: 48 * MIB },
    arrange: (d) => inFlightFault(d, true),
    expect: 'ok',
  },
  {
    name: 'EIO once the VM is terminated',
    kernels: withTerminate,
    arrange: (d) => {
      const td = bootTd(d, 'exited');
      d.ok(terminate(td.vmFd));
      return { op: 'KVM_RUN', vcpu: defined(td.vcpuFd, 'vcpu') };
    },
    expect: 'EIO',
  },
]);

// --- KVM_CREATE_GUEST_MEMFD --------------------------------------------------------------------

runCases(SPEC, 'KVM_CREATE_GUEST_MEMFD', [
  {
    name: 'succeeds: an empty inode and a file holding a VM reference',
    arrange: (d) => {
      const td = bootTd(d, 'created', { memoryBytes: 0 });
      return {
        call: { op: 'KVM_CREATE_GUEST_MEMFD', vm: td.vmFd, bytes: 32 * MIB },
        then: (after, outcome, before) => {
          const inode = defined(after.inodes[defined(outcome.value.inode, 'inode')], 'inode');
          assert.equal(inode.pages, 8192);
          assert.deepEqual(inode.allocated, []);
          assert.equal(after.freePages, before.freePages, 'no memory until faulted in');
          assert.equal(after.vms[td.vmId]?.refs, 2);
        },
      };
    },
    expect: 'ok',
  },
  {
    name: 'EINVAL for size 0',
    arrange: (d) => ({ op: 'KVM_CREATE_GUEST_MEMFD', vm: bootTd(d, 'created').vmFd, bytes: 0 }),
    expect: 'EINVAL',
  },
  {
    name: 'EINVAL for a size that is not a multiple of 4 KiB',
    arrange: (d) => ({
      op: 'KVM_CREATE_GUEST_MEMFD',
      vm: bootTd(d, 'created').vmFd,
      bytes: 64 * MIB + 100,
    }),
    expect: 'EINVAL',
  },
  {
    name: 'EINVAL for a negative size',
    arrange: (d) => ({ op: 'KVM_CREATE_GUEST_MEMFD', vm: bootTd(d, 'created').vmFd, bytes: -4096 }),
    expect: 'EINVAL',
  },
  {
    name: 'a 4 KiB-aligned size that is not 2 MiB-aligned: fine with either leaf size',
    arrange: (d) => ({
      op: 'KVM_CREATE_GUEST_MEMFD',
      vm: bootTd(d, 'created').vmFd,
      bytes: TWO_MIB + 4096,
    }),
    expect: 'ok',
  },
  {
    name: 'on a terminated VM: EIO under v4, works under aug2025',
    kernels: withTerminate,
    arrange: (d) => {
      const td = bootTd(d, 'exited');
      d.ok(terminate(td.vmFd));
      return { op: 'KVM_CREATE_GUEST_MEMFD', vm: td.vmFd, bytes: 64 * MIB };
    },
    expect: (k) => (isAug2025(k) ? 'ok' : 'EIO'),
  },
  {
    name: 'EINVAL on a vCPU fd instead of a VM fd',
    arrange: (d) => ({
      op: 'KVM_CREATE_GUEST_MEMFD',
      vm: defined(bootTd(d, 'vcpu').vcpuFd, 'vcpu'),
      bytes: 64 * MIB,
    }),
    expect: 'EINVAL',
  },
]);

// --- KVM_SET_USER_MEMORY_REGION2: create -------------------------------------------------------

runCases(SPEC, 'KVM_SET_USER_MEMORY_REGION2 create', [
  {
    name: 'succeeds on a free GPA and gmem range; the binding takes no VM reference',
    arrange: (d) => {
      const td = bootTd(d, 'created');
      const gmem = extraGmem(d, td.vmFd);
      return {
        call: {
          op: 'KVM_SET_USER_MEMORY_REGION2',
          vm: td.vmFd,
          slot: 1,
          gpa: 64 * MIB,
          bytes: 32 * MIB,
          gmem,
          gmemOffset: 32 * MIB,
        },
        then: (after, _outcome, before) => {
          const slot = defined(after.vms[td.vmId]?.memslots[1], 'slot 1');
          const file = after.files[gmem];
          assert.equal(file?.kind, 'gmem');
          assert.deepEqual(slot.binding, { fd: gmem, inode: file.inode, offsetPage: 8192 });
          assert.equal(slot.gpaPage, 16384);
          assert.equal(slot.pages, 8192);
          assert.equal(after.vms[td.vmId]?.refs, before.vms[td.vmId]?.refs);
        },
      };
    },
    expect: 'ok',
  },
  {
    name: 'EINVAL with a guest_memfd of another VM',
    arrange: (d) => {
      const mine = bootTd(d, 'created', { memoryBytes: 0 });
      const theirs = bootTd(d, 'created');
      return {
        op: 'KVM_SET_USER_MEMORY_REGION2',
        vm: mine.vmFd,
        slot: 0,
        gpa: 0,
        bytes: 64 * MIB,
        gmem: defined(theirs.gmemFd, 'gmem'),
        gmemOffset: 0,
      };
    },
    expect: 'EINVAL',
  },
  {
    name: 'a guest_memfd range already bound to another slot: EINVAL, EEXIST on the 2026 x86 tree',
    arrange: (d) => {
      const td = bootTd(d, 'created');
      const gmem = extraGmem(d, td.vmFd);
      d.ok({
        op: 'KVM_SET_USER_MEMORY_REGION2',
        vm: td.vmFd,
        slot: 1,
        gpa: 64 * MIB,
        bytes: 32 * MIB,
        gmem,
        gmemOffset: 0,
      });
      return {
        op: 'KVM_SET_USER_MEMORY_REGION2',
        vm: td.vmFd,
        slot: 2,
        gpa: 128 * MIB,
        bytes: 4 * MIB,
        gmem,
        gmemOffset: 30 * MIB,
      };
    },
    expect: (k) => (k.guestMemfdTree === 'kvm-x86-2026' ? 'EEXIST' : 'EINVAL'),
  },
  {
    name: 'succeeds on the range right after a bound one',
    arrange: (d) => {
      const td = bootTd(d, 'created');
      const gmem = extraGmem(d, td.vmFd);
      d.ok({
        op: 'KVM_SET_USER_MEMORY_REGION2',
        vm: td.vmFd,
        slot: 1,
        gpa: 64 * MIB,
        bytes: 32 * MIB,
        gmem,
        gmemOffset: 0,
      });
      return {
        op: 'KVM_SET_USER_MEMORY_REGION2',
        vm: td.vmFd,
        slot: 2,
        gpa: 128 * MIB,
        bytes: 32 * MIB,
        gmem,
        gmemOffset: 32 * MIB,
      };
    },
    expect: 'ok',
  },
  {
    name: 'EEXIST when the GPA range overlaps another slot',
    arrange: (d) => {
      const td = bootTd(d, 'created');
      return {
        op: 'KVM_SET_USER_MEMORY_REGION2',
        vm: td.vmFd,
        slot: 1,
        gpa: 62 * MIB,
        bytes: 4 * MIB,
        gmem: extraGmem(d, td.vmFd),
        gmemOffset: 0,
      };
    },
    expect: 'EEXIST',
  },
  {
    name: 'EBADF when the guest_memfd fd is not open',
    arrange: (d) => ({
      op: 'KVM_SET_USER_MEMORY_REGION2',
      vm: bootTd(d, 'created').vmFd,
      slot: 1,
      gpa: 64 * MIB,
      bytes: TWO_MIB,
      gmem: 99,
      gmemOffset: 0,
    }),
    expect: 'EBADF',
  },
  {
    name: 'EBADF when the guest_memfd fd was closed (file kept by an mmap)',
    arrange: (d) => {
      const td = bootTd(d, 'created');
      const gmem = extraGmem(d, td.vmFd);
      d.ok({ op: 'mmap', fd: gmem });
      d.ok({ op: 'close', fd: gmem });
      return {
        op: 'KVM_SET_USER_MEMORY_REGION2',
        vm: td.vmFd,
        slot: 1,
        gpa: 64 * MIB,
        bytes: TWO_MIB,
        gmem,
        gmemOffset: 0,
      };
    },
    expect: 'EBADF',
  },
  {
    name: 'EINVAL when the fd is not a guest_memfd',
    arrange: (d) => {
      const td = bootTd(d, 'created');
      return {
        op: 'KVM_SET_USER_MEMORY_REGION2',
        vm: td.vmFd,
        slot: 1,
        gpa: 64 * MIB,
        bytes: TWO_MIB,
        gmem: td.vmFd,
        gmemOffset: 0,
      };
    },
    expect: 'EINVAL',
  },
  {
    name: 'EINVAL when modifying an existing guest_memfd slot (move)',
    arrange: (d) => {
      const td = bootTd(d, 'created');
      return {
        op: 'KVM_SET_USER_MEMORY_REGION2',
        vm: td.vmFd,
        slot: 0,
        gpa: 128 * MIB,
        bytes: 64 * MIB,
        gmem: td.gmemFd,
        gmemOffset: 0,
      };
    },
    expect: 'EINVAL',
  },
  {
    name: 'EINVAL when setting an existing slot again with the same values',
    arrange: (d) => {
      const td = bootTd(d, 'created');
      return {
        op: 'KVM_SET_USER_MEMORY_REGION2',
        vm: td.vmFd,
        slot: 0,
        gpa: 0,
        bytes: 64 * MIB,
        gmem: td.gmemFd,
        gmemOffset: 0,
      };
    },
    expect: 'EINVAL',
  },
  {
    name: 'EINVAL when the range goes past the end of the guest_memfd',
    arrange: (d) => {
      const td = bootTd(d, 'created');
      return {
        op: 'KVM_SET_USER_MEMORY_REGION2',
        vm: td.vmFd,
        slot: 1,
        gpa: 64 * MIB,
        bytes: 4 * MIB,
        gmem: extraGmem(d, td.vmFd),
        gmemOffset: 62 * MIB,
      };
    },
    expect: 'EINVAL',
  },
  {
    name: 'EINVAL for a private slot without a guest_memfd',
    arrange: (d) => ({
      op: 'KVM_SET_USER_MEMORY_REGION2',
      vm: bootTd(d, 'created').vmFd,
      slot: 1,
      gpa: 64 * MIB,
      bytes: TWO_MIB,
    }),
    expect: 'EINVAL',
  },
  {
    name: 'a 4 KiB-aligned GPA that is not 2 MiB-aligned: fine with either leaf size',
    arrange: (d) => {
      const td = bootTd(d, 'created');
      return {
        op: 'KVM_SET_USER_MEMORY_REGION2',
        vm: td.vmFd,
        slot: 1,
        gpa: 64 * MIB + 4096,
        bytes: TWO_MIB,
        gmem: extraGmem(d, td.vmFd),
        gmemOffset: 0,
      };
    },
    expect: 'ok',
  },
  {
    name: 'on a terminated VM: EIO under v4, works under aug2025',
    kernels: withTerminate,
    arrange: (d) => {
      const td = bootTd(d, 'exited');
      const gmem = extraGmem(d, td.vmFd);
      d.ok(terminate(td.vmFd));
      return {
        op: 'KVM_SET_USER_MEMORY_REGION2',
        vm: td.vmFd,
        slot: 1,
        gpa: 64 * MIB,
        bytes: TWO_MIB,
        gmem,
        gmemOffset: 0,
      };
    },
    expect: (k) => (isAug2025(k) ? 'ok' : 'EIO'),
  },
]);

// --- KVM_SET_USER_MEMORY_REGION2: delete -------------------------------------------------------

runCases(SPEC, 'KVM_SET_USER_MEMORY_REGION2 delete (size 0)', [
  {
    name: 'succeeds on a live TD: Dynamic Page Removal, the pages stay in the inode',
    arrange: (d) => {
      const td = bootTd(d, 'exited');
      return {
        call: deleteSlot(td.vmFd, 0),
        then: (after, outcome, before) => {
          const inode = defined(td.inode, 'inode');
          assert.equal(after.vms[td.vmId]?.memslots[0], undefined);
          assert.equal(after.vms[td.vmId]?.mappedPages, 0);
          assert.equal(outcome.effects.removedPages, 1536);
          assert.equal(outcome.effects.reclaimedPages, 0);
          assert.deepEqual(outcome.effects.reclaims, [
            { vm: td.vmId, keyState: 'KEYS_CONFIGURED', pages: 1536 },
          ]);
          assert.deepEqual(after.inodes[inode]?.allocated, before.inodes[inode]?.allocated);
          assert.equal(after.freePages, before.freePages);
        },
      };
    },
    expect: 'ok',
  },
  {
    name: 'EINVAL when the slot does not exist',
    arrange: (d) => deleteSlot(bootTd(d, 'exited').vmFd, 3),
    expect: 'EINVAL',
  },
  {
    name: 'on a terminated VM: EIO under v4, TEARDOWN reclaim under aug2025',
    kernels: withTerminate,
    arrange: (d) => {
      const td = bootTd(d, 'exited');
      d.ok(terminate(td.vmFd));
      return {
        call: deleteSlot(td.vmFd, 0),
        then: (after, outcome) => {
          assert.equal(after.vms[td.vmId]?.memslots[0], undefined);
          assert.equal(outcome.effects.reclaimedPages, 1536);
          assert.equal(outcome.effects.removedPages, 0);
          assert.deepEqual(outcome.effects.reclaims, [
            { vm: td.vmId, keyState: 'TEARDOWN', pages: 1536 },
          ]);
          const inode = defined(td.inode, 'inode');
          assert.equal(countPages(defined(after.inodes[inode], 'inode').allocated), 1536);
        },
      };
    },
    expect: (k) => (k.terminateVm === 'aug2025' ? 'ok' : 'EIO'),
  },
  {
    name: 'EINVAL for a missing slot on a terminated VM under aug2025',
    kernels: (k) => k.terminateVm === 'aug2025',
    arrange: (d) => {
      const td = bootTd(d, 'exited');
      d.ok(terminate(td.vmFd));
      return deleteSlot(td.vmFd, 2);
    },
    expect: 'EINVAL',
  },
]);

// --- KVM_TDX_TERMINATE_VM ----------------------------------------------------------------------

runCases(SPEC, 'KVM_TDX_TERMINATE_VM', [
  {
    name: 'EINVAL on a mainline kernel (unknown sub-ioctl 6)',
    kernels: mainline,
    arrange: (d) => terminate(bootTd(d, 'exited').vmFd),
    expect: 'EINVAL',
  },
  {
    name: 'EBUSY while a vCPU is inside KVM_RUN',
    kernels: withTerminate,
    arrange: (d) => terminate(bootTd(d, 'running').vmFd),
    expect: 'EBUSY',
  },
  {
    name: 'EIO on the second call',
    kernels: withTerminate,
    arrange: (d) => {
      const td = bootTd(d, 'exited');
      d.ok(terminate(td.vmFd));
      return terminate(td.vmFd);
    },
    expect: 'EIO',
  },
  {
    name: 'succeeds once the vCPU left KVM_RUN: VM dead, HKID released at once, TEARDOWN',
    kernels: withTerminate,
    arrange: (d) => {
      const td = bootTd(d, 'exited');
      const hkid = d.vm(td.vmId).hkid;
      return {
        call: terminate(td.vmFd),
        then: (after, outcome) => {
          const vm = defined(after.vms[td.vmId], 'the VM stays until its last reference goes');
          assert.equal(vm.dead, true);
          assert.equal(vm.hkid, null);
          assert.equal(vm.keyState, 'TEARDOWN');
          assert.equal(outcome.effects.releasedHkid, hkid);
          assert.deepEqual(outcome.effects.destroyedVms, []);
          assert.equal(outcome.effects.reclaimedPages, 0, 'terminate itself reclaims nothing');
          const release = defined(outcome.effects.release, 'release');
          assert.deepEqual(
            after.inFlight.find((r) => r.id === release),
            { id: release, pages: 0, hkids: [hkid] },
          );
          const settled = settleRelease(after, release);
          assert.ok(settled.freeHkids.includes(defined(hkid, 'hkid')));
        },
      };
    },
    expect: 'ok',
  },
  {
    name: 'succeeds on a VM that never got an HKID',
    kernels: withTerminate,
    arrange: (d) => {
      const td = bootTd(d, 'created');
      return {
        call: terminate(td.vmFd),
        then: (after, outcome) => {
          assert.equal(after.vms[td.vmId]?.dead, true);
          assert.equal(outcome.effects.releasedHkid, null);
          assert.deepEqual(after.freeHkids, [1, 2, 3, 4]);
        },
      };
    },
    expect: 'ok',
  },
  {
    name: 'EBADF on an fd that was never opened',
    kernels: withTerminate,
    arrange: () => terminate(77),
    expect: 'EBADF',
  },
]);

// --- Every VM and vCPU ioctl on a dead VM ------------------------------------------------------

interface DeadCase {
  name: string;
  kernels?: (kernel: KernelFeatures) => boolean;
  /** A precondition in which `call` succeeds while the VM is alive; the VM to terminate. */
  arrange: (d: Driver) => { vmFd: number; call: SimCall };
  /** What the call gives after TERMINATE under this kernel; `EIO` when left out. */
  whenDead?: (kernel: KernelFeatures) => Expect;
}

/** Under aug2025 a TDX init sub-ioctl finds the TD no longer in INIT: `EINVAL`. */
const initWhenDead = (k: KernelFeatures): Expect => (isAug2025(k) ? 'EINVAL' : 'EIO');
/** Under aug2025 every VM ioctl but vCPU creation and TDX init works on a dead VM. */
const vmIoctlWhenDead = (k: KernelFeatures): Expect => (isAug2025(k) ? 'ok' : 'EIO');

const deadCases: DeadCase[] = [
  {
    name: 'KVM_TDX_INIT_VM',
    whenDead: initWhenDead,
    arrange: (d) => {
      const td = bootTd(d, 'created');
      return { vmFd: td.vmFd, call: initVm(td.vmFd) };
    },
  },
  {
    name: 'KVM_CREATE_VCPU',
    arrange: (d) => {
      const td = bootTd(d, 'initVm');
      return { vmFd: td.vmFd, call: { op: 'KVM_CREATE_VCPU', vm: td.vmFd } };
    },
  },
  {
    name: 'KVM_TDX_INIT_VCPU',
    arrange: (d) => {
      const td = bootTd(d, 'vcpu');
      return {
        vmFd: td.vmFd,
        call: { op: 'KVM_TDX_INIT_VCPU', vcpu: defined(td.vcpuFd, 'vcpu') },
      };
    },
  },
  {
    name: 'KVM_TDX_INIT_MEM_REGION',
    arrange: (d) => {
      const td = bootTd(d, 'vcpuInit');
      return {
        vmFd: td.vmFd,
        call: {
          op: 'KVM_TDX_INIT_MEM_REGION',
          vcpu: defined(td.vcpuFd, 'vcpu'),
          gpa: 0,
          bytes: TWO_MIB,
        },
      };
    },
  },
  {
    name: 'KVM_TDX_FINALIZE_VM',
    whenDead: initWhenDead,
    arrange: (d) => {
      const td = bootTd(d, 'memRegion');
      return { vmFd: td.vmFd, call: { op: 'KVM_TDX_FINALIZE_VM', vm: td.vmFd } };
    },
  },
  {
    name: 'KVM_RUN',
    arrange: (d) => {
      const td = bootTd(d, 'exited');
      return {
        vmFd: td.vmFd,
        call: {
          op: 'KVM_RUN',
          vcpu: defined(td.vcpuFd, 'vcpu'),
          faultIn: { gpa: 16 * MIB, bytes: TWO_MIB },
        },
      };
    },
  },
  {
    name: 'KVM_CREATE_GUEST_MEMFD',
    whenDead: vmIoctlWhenDead,
    arrange: (d) => {
      const td = bootTd(d, 'exited');
      return { vmFd: td.vmFd, call: { op: 'KVM_CREATE_GUEST_MEMFD', vm: td.vmFd, bytes: TWO_MIB } };
    },
  },
  {
    name: 'KVM_SET_USER_MEMORY_REGION2 create',
    whenDead: vmIoctlWhenDead,
    arrange: (d) => {
      const td = bootTd(d, 'exited');
      const gmem = extraGmem(d, td.vmFd);
      return {
        vmFd: td.vmFd,
        call: {
          op: 'KVM_SET_USER_MEMORY_REGION2',
          vm: td.vmFd,
          slot: 1,
          gpa: 64 * MIB,
          bytes: 64 * MIB,
          gmem,
          gmemOffset: 0,
        },
      };
    },
  },
  {
    name: 'KVM_SET_USER_MEMORY_REGION2 delete',
    arrange: (d) => {
      const td = bootTd(d, 'exited');
      return { vmFd: td.vmFd, call: deleteSlot(td.vmFd, 0) };
    },
    whenDead: vmIoctlWhenDead,
  },
  {
    name: 'KVM_TDX_TERMINATE_VM',
    arrange: (d) => {
      const td = bootTd(d, 'exited');
      return { vmFd: td.vmFd, call: terminate(td.vmFd) };
    },
  },
  {
    name: 'KVM_LINK_GUEST_MEMFD (into the dead VM)',
    whenDead: vmIoctlWhenDead,
    kernels: withLink,
    arrange: (d) => {
      const target = bootTd(d, 'created', { memoryBytes: 0 });
      const source = bootTd(d, 'created');
      return {
        vmFd: target.vmFd,
        call: { op: 'KVM_LINK_GUEST_MEMFD', vm: target.vmFd, gmem: defined(source.gmemFd, 'g') },
      };
    },
  },
];

describe('every VM and vCPU ioctl on a terminated VM returns EIO (aug2025: only vCPU creation, vCPU ioctls and TDX init are refused)', () => {
  for (const c of deadCases) {
    for (const kernel of ALL_KERNELS.filter(
      (k) => withTerminate(k) && (c.kernels ?? (() => true))(k),
    )) {
      const want = c.whenDead?.(kernel) ?? 'EIO';
      it(`${c.name} -> ${want} [${kernelLabel(kernel)}]`, () => {
        const d = new Driver(smallHost(kernel));
        const { vmFd, call } = c.arrange(d);
        // Control: the same call works on the live VM, so an EIO below comes from the death.
        const alive = applyCall(d.state, call).outcome;
        assert.ok(alive.ok, `control: ${alive.ok ? '' : alive.message}`);
        d.ok(terminate(vmFd));
        check(assert, d.state, { call }, want);
      });
    }
  }
});

// --- What still works on a dead VM's files -----------------------------------------------------

runCases(SPEC, 'file operations on a terminated VM still work', [
  {
    name: 'fallocate(PUNCH_HOLE) on its guest_memfd: TEARDOWN reclaim and the pages are freed',
    kernels: withTerminate,
    arrange: (d) => {
      const td = bootTd(d, 'exited');
      d.ok(terminate(td.vmFd));
      return {
        call: {
          op: 'fallocate_punch_hole',
          fd: defined(td.gmemFd, 'gmem'),
          offset: 0,
          bytes: 64 * MIB,
        },
        then: (after, outcome) => {
          assert.equal(outcome.effects.reclaimedPages, 1536);
          assert.equal(outcome.effects.removedPages, 0);
          assert.equal(outcome.effects.freedPages, 1536);
          assert.deepEqual(after.inodes[defined(td.inode, 'inode')]?.allocated, []);
          assert.equal(after.vms[td.vmId]?.mappedPages, 0);
        },
      };
    },
    expect: 'ok',
  },
  {
    name: 'mmap of its guest_memfd',
    kernels: withTerminate,
    arrange: (d) => {
      const td = bootTd(d, 'exited');
      d.ok(terminate(td.vmFd));
      return { op: 'mmap', fd: defined(td.gmemFd, 'gmem') };
    },
    expect: 'ok',
  },
  {
    name: 'close of its vCPU fd',
    kernels: withTerminate,
    arrange: (d) => {
      const td = bootTd(d, 'exited');
      d.ok(terminate(td.vmFd));
      return { op: 'close', fd: defined(td.vcpuFd, 'vcpu') };
    },
    expect: 'ok',
  },
  {
    name: 'KVM_LINK_GUEST_MEMFD of its guest_memfd into a new VM',
    kernels: terminateAndLink,
    arrange: (d) => {
      const old = bootTd(d, 'exited');
      d.ok(terminate(old.vmFd));
      const fresh = bootTd(d, 'created', { memoryBytes: 0 });
      return { op: 'KVM_LINK_GUEST_MEMFD', vm: fresh.vmFd, gmem: defined(old.gmemFd, 'gmem') };
    },
    expect: 'ok',
  },
]);

// --- fallocate(PUNCH_HOLE) ---------------------------------------------------------------------

runCases(SPEC, 'fallocate_punch_hole', [
  {
    name: 'on a live TD: Dynamic Page Removal of the hole, its pages freed, the rest kept',
    arrange: (d) => {
      const td = bootTd(d, 'exited');
      return {
        call: {
          op: 'fallocate_punch_hole',
          fd: defined(td.gmemFd, 'gmem'),
          offset: 0,
          bytes: TWO_MIB,
        },
        then: (after, outcome) => {
          assert.equal(outcome.effects.removedPages, 512);
          assert.equal(outcome.effects.reclaimedPages, 0);
          assert.equal(outcome.effects.freedPages, 512);
          assert.deepEqual(after.inodes[defined(td.inode, 'inode')]?.allocated, [[512, 1536]]);
          assert.equal(after.vms[td.vmId]?.mappedPages, 1024);
        },
      };
    },
    expect: 'ok',
  },
  {
    name: 'unmaps the hole in every VM viewing the inode, not only the punching one',
    kernels: withLink,
    arrange: (d) => {
      const { first, second } = twoViewers(d);
      return {
        call: {
          op: 'fallocate_punch_hole',
          fd: defined(first.gmemFd, 'gmem'),
          offset: 0,
          bytes: 64 * MIB,
        },
        then: (after, outcome) => {
          // The first VM maps [0, 6 MiB), the second [32, 36 MiB): both lose their pages.
          assert.deepEqual(
            [...outcome.effects.reclaims].sort((a, b) => a.vm - b.vm),
            [
              { vm: first.vmId, keyState: 'KEYS_CONFIGURED', pages: 1536 },
              { vm: second.vmId, keyState: 'KEYS_CONFIGURED', pages: 1024 },
            ],
          );
          assert.equal(after.vms[second.vmId]?.mappedPages, 0);
          assert.equal(outcome.effects.freedPages, 2560);
        },
      };
    },
    expect: 'ok',
  },
  {
    name: 'a hole that goes past the end of the guest_memfd punches what is inside',
    arrange: (d) => {
      const td = bootTd(d, 'exited', { faultBytes: 62 * MIB });
      return {
        call: {
          op: 'fallocate_punch_hole',
          fd: defined(td.gmemFd, 'gmem'),
          offset: 62 * MIB,
          bytes: 4 * MIB,
        },
        then: (after, outcome) => {
          assert.equal(outcome.effects.freedPages, 512);
          assert.deepEqual(after.inodes[defined(td.inode, 'inode')]?.allocated, [[0, 15872]]);
        },
      };
    },
    expect: 'ok',
  },
  {
    name: 'a 4 KiB hole splits a 2 MiB leaf rather than fail; it frees one page',
    arrange: (d) => {
      const td = bootTd(d, 'exited');
      return {
        call: {
          op: 'fallocate_punch_hole',
          fd: defined(td.gmemFd, 'gmem'),
          offset: 4096,
          bytes: 4096,
        },
        then: (after, outcome) => {
          assert.equal(outcome.effects.freedPages, 1);
          assert.equal(outcome.effects.removedPages, 1);
          assert.equal(after.vms[td.vmId]?.mappedPages, 1535);
        },
      };
    },
    expect: 'ok',
  },
  {
    name: 'EINVAL on a VM fd',
    arrange: (d) => ({
      op: 'fallocate_punch_hole',
      fd: bootTd(d, 'exited').vmFd,
      offset: 0,
      bytes: TWO_MIB,
    }),
    expect: 'EINVAL',
  },
  {
    name: 'EBADF on an fd that was never opened',
    arrange: () => ({ op: 'fallocate_punch_hole', fd: 50, offset: 0, bytes: TWO_MIB }),
    expect: 'EBADF',
  },
]);

// --- KVM_LINK_GUEST_MEMFD ----------------------------------------------------------------------

runCases(SPEC, 'KVM_LINK_GUEST_MEMFD', [
  {
    name: 'ENOTTY on a kernel without the RFC',
    kernels: (k) => !withLink(k),
    arrange: (d) => {
      const old = bootTd(d, 'exited');
      const fresh = bootTd(d, 'created', { memoryBytes: 0 });
      return { op: 'KVM_LINK_GUEST_MEMFD', vm: fresh.vmFd, gmem: defined(old.gmemFd, 'gmem') };
    },
    expect: 'ENOTTY',
  },
  {
    name: 'succeeds with the RFC: a new file on the same inode holding a ref on the new VM',
    kernels: withLink,
    arrange: (d) => {
      const old = bootTd(d, 'exited');
      const fresh = bootTd(d, 'created', { memoryBytes: 0 });
      const inode = defined(old.inode, 'inode');
      return {
        call: { op: 'KVM_LINK_GUEST_MEMFD', vm: fresh.vmFd, gmem: defined(old.gmemFd, 'gmem') },
        then: (after, outcome, before) => {
          const fd = defined(outcome.value.fd, 'fd');
          assert.equal(outcome.value.inode, inode);
          assert.deepEqual(after.files[fd], {
            fd,
            kind: 'gmem',
            vm: fresh.vmId,
            inode,
            fdOpen: true,
            mmaps: 0,
          });
          assert.equal(after.inodes[inode]?.files, 2);
          assert.equal(after.vms[fresh.vmId]?.refs, 2);
          assert.equal(after.vms[old.vmId]?.refs, before.vms[old.vmId]?.refs);
          assert.equal(after.freePages, before.freePages, 'linking allocates nothing');
        },
      };
    },
    expect: 'ok',
  },
  {
    name: 'the same source linked into the same VM twice: a second file on the inode (RFC)',
    kernels: withLink,
    arrange: (d) => {
      const old = bootTd(d, 'exited');
      const fresh = bootTd(d, 'created', { memoryBytes: 0 });
      const call: SimCall = {
        op: 'KVM_LINK_GUEST_MEMFD',
        vm: fresh.vmFd,
        gmem: defined(old.gmemFd, 'gmem'),
      };
      d.ok(call);
      return {
        call,
        then: (after) => {
          assert.equal(after.inodes[defined(old.inode, 'inode')]?.files, 3);
          assert.equal(after.vms[fresh.vmId]?.refs, 3);
        },
      };
    },
    expect: 'ok',
  },
  {
    name: 'EINVAL when linking a guest_memfd into the VM that owns it (RFC)',
    kernels: withLink,
    arrange: (d) => {
      const td = bootTd(d, 'created');
      return { op: 'KVM_LINK_GUEST_MEMFD', vm: td.vmFd, gmem: defined(td.gmemFd, 'gmem') };
    },
    expect: 'EINVAL',
  },
  {
    name: 'EINVAL, not EBADF, when the source fd is not open (RFC)',
    kernels: withLink,
    arrange: (d) => ({ op: 'KVM_LINK_GUEST_MEMFD', vm: bootTd(d, 'created').vmFd, gmem: 40 }),
    expect: 'EINVAL',
  },
  {
    name: 'EINVAL for any flag (RFC: flags must be 0)',
    kernels: withLink,
    arrange: (d) => {
      const old = bootTd(d, 'created');
      const fresh = bootTd(d, 'created', { memoryBytes: 0 });
      return {
        op: 'KVM_LINK_GUEST_MEMFD',
        vm: fresh.vmFd,
        gmem: defined(old.gmemFd, 'gmem'),
        flags: 1,
      };
    },
    expect: 'EINVAL',
  },
  {
    name: 'EINVAL when the source is not a guest_memfd',
    kernels: withLink,
    arrange: (d) => {
      const old = bootTd(d, 'created');
      const fresh = bootTd(d, 'created', { memoryBytes: 0 });
      return { op: 'KVM_LINK_GUEST_MEMFD', vm: fresh.vmFd, gmem: old.vmFd };
    },
    expect: 'EINVAL',
  },
]);

// --- close, mmap, munmap -----------------------------------------------------------------------

runCases(SPEC, 'close, mmap and munmap', [
  {
    name: 'close: EBADF on an fd that was never opened',
    arrange: (d) => {
      bootTd(d, 'exited');
      return { op: 'close', fd: 99 };
    },
    expect: 'EBADF',
  },
  {
    name: 'close: EBADF on fds 0-2 (never handed out)',
    arrange: () => ({ op: 'close', fd: 0 }),
    expect: 'EBADF',
  },
  {
    name: 'close: EBADF the second time',
    arrange: (d) => {
      const td = bootTd(d, 'exited');
      d.ok({ op: 'close', fd: defined(td.vcpuFd, 'vcpu') });
      return { op: 'close', fd: defined(td.vcpuFd, 'vcpu') };
    },
    expect: 'EBADF',
  },
  {
    name: 'close: EBADF on a guest_memfd fd already closed while an mmap pins its file',
    arrange: (d) => {
      const td = bootTd(d, 'exited');
      const gmem = defined(td.gmemFd, 'gmem');
      d.ok({ op: 'mmap', fd: gmem });
      d.ok({ op: 'close', fd: gmem });
      return { op: 'close', fd: gmem };
    },
    expect: 'EBADF',
  },
  {
    name: 'close: never fails on a vCPU fd inside KVM_RUN (the thread leaves first)',
    arrange: (d) => {
      const td = bootTd(d, 'running');
      return {
        call: { op: 'close', fd: defined(td.vcpuFd, 'vcpu') },
        then: (after) => {
          assert.equal(after.vms[td.vmId]?.vcpus[0]?.inIoctl, false);
          assert.equal(after.vms[td.vmId]?.refs, 2);
        },
      };
    },
    expect: 'ok',
  },
  {
    name: 'mmap: EINVAL on a VM fd',
    arrange: (d) => ({ op: 'mmap', fd: bootTd(d, 'created').vmFd }),
    expect: 'EINVAL',
  },
  {
    name: 'munmap: EINVAL on an unknown mapping',
    arrange: () => ({ op: 'munmap', map: 5 }),
    expect: 'EINVAL',
  },
  {
    name: 'munmap: EINVAL the second time',
    arrange: (d) => {
      const td = bootTd(d, 'created');
      const map = defined(d.ok({ op: 'mmap', fd: defined(td.gmemFd, 'gmem') }).map, 'map');
      d.ok({ op: 'munmap', map });
      return { op: 'munmap', map };
    },
    expect: 'EINVAL',
  },
  {
    name: 'cpu_hotplug: EINVAL on a package the host does not have',
    arrange: () => ({ op: 'cpu_hotplug', package: 2, online: false }),
    expect: 'EINVAL',
  },
]);

// --- Malformed arguments (job payloads come from outside) --------------------------------------

runCases(SPEC, 'malformed arguments are refused, never thrown', [
  {
    name: 'close of a fractional fd',
    arrange: (d) => ({ op: 'close', fd: bootTd(d, 'created').vmFd + 0.5 }),
    expect: 'EBADF',
  },
  {
    name: 'KVM_TDX_INIT_VM on NaN',
    arrange: () => initVm(Number.NaN),
    expect: 'EBADF',
  },
  {
    name: 'a memslot with a negative slot id',
    arrange: (d) => {
      const td = bootTd(d, 'created');
      return {
        op: 'KVM_SET_USER_MEMORY_REGION2',
        vm: td.vmFd,
        slot: -1,
        gpa: 64 * MIB,
        bytes: TWO_MIB,
        gmem: extraGmem(d, td.vmFd),
      };
    },
    expect: 'EINVAL',
  },
  {
    name: 'a memslot with a negative guest_memfd offset',
    arrange: (d) => {
      const td = bootTd(d, 'created');
      return {
        op: 'KVM_SET_USER_MEMORY_REGION2',
        vm: td.vmFd,
        slot: 1,
        gpa: 64 * MIB,
        bytes: TWO_MIB,
        gmem: extraGmem(d, td.vmFd),
        gmemOffset: -TWO_MIB,
      };
    },
    expect: 'EINVAL',
  },
  {
    name: 'a fault-in at a negative GPA',
    arrange: (d) => ({
      op: 'KVM_RUN',
      vcpu: defined(bootTd(d, 'exited').vcpuFd, 'vcpu'),
      faultIn: { gpa: -TWO_MIB, bytes: 2 * TWO_MIB },
    }),
    expect: 'EINVAL',
  },
  {
    name: 'a guest_memfd of infinite size',
    arrange: (d) => ({
      op: 'KVM_CREATE_GUEST_MEMFD',
      vm: bootTd(d, 'created').vmFd,
      bytes: Number.POSITIVE_INFINITY,
    }),
    expect: 'EINVAL',
  },
  {
    name: 'a hole with a NaN length',
    arrange: (d) => ({
      op: 'fallocate_punch_hole',
      fd: defined(bootTd(d, 'exited').gmemFd, 'gmem'),
      offset: 0,
      bytes: Number.NaN,
    }),
    expect: 'EINVAL',
  },
  {
    name: 'cpu_hotplug of package -1',
    arrange: () => ({ op: 'cpu_hotplug', package: -1, online: false }),
    expect: 'EINVAL',
  },
]);

// --- References: when a VM is destroyed --------------------------------------------------------

type Ref = 'vm' | 'vcpu' | 'gmem';

function permutations<T>(items: readonly T[]): T[][] {
  if (items.length <= 1) return [items.slice()];
  return items.flatMap((item, i) =>
    permutations([...items.slice(0, i), ...items.slice(i + 1)]).map((rest) => [item, ...rest]),
  );
}

describe('VM references: destroyed exactly when the last one goes', () => {
  const orders = permutations<Ref>(['vm', 'vcpu', 'gmem']);
  for (const order of orders) {
    for (const pinned of [false, true]) {
      const title = `close ${order.join(', ')}${pinned ? ' with an mmap pinning the guest_memfd, then munmap' : ''}`;
      it(`${title} [every kernel]`, () => {
        for (const kernel of ALL_KERNELS) {
          const label = kernelLabel(kernel);
          const d = new Driver(smallHost(kernel));
          const td = bootTd(d, 'exited');
          const hkid = d.vm(td.vmId).hkid;
          const fds: Record<Ref, number> = {
            vm: td.vmFd,
            vcpu: defined(td.vcpuFd, 'vcpu'),
            gmem: defined(td.gmemFd, 'gmem'),
          };
          const map = pinned ? d.ok({ op: 'mmap', fd: fds.gmem }).map : undefined;
          const steps: SimCall[] = order.map((ref) => ({ op: 'close', fd: fds[ref] }));
          if (map !== undefined) steps.push({ op: 'munmap', map });
          // References left after each step: closing a pinned guest_memfd fd drops none.
          let held = 3;
          const refs = [...order, ...(pinned ? ['munmap'] : [])].map((step) => {
            if (!(pinned && step === 'gmem')) held -= 1;
            return held;
          });
          for (const [i, step] of steps.entries()) {
            const outcome = d.okOutcome(step);
            const last = i === steps.length - 1;
            assert.equal(d.state.vms[td.vmId] === undefined, last, `${label}: after step ${i}`);
            assert.deepEqual(outcome.effects.destroyedVms, last ? [td.vmId] : [], label);
            // The HKID goes at destruction, not before (no terminate here).
            assert.equal(outcome.effects.releasedHkid, last ? hkid : null, label);
            if (!last) assert.equal(d.state.vms[td.vmId]?.refs, refs[i], label);
          }
          assert.deepEqual(d.state.files, {}, label);
          assert.deepEqual(d.state.inodes, {}, label);
          d.settle();
          assert.deepEqual(d.state.freeHkids, [1, 2, 3, 4], label);
          assert.equal(d.state.freePages, d.state.totalPages, label);
        }
      });
    }
  }

  it('memslot bindings take no reference: the VM goes with its files, slots and all', () => {
    for (const kernel of ALL_KERNELS) {
      const label = kernelLabel(kernel);
      const d = new Driver(smallHost(kernel));
      const td = bootTd(d, 'exited');
      const refsBefore = d.vm(td.vmId).refs;
      const gmem = extraGmem(d, td.vmFd);
      assert.equal(d.vm(td.vmId).refs, refsBefore + 1, label);
      for (const slot of [1, 2]) {
        d.ok({
          op: 'KVM_SET_USER_MEMORY_REGION2',
          vm: td.vmFd,
          slot,
          gpa: slot * 64 * MIB,
          bytes: 32 * MIB,
          gmem,
          gmemOffset: (slot - 1) * 32 * MIB,
        });
      }
      assert.equal(d.vm(td.vmId).refs, refsBefore + 1, `${label}: two slots, no new reference`);
      d.ok({ op: 'close', fd: gmem });
      // The slots stay, unbound; the reference went with the file.
      assert.equal(d.vm(td.vmId).refs, refsBefore, label);
      assert.equal(d.vm(td.vmId).memslots[1]?.binding, null, label);
      d.ok({ op: 'close', fd: defined(td.gmemFd, 'gmem') });
      d.ok({ op: 'close', fd: defined(td.vcpuFd, 'vcpu') });
      assert.equal(Object.keys(d.vm(td.vmId).memslots).length, 3, label);
      const last = d.okOutcome({ op: 'close', fd: td.vmFd });
      assert.deepEqual(last.effects.destroyedVms, [td.vmId], label);
      assert.equal(d.state.vms[td.vmId], undefined, label);
    }
  });

  it('mainline cold teardown: Dynamic Page Removal on close, the HKID and metadata at destroy', () => {
    const d = new Driver(smallHost(ALL_KERNELS[0] as KernelFeatures));
    const td = bootTd(d, 'exited');
    const vm = d.vm(td.vmId);
    const hkid = vm.hkid;
    const metadata = vm.controlPages + vm.septPages + (vm.vcpus[0]?.controlPages ?? 0);
    d.ok({ op: 'close', fd: defined(td.vcpuFd, 'vcpu') });
    const gmemClose = d.okOutcome({ op: 'close', fd: defined(td.gmemFd, 'gmem') });
    assert.deepEqual(gmemClose.effects.reclaims, [
      { vm: td.vmId, keyState: 'KEYS_CONFIGURED', pages: 1536 },
    ]);
    assert.equal(gmemClose.effects.removedPages, 1536);
    assert.equal(gmemClose.effects.freedPages, 1536, 'the inode died with its only file');
    assert.equal(gmemClose.effects.releasedHkid, null, 'the VM fd still holds the HKID');
    const vmClose = d.okOutcome({ op: 'close', fd: td.vmFd });
    assert.equal(vmClose.effects.releasedHkid, hkid);
    assert.deepEqual(vmClose.effects.reclaims, [
      { vm: td.vmId, keyState: 'TEARDOWN', pages: metadata },
    ]);
    assert.equal(vmClose.effects.reclaimedPages, metadata);
    assert.equal(vmClose.effects.freedPages, metadata);
  });

  for (const kernel of ALL_KERNELS.filter(withTerminate)) {
    it(`terminate then close: fast reclaim, no second HKID release [${kernelLabel(kernel)}]`, () => {
      const d = new Driver(smallHost(kernel));
      const td = bootTd(d, 'exited');
      d.ok(terminate(td.vmFd));
      d.ok({ op: 'close', fd: defined(td.vcpuFd, 'vcpu') });
      d.ok({ op: 'close', fd: td.vmFd });
      const last = d.okOutcome({ op: 'close', fd: defined(td.gmemFd, 'gmem') });
      assert.deepEqual(last.effects.destroyedVms, [td.vmId]);
      assert.equal(last.effects.releasedHkid, null);
      assert.equal(last.effects.removedPages, 0, 'no Dynamic Page Removal after terminate');
      assert.ok(last.effects.reclaims.every((r) => r.keyState === 'TEARDOWN'));
      assert.equal(
        last.effects.reclaimedPages,
        last.effects.reclaims.reduce((sum, r) => sum + r.pages, 0),
      );
      assert.ok(last.effects.reclaimedPages > 1536);
    });
  }

  it('cold reboot at full HKID capacity: ENOSPC until the old VM is gone and settled', () => {
    for (const kernel of ALL_KERNELS) {
      const label = kernelLabel(kernel);
      const d = new Driver(smallHost(kernel, { hkids: 1 }));
      const old = bootTd(d, 'exited');
      const map = defined(d.ok({ op: 'mmap', fd: defined(old.gmemFd, 'gmem') }).map, 'map');
      for (const fd of [defined(old.vcpuFd, 'v'), defined(old.gmemFd, 'g'), old.vmFd]) {
        d.ok({ op: 'close', fd });
      }
      const fresh = bootTd(d, 'created');
      const tryInit = (): string => {
        const outcome = applyCall(d.state, initVm(fresh.vmFd)).outcome;
        return outcome.ok ? 'ok' : outcome.errno;
      };
      assert.equal(tryInit(), 'ENOSPC', `${label}: every fd closed, the mmap keeps the VM`);
      const unmap = d.okOutcome({ op: 'munmap', map });
      assert.deepEqual(unmap.effects.destroyedVms, [old.vmId], label);
      assert.equal(tryInit(), 'ENOSPC', `${label}: the HKID is still in flight`);
      d.state = settleRelease(d.state, defined(unmap.effects.release, 'release'));
      assert.equal(tryInit(), 'ok', label);
    }
  });
});

// --- The seed's reuse flow ---------------------------------------------------------------------

describe('reboot reusing guest memory (terminate + link)', () => {
  for (const kernel of ALL_KERNELS.filter(terminateAndLink)) {
    it(`keeps the guest pages in the inode across the reboot [${kernelLabel(kernel)}]`, () => {
      const d = new Driver(smallHost(kernel, { hkids: 1 }));
      const old = bootTd(d, 'exited', { faultBytes: 30 * MIB });
      const inode = defined(old.inode, 'inode');
      const allocated = d.state.inodes[inode]?.allocated;
      d.ok(terminate(old.vmFd));
      d.ok({ op: 'close', fd: defined(old.vcpuFd, 'vcpu') });
      d.ok({ op: 'close', fd: old.vmFd });
      d.settle();
      const fresh = bootTd(d, 'created', { memoryBytes: 0 });
      const linked = d.ok({
        op: 'KVM_LINK_GUEST_MEMFD',
        vm: fresh.vmFd,
        gmem: defined(old.gmemFd, 'gmem'),
      });
      const newGmem = defined(linked.fd, 'linked fd');
      const last = d.okOutcome({ op: 'close', fd: defined(old.gmemFd, 'gmem') });
      assert.deepEqual(last.effects.destroyedVms, [old.vmId]);
      assert.ok(last.effects.reclaims.every((r) => r.keyState === 'TEARDOWN'));
      assert.deepEqual(d.state.inodes[inode]?.allocated, allocated, 'the pages stay');
      d.settle();
      d.ok({
        op: 'KVM_SET_USER_MEMORY_REGION2',
        vm: fresh.vmFd,
        slot: 0,
        gpa: 0,
        bytes: 64 * MIB,
        gmem: newGmem,
        gmemOffset: 0,
      });
      d.ok(initVm(fresh.vmFd));
      const vcpu = defined(d.ok({ op: 'KVM_CREATE_VCPU', vm: fresh.vmFd }).fd, 'vcpu');
      d.ok({ op: 'KVM_TDX_INIT_VCPU', vcpu });
      d.ok({ op: 'KVM_TDX_FINALIZE_VM', vm: fresh.vmFd });
      const run = d.okOutcome({ op: 'KVM_RUN', vcpu, faultIn: { gpa: 0, bytes: 32 * MIB } });
      assert.equal(run.effects.allocatedPages, 0, 'nothing allocated again');
      assert.equal(run.effects.reusedPages, 8192);
      // Nothing leaked: every page is free but the kept guest pages and the new TD's metadata.
      const vm = d.vm(fresh.vmId);
      const metadata = vm.controlPages + vm.septPages + (vm.vcpus[0]?.controlPages ?? 0);
      assert.equal(d.state.freePages, d.state.totalPages - countPages(allocated ?? []) - metadata);
    });
  }

  for (const kernel of ALL_KERNELS.filter((k) => !withLink(k))) {
    it(`is impossible without the link RFC: ENOTTY, nothing changes [${kernelLabel(kernel)}]`, () => {
      const d = new Driver(smallHost(kernel));
      const old = bootTd(d, 'exited');
      const fresh = bootTd(d, 'created', { memoryBytes: 0 });
      check(
        assert,
        d.state,
        { call: { op: 'KVM_LINK_GUEST_MEMFD', vm: fresh.vmFd, gmem: defined(old.gmemFd, 'g') } },
        'ENOTTY',
      );
    });
  }
});
