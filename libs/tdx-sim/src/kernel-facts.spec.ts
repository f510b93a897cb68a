// The finer facts of domain section 8 (what the kernel sources and the KVM selftests assert),
// one row per fact, each run under every kernel switch combination it applies to, with the
// answer each kernel gives. Section 3's guards are in guards.spec.ts.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { hkidUsage, memoryUsage, checkInvariants } from './accounting.js';
import type { SimCall } from './calls.js';
import { FALLOC_FLAGS, GUEST_MEMFD_FLAGS } from './flags.js';
import type { KernelFeatures } from './kernel-switches.js';
import { applyCall } from './host.js';
import { type Act, runCases } from './testing/cases.js';

const SPEC = { describe, it, assert };
import {
  ALL_KERNELS,
  Driver,
  MIB,
  TWO_MIB,
  bootTd,
  defined,
  hkidProblems,
  kernelLabel,
  memoryImbalance,
  smallHost,
} from './testing/harness.js';

const { FALLOC_FL_KEEP_SIZE: KEEP_SIZE, FALLOC_FL_PUNCH_HOLE: PUNCH_HOLE } = FALLOC_FLAGS;
const { GUEST_MEMFD_FLAG_MMAP: MMAP, GUEST_MEMFD_FLAG_INIT_SHARED: INIT_SHARED } =
  GUEST_MEMFD_FLAGS;

const withTerminate = (k: KernelFeatures): boolean => k.terminateVm !== 'none';
const withLink = (k: KernelFeatures): boolean => k.linkGuestMemfd;

/** A VM with one 64 MiB guest_memfd and nothing else; its fds. */
function vmWithGmem(d: Driver): { vmFd: number; gmem: number; inode: number } {
  const td = bootTd(d, 'created');
  return { vmFd: td.vmFd, gmem: defined(td.gmemFd, 'gmem'), inode: defined(td.inode, 'inode') };
}

function fallocate(fd: number, mode: number, offset: number, bytes: number): SimCall {
  return { op: 'fallocate', fd, mode, offset, bytes };
}

/** A memslot call binding `gmem` at GPA 64 MiB, slot 1. */
function bind(vm: number, gmem: number, bytes = TWO_MIB, gmemOffset = 0): SimCall {
  return { op: 'KVM_SET_USER_MEMORY_REGION2', vm, slot: 1, gpa: 64 * MIB, bytes, gmem, gmemOffset };
}

runCases(SPEC, 'allocation: fallocate on a guest_memfd', [
  {
    name: 'mode 0 (allocation that may grow the file) is EOPNOTSUPP',
    arrange: (d) => fallocate(vmWithGmem(d).gmem, 0, 0, TWO_MIB),
    expect: 'EOPNOTSUPP',
  },
  {
    name: 'PUNCH_HOLE without KEEP_SIZE is EOPNOTSUPP',
    arrange: (d) => fallocate(vmWithGmem(d).gmem, PUNCH_HOLE, 0, TWO_MIB),
    expect: 'EOPNOTSUPP',
  },
  {
    name: 'a mode bit guest_memfd does not know is EOPNOTSUPP',
    arrange: (d) => fallocate(vmWithGmem(d).gmem, KEEP_SIZE | 0x10, 0, TWO_MIB),
    expect: 'EOPNOTSUPP',
  },
  {
    name: 'KEEP_SIZE allocates the range in the inode: held, mapped by no TD, counted once',
    arrange: (d) => {
      const { gmem, inode } = vmWithGmem(d);
      d.ok(fallocate(gmem, KEEP_SIZE, 0, 4 * MIB));
      return {
        call: fallocate(gmem, KEEP_SIZE, 0, 8 * MIB),
        then: (after, outcome, before) => {
          assert.equal(outcome.effects.allocatedPages, 1024, 'only the pages not held yet');
          assert.equal(before.freePages - after.freePages, 1024);
          assert.deepEqual(after.inodes[inode]?.allocated, [[0, 2048]]);
          assert.equal(memoryUsage(after).retained, 2048);
          assert.equal(memoryUsage(after).private, 0);
        },
      };
    },
    expect: 'ok',
  },
  {
    name: 'KEEP_SIZE with an offset that is not page-aligned is EINVAL',
    arrange: (d) => fallocate(vmWithGmem(d).gmem, KEEP_SIZE, 100, TWO_MIB),
    expect: 'EINVAL',
  },
  {
    name: 'KEEP_SIZE with a length that is not page-aligned is EINVAL',
    arrange: (d) => fallocate(vmWithGmem(d).gmem, KEEP_SIZE, 0, 4096 + 1),
    expect: 'EINVAL',
  },
  {
    name: 'KEEP_SIZE over a range past the end of the file is EINVAL',
    arrange: (d) => fallocate(vmWithGmem(d).gmem, KEEP_SIZE, 62 * MIB, 4 * MIB),
    expect: 'EINVAL',
  },
  {
    name: 'KEEP_SIZE at the end of the file is EINVAL',
    arrange: (d) => fallocate(vmWithGmem(d).gmem, KEEP_SIZE, 64 * MIB, 4096),
    expect: 'EINVAL',
  },
  {
    name: 'KEEP_SIZE beyond what the host has is ENOMEM',
    host: { memoryBytes: 32 * MIB },
    arrange: (d) => fallocate(vmWithGmem(d).gmem, KEEP_SIZE, 0, 64 * MIB),
    expect: 'ENOMEM',
  },
  {
    name: 'a fault-in on preallocated memory allocates nothing more',
    arrange: (d) => {
      const td = bootTd(d, 'exited', { faultBytes: 0 });
      d.ok(fallocate(defined(td.gmemFd, 'g'), KEEP_SIZE, 0, 64 * MIB));
      return {
        call: {
          op: 'KVM_RUN',
          vcpu: defined(td.vcpuFd, 'vcpu'),
          faultIn: { gpa: TWO_MIB, bytes: 8 * MIB },
        },
        then: (after, outcome, before) => {
          assert.equal(outcome.effects.allocatedPages, 0);
          assert.equal(outcome.effects.reusedPages, 2048);
          const sept = (after.vms[td.vmId]?.septPages ?? 0) - (before.vms[td.vmId]?.septPages ?? 0);
          assert.equal(before.freePages - after.freePages, sept, 'only S-EPT pages are taken');
        },
      };
    },
    expect: 'ok',
  },
]);

