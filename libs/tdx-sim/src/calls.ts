import type { Errno, KvmExit } from './errno.js';
import type { HkidReleaseFailure } from './faults.js';
import type { KeyState } from './state.js';

/**
 * Every operation the simulator accepts: ioctl-shaped calls named as in the kernel, the file
 * operations that matter to VM lifetimes, and host events (CPU hotplug, a busy TDX module, a
 * failure of the next HKID release step). Fds and ids are the numbers earlier calls returned;
 * flags are the kernel's bit masks ({@link FALLOC_FLAGS}, {@link GUEST_MEMFD_FLAGS}).
 */
export type SimCall =
  | { op: 'KVM_CREATE_VM' }
  | { op: 'KVM_TDX_INIT_VM'; vm: number }
  | { op: 'KVM_CREATE_VCPU'; vm: number }
  | { op: 'KVM_TDX_INIT_VCPU'; vcpu: number }
  | { op: 'KVM_TDX_INIT_MEM_REGION'; vcpu: number; gpa: number; bytes: number }
  | { op: 'KVM_TDX_FINALIZE_VM'; vm: number }
  | { op: 'KVM_RUN'; vcpu: number; faultIn?: { gpa: number; bytes: number } }
  | { op: 'vcpu_exit'; vcpu: number }
  | { op: 'KVM_CREATE_GUEST_MEMFD'; vm: number; bytes: number; flags?: number }
  | {
      op: 'KVM_SET_USER_MEMORY_REGION2';
      vm: number;
      slot: number;
      gpa: number;
      bytes: number;
      gmem?: number;
      gmemOffset?: number;
    }
  | { op: 'KVM_TDX_TERMINATE_VM'; vm: number }
  | { op: 'KVM_LINK_GUEST_MEMFD'; vm: number; gmem: number; flags?: number }
  | { op: 'close'; fd: number }
  | { op: 'mmap'; fd: number }
  | { op: 'munmap'; map: number }
  | { op: 'fallocate_punch_hole'; fd: number; offset: number; bytes: number }
  | { op: 'fallocate'; fd: number; mode: number; offset: number; bytes: number }
  | { op: 'open_dev_kvm' }
  | { op: 'memfd_create'; bytes: number }
  | { op: 'fstat'; fd: number }
  | { op: 'read'; fd: number; bytes: number }
  | { op: 'write'; fd: number; bytes: number }
  | { op: 'cpu_hotplug'; package: number; online: boolean }
  | { op: 'tdx_module_busy'; busy: boolean }
  | { op: 'tdx_fail_next'; step: HkidReleaseFailure };

/** The name of a call. */
export type SimOp = SimCall['op'];

/** Every op name, for validation of scripts and job payloads. */
export const SIM_OPS: readonly SimOp[] = [
  'KVM_CREATE_VM',
  'KVM_TDX_INIT_VM',
  'KVM_CREATE_VCPU',
  'KVM_TDX_INIT_VCPU',
  'KVM_TDX_INIT_MEM_REGION',
  'KVM_TDX_FINALIZE_VM',
  'KVM_RUN',
  'vcpu_exit',
  'KVM_CREATE_GUEST_MEMFD',
  'KVM_SET_USER_MEMORY_REGION2',
  'KVM_TDX_TERMINATE_VM',
  'KVM_LINK_GUEST_MEMFD',
  'close',
  'mmap',
  'munmap',
  'fallocate_punch_hole',
  'fallocate',
  'open_dev_kvm',
  'memfd_create',
  'fstat',
  'read',
  'write',
  'cpu_hotplug',
  'tdx_module_busy',
  'tdx_fail_next',
];

/**
 * What a successful call returns: a new fd, inode or mapping id where it creates one; `fstat`'s
 * size in bytes and blocks (512-byte units, as `st_blocks`); `read` and `write` the bytes moved.
 */
export interface CallValue {
  fd?: number;
  inode?: number;
  map?: number;
  vm?: number;
  size?: number;
  blocks?: number;
  bytes?: number;
}

/** Pages taken from a TD by one zap or reclaim, with the key state the TD was in. */
export interface ReclaimRecord {
  vm: number;
  keyState: KeyState;
  pages: number;
}

/** What a successful call did to memory and HKIDs, for summaries and invariant checks. */
export interface CallEffects {
  /** Fresh host pages given to guest_memfd inodes. */
  allocatedPages: number;
  /** Pages mapped into a TD that an inode already held (memory kept across boots). */
  reusedPages: number;
  /** Private pages removed from a RUNNABLE TD by Dynamic Page Removal. */
  removedPages: number;
  /** Pages reclaimed from a TD in TEARDOWN (private, S-EPT and control pages). */
  reclaimedPages: number;
  /** Pages handed back towards the host (in flight until settled). */
  freedPages: number;
  /** The HKID this call released, if any (in flight until settled). */
  releasedHkid: number | null;
  /** The in-flight release this call created, if any. */
  release: number | null;
  /** VMs destroyed by this call (their last reference went). */
  destroyedVms: number[];
  /** Every zap and reclaim with the TD's key state at that moment. */
  reclaims: ReclaimRecord[];
  /** The step of an HKID release that failed in this call (an armed `tdx_fail_next`), if any. */
  hkidReleaseFailure: HkidReleaseFailure | null;
  /** The HKID this call leaked for good (a failed `KEY.FREEID`, or a release failed at destruction). */
  leakedHkid: number | null;
  /** Pages no reclaim can return any more (a TD whose release failed): leaked until the host reboots. */
  leakedPages: number;
}

/** A call that succeeded: its value, its virtual cost and its effects. */
export interface CallSuccess {
  ok: true;
  value: CallValue;
  seconds: number;
  effects: CallEffects;
}

/** A call a guard refused: nothing changed. */
export interface CallFailure {
  ok: false;
  errno: Errno;
  message: string;
  seconds: 0;
  /** Why `KVM_RUN` stopped, when it stopped on a memory fault (`EFAULT`). */
  exit?: KvmExit;
}

/** The outcome of one call. */
export type CallOutcome = CallSuccess | CallFailure;

/** Effects of a call that did nothing to memory or HKIDs. */
export function noEffects(): CallEffects {
  return {
    allocatedPages: 0,
    reusedPages: 0,
    removedPages: 0,
    reclaimedPages: 0,
    freedPages: 0,
    releasedHkid: null,
    release: null,
    destroyedVms: [],
    reclaims: [],
    hkidReleaseFailure: null,
    leakedHkid: null,
    leakedPages: 0,
  };
}
