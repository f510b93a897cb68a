import type { HostConfig } from './config.js';
import type { HkidReleaseFailure } from './faults.js';
import type { Ranges } from './ranges.js';

/** KVM's view of a TD. */
export type TdState = 'UNINITIALIZED' | 'INITIALIZED' | 'RUNNABLE';
/**
 * The TDX module's key life cycle of a TD; `NONE` before `KVM_TDX_INIT_VM`. A TD stays `BLOCKED`
 * only when `KEY.FREEID` failed: its HKID is leaked and no page of it can be reclaimed.
 */
export type KeyState = 'NONE' | 'HKID_ASSIGNED' | 'KEYS_CONFIGURED' | 'BLOCKED' | 'TEARDOWN';
/** A vCPU's TDX state. */
export type VcpuTdState = 'UNINITIALIZED' | 'INITIALIZED';

/** One vCPU. It lives until its VM is destroyed, whatever happens to its fd. */
export interface VcpuState {
  index: number;
  state: VcpuTdState;
  /** True while a thread is inside `KVM_RUN` on it (holding the vCPU mutex). */
  inIoctl: boolean;
  /** TDVPR + TDCX pages. */
  controlPages: number;
}

/** Which guest_memfd file, and where in its inode, a memslot's private memory comes from. */
export interface MemslotBinding {
  /** The guest_memfd file (its fd number). */
  fd: number;
  inode: number;
  /** First inode page of the slot. */
  offsetPage: number;
}

/**
 * A memslot: an immutable GPA range bound to a guest_memfd range. Private mappings are kept as
 * ranges of inode pages: `added` by `KVM_TDX_INIT_MEM_REGION`, `accepted` after a fault.
 */
export interface MemslotState {
  slot: number;
  gpaPage: number;
  pages: number;
  /** Null once the bound file is released: the slot stays, with nothing behind it. */
  binding: MemslotBinding | null;
  added: Ranges;
  accepted: Ranges;
}

/** One VM (`struct kvm`). Removed from the host when destroyed. */
export interface VmState {
  id: number;
  tdState: TdState;
  keyState: KeyState;
  hkid: number | null;
  /** Set by `KVM_TDX_TERMINATE_VM`: ioctls on the VM return `EIO` (which ones depends on the kernel). */
  dead: boolean;
  /** References: the VM fd, each vCPU fd, each guest_memfd file created or linked for it. */
  refs: number;
  vcpus: VcpuState[];
  memslots: Record<string, MemslotState>;
  /** TDR + TDCS pages. */
  controlPages: number;
  /** S-EPT table pages (freed only when the VM is destroyed). */
  septPages: number;
  /** Private pages currently mapped in this VM's S-EPT. */
  mappedPages: number;
}

/**
 * An open file: what an fd number refers to. `/dev/kvm` and plain memfds hold no VM reference;
 * they are there to be passed where a guest_memfd is expected.
 */
export type FileState =
  | { fd: number; kind: 'kvm' }
  | { fd: number; kind: 'memfd'; pages: number }
  | { fd: number; kind: 'vm'; vm: number }
  | { fd: number; kind: 'vcpu'; vm: number; vcpu: number }
  | {
      fd: number;
      kind: 'gmem';
      vm: number;
      inode: number;
      /** False once the fd is closed; the file lives on while mmaps pin it. */
      fdOpen: boolean;
      mmaps: number;
    };

/** A guest_memfd inode: the physical backing. Lives while any file refers to it. */
export interface InodeState {
  id: number;
  /** Size in pages. */
  pages: number;
  /** Pages that hold host memory (offsets in the inode). */
  allocated: Ranges;
  /** Live files on this inode (one per VM that created or linked it). */
  files: number;
}

/** A userspace mapping of a guest_memfd file. */
export interface MmapState {
  id: number;
  fd: number;
}

/**
 * Memory and HKIDs a call has freed but that are not yet back with the host: they return when
 * the call's virtual time has passed ({@link settleRelease}).
 */
export interface InFlightRelease {
  id: number;
  pages: number;
  hkids: number[];
}

/** One simulated host: KVM + the TDX module + guest_memfd. Plain data; JSON round-trips exactly. */
export interface HostState {
  config: HostConfig;
  totalPages: number;
  freePages: number;
  /** Free HKIDs, ascending. */
  freeHkids: number[];
  /** Per package: whether at least one of its CPUs is online. */
  packagesOnline: boolean[];
  /** When true the TDX module answers busy (`KVM_TDX_FINALIZE_VM` fails `EBUSY`). */
  moduleBusy: boolean;
  vms: Record<string, VmState>;
  files: Record<string, FileState>;
  inodes: Record<string, InodeState>;
  mmaps: Record<string, MmapState>;
  inFlight: InFlightRelease[];
  /** HKIDs lost for good to a failed release: owned by no VM, never free until the host reboots. */
  leakedHkids: number[];
  /** Pages lost for good with a TD whose HKID release failed (nothing can reclaim them). */
  leakedPages: number;
  /** The HKID release steps armed to fail, each at its next attempt (then disarmed). */
  failNext: Record<HkidReleaseFailure, boolean>;
  /** Next ids; fd numbers are never reused, so a script can name them without ambiguity. */
  next: { vm: number; fd: number; inode: number; mmap: number; release: number };
}