runCases(SPEC, 'punching: fallocate(KEEP_SIZE | PUNCH_HOLE)', [
  {
    name: 'an unaligned offset is EINVAL',
    arrange: (d) => fallocate(vmWithGmem(d).gmem, KEEP_SIZE | PUNCH_HOLE, 512, 4096),
    expect: 'EINVAL',
  },
  {
    name: 'an unaligned length is EINVAL',
    arrange: (d) => fallocate(vmWithGmem(d).gmem, KEEP_SIZE | PUNCH_HOLE, 0, 512),
    expect: 'EINVAL',
  },
  {
    name: 'a hole at the end of the file succeeds and does nothing',
    arrange: (d) => ({
      call: fallocate(vmWithGmem(d).gmem, KEEP_SIZE | PUNCH_HOLE, 64 * MIB, TWO_MIB),
      then: (after, outcome, before) => {
        assert.equal(outcome.effects.freedPages, 0);
        assert.deepEqual(after.inodes, before.inodes);
      },
    }),
    expect: 'ok',
  },
  {
    name: 'a hole far beyond the end of the file succeeds',
    arrange: (d) => fallocate(vmWithGmem(d).gmem, KEEP_SIZE | PUNCH_HOLE, 1024 * MIB, 1024 * MIB),
    expect: 'ok',
  },
  {
    name: 'allowed after the VM fd is closed (the guest_memfd keeps the VM)',
    arrange: (d) => {
      const td = bootTd(d, 'exited');
      d.ok({ op: 'close', fd: td.vmFd });
      return fallocate(defined(td.gmemFd, 'g'), KEEP_SIZE | PUNCH_HOLE, 0, 64 * MIB);
    },
    expect: 'ok',
  },
  {
    name: 'a hole inside a 2 MiB leaf splits it (block, track, kick, demote) and costs more',
    kernels: (k) => k.privatePageSize === '2M',
    arrange: (d) => {
      const td = bootTd(d, 'exited');
      const gmem = defined(td.gmemFd, 'g');
      const whole = applyCall(d.state, fallocate(gmem, KEEP_SIZE | PUNCH_HOLE, TWO_MIB, TWO_MIB));
      assert.ok(whole.outcome.ok);
      return {
        call: fallocate(gmem, KEEP_SIZE | PUNCH_HOLE, TWO_MIB + 4096, 4096),
        then: (after, outcome) => {
          assert.equal(outcome.effects.removedPages, 1);
          assert.equal(after.vms[td.vmId]?.mappedPages, 1535);
          // One 4 KiB page plus a split is dearer per page than a whole 2 MiB leaf.
          assert.ok(outcome.seconds > (whole.outcome.seconds / 512) * 2);
        },
      };
    },
    expect: 'ok',
  },
]);

