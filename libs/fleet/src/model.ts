import type { Errno, HostState, SimOp } from '#tdx-sim';
import type {
  Bindings,
  Intent,
  Plan,
  PlanStep,
  PlanSummary,
  RebootStrategy,
  TerminateStrategy,
  Track,
  VmHandles,
} from '#vmm';

/** What a VM can be doing, as the API shows it. */
export const VM_LIFECYCLES = [
  'booting',
  'running',
  'rebooting',
  'terminating',
  'stopped',
  'terminated',
] as const;

/** One of {@link VM_LIFECYCLES}. */
export type VmLifecycle = (typeof VM_LIFECYCLES)[number];

/** One guest_memfd of a VM, and the boot that first allocated its memory. */
export interface GuestMemfdRecord {
  id: string;
  inode: number;
  bytes: number;
  firstBootGeneration: number;
}

/** A VM of the fleet: its size, where it runs, and the fds its VMM holds on the host. */
export interface VmRecord {
  id: string;
  hostId: string;
  vcpus: number;
  memoryBytes: number;
  state: VmLifecycle;
  /** Boots so far: 1 after the first boot, +1 per reboot. */
  generation: number;
  /** The fds of the running VM (null when nothing runs). */
  handles: VmHandles | null;
  guestMemfds: GuestMemfdRecord[];
  /** The queued or running operation, if any: one at a time per VM. */
  activeJob: string | null;
  createdAtMs: number;
  updatedAtMs: number;
}

/** An operation's action. */
export type Action = 'boot' | 'reboot' | 'terminate';
/** An operation's strategy (none for boot). */
export type Strategy = RebootStrategy | TerminateStrategy;

/** Where an operation is. */
export type JobState = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled';

/** One step of an operation as it ran. */
export interface JobStep {
  name: PlanStep['name'];
  track: Track;
  state: 'pending' | 'waiting' | 'done' | 'failed' | 'skipped';
  /** Virtual seconds the step cost. */
  virtualSeconds: number;
  /** Virtual time (from the operation's start) when it started. */
  virtualStart: number | null;
  /** Real milliseconds from the step's start until its virtual time had passed. */
  wallMs: number;
  startedAtMs: number | null;
  /** When its virtual time has passed (and what it freed is back with the host). */
  endsAtMs: number | null;
  /** Real milliseconds spent waiting for an HKID or memory before it could run. */
  waitedMs: number;
  errno?: Errno;
  /** The call that returned `errno`. */
  call?: SimOp;
  message?: string;
  /** Cleanup steps added when the operation was cancelled or failed. */
  cleanup?: boolean;
}

/** A track's cursor: the next step and when it may run. */
export interface TrackCursor {
  /** Index into the plan's steps of this track (in order). */
  next: number;
  readyAtMs: number;
  virtualReadyAt: number;
  /** When the next step first tried and had to wait; null when not waiting. */
  waitingSinceMs: number | null;
}

/** The totals an operation adds up as its steps run. */
export interface OperationTotals {
  reclaimSeconds: number;
  /** The part of `reclaimSeconds` spent by Dynamic Page Removal (pages of a RUNNABLE TD). */
  removalSeconds: number;
  /** The part spent reclaiming pages of a TD in TEARDOWN (and releasing HKIDs). */
  teardownSeconds: number;
  reclaimedPages: number;
  freedPages: number;
  reusedPages: number;
  allocatedPages: number;
  /** Virtual time when the old VM's HKID was released. */
  hkidReleasedAt: number | null;
}

/** The measured outcome of a successful operation: the same totals as a plan run in pure time. */
export type OperationResult = PlanSummary;

/** Why an operation failed or was cancelled. */
export interface OperationError {
  code: 'step_failed' | 'cancelled' | 'wait_timeout';
  message: string;
  step?: PlanStep['name'];
  errno?: Errno;
}

/**
 * One operation on one VM: its plan and how far it got. Lives in its host's document while
 * queued or running, so that each step's effect and the new position commit together.
 */
export interface OperationRecord {
  id: string;
  hostId: string;
  vmId: string;
  action: Action;
  strategy: Strategy | null;
  state: JobState;
  /** What the plan does (a reboot of a stopped VM is a boot). */
  intent: Intent;
  /**
   * The plan while the operation runs; null while it is queued (it is rebuilt from the VM, which
   * cannot change meanwhile, so queued operations stay small in the host document) and once it
   * has finished (its steps record what ran).
   */
  plan: Plan | null;
  /** One per step of the plan, from the moment the operation starts (none while queued). */
  steps: JobStep[];
  tracks: Record<Track, TrackCursor>;
  /** True once the boot track may run (after the plan's handoff step). */
  bootReleased: boolean;
  bindings: Bindings;
  totals: OperationTotals;
  /** The VM's lifecycle state before the operation, restored if it never starts. */
  previousVmState: VmLifecycle;
  cancelRequested: boolean;
  /** Set when the operation switched to cleaning up after a cancel or a failure. */
  cleanupReason: OperationError | null;
  result: OperationResult | null;
  error: OperationError | null;
  idempotencyKey: string | null;
  batchId: string | null;
  createdAtMs: number;
  startedAtMs: number | null;
  finishedAtMs: number | null;
  /** The time scale the operation runs at (fixed when it starts). */
  timeScale: number;
}

/** A release of memory or an HKID that returns to the host at `atMs`. */
export interface ScheduledSettle {
  release: number;
  atMs: number;
}

/** Everything about one simulated host, stored as one versioned document. */
export interface HostDocument {
  id: string;
  /** Bumped by every committed change: the compare-and-set token. */
  version: number;
  createdAtMs: number;
  sim: HostState;
  vms: Record<string, VmRecord>;
  /** Queued and running operations; finished ones leave the document. */
  ops: Record<string, OperationRecord>;
  /** Releases in flight and when they return to the host. */
  settles: ScheduledSettle[];
  /** The host-wide lock of HKID release (the kernel's global lock): free after this time. */
  hkidReleaseBusyUntilMs: number;
}