describe('lifetimes: a guest_memfd holds its VM', () => {
  for (const kernel of ALL_KERNELS) {
    it(`after close(VM fd) the guest_memfd allocates and punches; the VM goes with the last file [${kernelLabel(kernel)}]`, () => {
      const d = new Driver(smallHost(kernel));
      const td = bootTd(d, 'exited');
      const gmem = defined(td.gmemFd, 'g');
      d.ok({ op: 'close', fd: td.vmFd });
      d.ok({ op: 'close', fd: defined(td.vcpuFd, 'vcpu') });
      assert.ok(d.state.vms[td.vmId] !== undefined, 'the guest_memfd keeps the VM');
      d.ok(fallocate(gmem, KEEP_SIZE, 0, 64 * MIB));
      d.ok(fallocate(gmem, KEEP_SIZE | PUNCH_HOLE, 0, 32 * MIB));
      const closed = d.okOutcome({ op: 'close', fd: gmem });
      assert.deepEqual(closed.effects.destroyedVms, [td.vmId]);
      d.settle();
      assert.equal(d.state.freePages, d.state.totalPages);
    });
  }
});

runCases(SPEC, 'creation flags: KVM_CREATE_GUEST_MEMFD', [
  {
    name: 'no flags: every kernel',
    arrange: (d) => ({
      op: 'KVM_CREATE_GUEST_MEMFD',
      vm: vmWithGmem(d).vmFd,
      bytes: TWO_MIB,
      flags: 0,
    }),
    expect: 'ok',
  },
  {
    name: 'GUEST_MEMFD_FLAG_MMAP: known from 6.18 on, EINVAL before',
    arrange: (d) => ({
      op: 'KVM_CREATE_GUEST_MEMFD',
      vm: vmWithGmem(d).vmFd,
      bytes: TWO_MIB,
      flags: MMAP,
    }),
    expect: (k) => (k.guestMemfdFlags === 'mmap' ? 'ok' : 'EINVAL'),
  },
  {
    name: 'GUEST_MEMFD_FLAG_INIT_SHARED: never for a TD',
    arrange: (d) => ({
      op: 'KVM_CREATE_GUEST_MEMFD',
      vm: vmWithGmem(d).vmFd,
      bytes: TWO_MIB,
      flags: MMAP | INIT_SHARED,
    }),
    expect: 'EINVAL',
  },
  {
    name: 'an unknown bit is EINVAL',
    arrange: (d) => ({
      op: 'KVM_CREATE_GUEST_MEMFD',
      vm: vmWithGmem(d).vmFd,
      bytes: TWO_MIB,
      flags: 1 << 7,
    }),
    expect: 'EINVAL',
  },
]);

runCases(SPEC, 'what a memslot can bind', [
  {
    name: 'a /dev/kvm fd is EINVAL',
    arrange: (d) => {
      const { vmFd } = vmWithGmem(d);
      return bind(vmFd, defined(d.ok({ op: 'open_dev_kvm' }).fd, 'kvm'));
    },
    expect: 'EINVAL',
  },
  {
    name: 'a VM fd is EINVAL',
    arrange: (d) => {
      const { vmFd } = vmWithGmem(d);
      return bind(vmFd, vmFd);
    },
    expect: 'EINVAL',
  },
  {
    name: 'a plain memfd is EINVAL',
    arrange: (d) => {
      const { vmFd } = vmWithGmem(d);
      return bind(vmFd, defined(d.ok({ op: 'memfd_create', bytes: 64 * MIB }).fd, 'memfd'));
    },
    expect: 'EINVAL',
  },
  {
    name: 'a guest_memfd of another VM is EINVAL',
    arrange: (d) => {
      const first = vmWithGmem(d);
      const other = vmWithGmem(d);
      return bind(first.vmFd, other.gmem);
    },
    expect: 'EINVAL',
  },
  {
    name: 'a fd that is not open is EBADF',
    arrange: (d) => bind(vmWithGmem(d).vmFd, 90),
    expect: 'EBADF',
  },
  {
    name: 'an unaligned guest_memfd offset is EINVAL',
    arrange: (d) => {
      const { vmFd } = vmWithGmem(d);
      const gmem = defined(
        d.ok({ op: 'KVM_CREATE_GUEST_MEMFD', vm: vmFd, bytes: 8 * MIB }).fd,
        'g',
      );
      return bind(vmFd, gmem, TWO_MIB, 100);
    },
    expect: 'EINVAL',
  },
  {
    name: 'an offset plus size past the file is EINVAL',
    arrange: (d) => {
      const { vmFd } = vmWithGmem(d);
      const gmem = defined(
        d.ok({ op: 'KVM_CREATE_GUEST_MEMFD', vm: vmFd, bytes: 8 * MIB }).fd,
        'g',
      );
      return bind(vmFd, gmem, 4 * MIB, 6 * MIB);
    },
    expect: 'EINVAL',
  },
  {
    name: 'a GPA overlap is EEXIST on every tree (the generic check runs first)',
    arrange: (d) => {
      const { vmFd } = vmWithGmem(d);
      const gmem = defined(
        d.ok({ op: 'KVM_CREATE_GUEST_MEMFD', vm: vmFd, bytes: 8 * MIB }).fd,
        'g',
      );
      return { ...bind(vmFd, gmem), gpa: 0 } as SimCall;
    },
    expect: 'EEXIST',
  },
  {
    name: 'a guest_memfd offset overlap without a GPA overlap: EINVAL, EEXIST on the 2026 x86 tree',
    arrange: (d) => {
      const { vmFd } = vmWithGmem(d);
      const gmem = defined(
        d.ok({ op: 'KVM_CREATE_GUEST_MEMFD', vm: vmFd, bytes: 8 * MIB }).fd,
        'g',
      );
      d.ok(bind(vmFd, gmem, 4 * MIB, 0));
      return { ...bind(vmFd, gmem, 4 * MIB, TWO_MIB), slot: 2, gpa: 128 * MIB } as SimCall;
    },
    expect: (k) => (k.guestMemfdTree === 'kvm-x86-2026' ? 'EEXIST' : 'EINVAL'),
  },
]);

runCases(SPEC, 'KVM_LINK_GUEST_MEMFD (RFC v2)', [
  {
    name: 'a plain memfd as the source is EINVAL',
    kernels: withLink,
    arrange: (d) => {
      const target = bootTd(d, 'created', { memoryBytes: 0 });
      const memfd = defined(d.ok({ op: 'memfd_create', bytes: TWO_MIB }).fd, 'memfd');
      return { op: 'KVM_LINK_GUEST_MEMFD', vm: target.vmFd, gmem: memfd };
    },
    expect: 'EINVAL',
  },
  {
    name: 'a closed source fd is EINVAL',
    kernels: withLink,
    arrange: (d) => {
      const source = bootTd(d, 'created');
      const gmem = defined(source.gmemFd, 'g');
      d.ok({ op: 'mmap', fd: gmem });
      d.ok({ op: 'close', fd: gmem });
      const target = bootTd(d, 'created', { memoryBytes: 0 });
      return { op: 'KVM_LINK_GUEST_MEMFD', vm: target.vmFd, gmem };
    },
    expect: 'EINVAL',
  },
  {
    name: 'a link into a terminated VM: EIO under v4, works under aug2025',
    kernels: (k) => withLink(k) && withTerminate(k),
    arrange: (d) => {
      const target = bootTd(d, 'exited', { memoryBytes: 0 });
      d.ok({ op: 'KVM_TDX_TERMINATE_VM', vm: target.vmFd });
      const source = vmWithGmem(d);
      return { op: 'KVM_LINK_GUEST_MEMFD', vm: target.vmFd, gmem: source.gmem };
    },
    expect: (k) => (k.terminateVm === 'aug2025' ? 'ok' : 'EIO'),
  },
]);

runCases(SPEC, 'files: fstat, read and write', [
  {
    name: 'fstat on a guest_memfd gives its size and the blocks its inode holds',
    arrange: (d) => {
      const td = bootTd(d, 'exited');
      return {
        call: { op: 'fstat', fd: defined(td.gmemFd, 'g') },
        then: (_after, outcome) => {
          assert.equal(outcome.value.size, 64 * MIB);
          assert.equal(outcome.value.blocks, (6 * MIB) / 512);
        },
      };
    },
    expect: 'ok',
  },
  {
    name: 'read on a guest_memfd is EINVAL',
    arrange: (d) => ({ op: 'read', fd: vmWithGmem(d).gmem, bytes: 4096 }),
    expect: 'EINVAL',
  },
  {
    name: 'write on a guest_memfd is EINVAL',
    arrange: (d) => ({ op: 'write', fd: vmWithGmem(d).gmem, bytes: 4096 }),
    expect: 'EINVAL',
  },
  {
    name: 'write on a plain memfd works',
    arrange: (d) => ({
      op: 'write',
      fd: defined(d.ok({ op: 'memfd_create', bytes: TWO_MIB }).fd, 'memfd'),
      bytes: 4096,
    }),
    expect: 'ok',
  },
]);

describe('running into removed memory: KVM_RUN stops with KVM_EXIT_MEMORY_FAULT', () => {
  const cases: Array<{ name: string; remove: (d: Driver, td: ReturnType<typeof bootTd>) => void }> =
    [
      {
        name: 'the private memslot was deleted',
        remove: (d, td) =>
          void d.ok({ op: 'KVM_SET_USER_MEMORY_REGION2', vm: td.vmFd, slot: 0, gpa: 0, bytes: 0 }),
      },
      {
        name: 'the memslot has no guest_memfd any more',
        remove: (d, td) => void d.ok({ op: 'close', fd: defined(td.gmemFd, 'g') }),
      },
    ];
  for (const c of cases) {
    for (const kernel of ALL_KERNELS) {
      it(`${c.name} -> EFAULT with the exit [${kernelLabel(kernel)}]`, () => {
        const d = new Driver(smallHost(kernel));
        const td = bootTd(d, 'exited');
        c.remove(d, td);
        const before = d.state;
        const { state, outcome } = applyCall(before, {
          op: 'KVM_RUN',
          vcpu: defined(td.vcpuFd, 'vcpu'),
          faultIn: { gpa: 8 * MIB, bytes: TWO_MIB },
        });
        assert.equal(state, before);
        assert.ok(!outcome.ok);
        assert.equal(outcome.errno, 'EFAULT');
        assert.deepEqual(outcome.exit, {
          reason: 'KVM_EXIT_MEMORY_FAULT',
          flags: ['KVM_MEMORY_EXIT_FLAG_PRIVATE'],
          gpa: 8 * MIB,
          size: 4096,
        });
        assert.equal(state.vms[td.vmId]?.vcpus[0]?.inIoctl, false, 'the vCPU is out of KVM_RUN');
      });
    }
  }
});

// --- Failure paths of the HKID release (section 4) -------------------------------------------

/** Every law the host keeps, after a failure path too. */
function assertConserved(d: Driver, where: string): void {
  assert.deepEqual(checkInvariants(d.state), [], where);
  assert.equal(memoryImbalance(d.state), 0, where);
  assert.deepEqual(hkidProblems(d.state), [], where);
}

describe('a failed VPFLUSHDONE: the HKID is kept, the TD stays RUNNABLE, a later release works', () => {
  for (const kernel of ALL_KERNELS.filter(withTerminate)) {
    it(`at TERMINATE, released at destruction [${kernelLabel(kernel)}]`, () => {
      const d = new Driver(smallHost(kernel));
      const td = bootTd(d, 'exited');
      d.ok({ op: 'tdx_fail_next', step: 'VPFLUSHDONE' });
      const terminated = d.okOutcome({ op: 'KVM_TDX_TERMINATE_VM', vm: td.vmFd });
      assert.equal(terminated.effects.hkidReleaseFailure, 'VPFLUSHDONE');
      assert.equal(terminated.effects.releasedHkid, null);
      const vm = d.vm(td.vmId);
      assert.equal(vm.hkid, 1);
      assert.equal(vm.tdState, 'RUNNABLE');
      assert.equal(vm.keyState, 'KEYS_CONFIGURED');
      assert.equal(d.state.failNext.VPFLUSHDONE, false, 'one failure, then disarmed');
      // Closing the guest_memfd removes its pages the slow way: the TD is not in TEARDOWN.
      const closed = d.okOutcome({ op: 'close', fd: defined(td.gmemFd, 'g') });
      assert.ok(closed.effects.reclaims.every((r) => r.keyState === 'KEYS_CONFIGURED'));
      assert.ok(closed.effects.removedPages > 0);
      d.ok({ op: 'close', fd: defined(td.vcpuFd, 'vcpu') });
      const destroyed = d.okOutcome({ op: 'close', fd: td.vmFd });
      assert.equal(destroyed.effects.releasedHkid, 1, 'the release at destruction succeeds');
      d.settle();
      assertConserved(d, 'after destruction');
      assert.equal(d.state.freePages, d.state.totalPages);
      assert.equal(hkidUsage(d.state).free, 4);
    });
  }
  for (const kernel of ALL_KERNELS) {
    it(`at destruction (no later try): the HKID and the TD's pages leak [${kernelLabel(kernel)}]`, () => {
      const d = new Driver(smallHost(kernel));
      const td = bootTd(d, 'exited');
      d.ok({ op: 'close', fd: defined(td.gmemFd, 'g') });
      d.ok({ op: 'close', fd: defined(td.vcpuFd, 'vcpu') });
      d.ok({ op: 'tdx_fail_next', step: 'VPFLUSHDONE' });
      const destroyed = d.okOutcome({ op: 'close', fd: td.vmFd });
      assert.equal(destroyed.effects.leakedHkid, 1);
      assert.ok(destroyed.effects.leakedPages > 0);
      assert.deepEqual(destroyed.effects.reclaims, []);
      d.settle();
      assertConserved(d, 'after destruction');
      assert.equal(hkidUsage(d.state).leaked, 1);
      assert.equal(memoryUsage(d.state).leaked, destroyed.effects.leakedPages);
    });
  }
});

describe('a failed KEY.FREEID: the HKID is leaked for good, owned by no VM', () => {
  for (const kernel of ALL_KERNELS) {
    it(`leaked apart from zombies; the BLOCKED TD's pages are lost; never free again [${kernelLabel(kernel)}]`, () => {
      const d = new Driver(smallHost(kernel, { hkids: 2 }));
      const td = bootTd(d, 'exited');
      d.ok({ op: 'tdx_fail_next', step: 'FREEID' });
      const first =
        kernel.terminateVm === 'none'
          ? (d.ok({ op: 'close', fd: defined(td.vcpuFd, 'vcpu') }),
            d.ok({ op: 'close', fd: td.vmFd }),
            d.okOutcome({ op: 'close', fd: defined(td.gmemFd, 'g') }))
          : d.okOutcome({ op: 'KVM_TDX_TERMINATE_VM', vm: td.vmFd });
      assert.equal(first.effects.hkidReleaseFailure, 'FREEID');
      assert.equal(first.effects.leakedHkid, 1);
      d.settle();
      const usage = hkidUsage(d.state);
      assert.deepEqual([usage.leaked, usage.zombies, usage.free], [1, 0, 1]);
      assertConserved(d, 'after the failure');
      if (kernel.terminateVm !== 'none') {
        assert.equal(d.vm(td.vmId).keyState, 'BLOCKED');
        const closed = d.okOutcome({ op: 'close', fd: defined(td.gmemFd, 'g') });
        assert.ok(closed.effects.leakedPages > 0, 'no page of a BLOCKED TD comes back');
        assert.deepEqual(closed.effects.reclaims, []);
        d.ok({ op: 'close', fd: defined(td.vcpuFd, 'vcpu') });
        d.ok({ op: 'close', fd: td.vmFd });
        d.settle();
        assertConserved(d, 'after closing everything');
      }
      // The next TD takes the other HKID; the one after finds none.
      bootTd(d, 'initVm', { memoryBytes: 0 });
      const third = bootTd(d, 'created', { memoryBytes: 0 });
      const refused = applyCall(d.state, { op: 'KVM_TDX_INIT_VM', vm: third.vmFd }).outcome;
      assert.ok(!refused.ok && refused.errno === 'ENOSPC');
    });
  }
});

runCases(SPEC, 'arming a failure', [
  {
    name: 'tdx_fail_next refuses a step that cannot fail',
    arrange: () => ({ op: 'tdx_fail_next', step: 'TDH.MEM.PAGE.ADD' as never }),
    expect: 'EINVAL',
  },
  {
    name: 'a failure armed and not reached changes no release: TERMINATE works after a refusal',
    kernels: withTerminate,
    arrange: (d) => {
      const td = bootTd(d, 'running');
      d.ok({ op: 'tdx_fail_next', step: 'FREEID' });
      // Refused (a vCPU is inside KVM_RUN): the armed failure must still be there.
      assert.ok(!applyCall(d.state, { op: 'KVM_TDX_TERMINATE_VM', vm: td.vmFd }).outcome.ok);
      d.ok({ op: 'vcpu_exit', vcpu: defined(td.vcpuFd, 'vcpu') });
      const act: Act = {
        call: { op: 'KVM_TDX_TERMINATE_VM', vm: td.vmFd },
        then: (after, outcome) => {
          assert.equal(outcome.effects.hkidReleaseFailure, 'FREEID');
          assert.deepEqual(after.leakedHkids, [1]);
        },
      };
      return act;
    },
    expect: 'ok',
  },
]);
