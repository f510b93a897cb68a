import type { HostState } from '#tdx-sim';
import type { HkidReleaseAttempts, HkidReleaseFaults } from './release-faults.js';
import type {
  Bindings,
  Intent,
  Micros,
  PendingRelease,
  Plan,
  PlanSummary,
  RebootStrategy,
  RunTotals,
  StepRecord,
  StopReason,
  TerminateStrategy,
  Track,
  TrackCursor,
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

/**
 * One step of an operation as it ran: the engine's record (virtual times) and when it ran in
 * real time, which depends on the time scale and is shown, never computed with.
 */
export interface JobStep extends StepRecord {
  /** Real milliseconds from the step's start until its virtual time had passed. */
  wallMs: number;
  startedAtMs: number | null;
  /** When its virtual time has passed (and what it freed is back with the host). */
  endsAtMs: number | null;
  /** Real milliseconds spent waiting for an HKID, memory or the HKID lock before it could run. */
  waitedMs: number;
}

/** The totals an operation adds up as its steps run. */
export type OperationTotals = RunTotals;

/** The measured outcome of a successful operation: the same totals as a plan run in pure time. */
export type OperationResult = PlanSummary;

/** Why an operation failed or was cancelled. */
export type OperationError = StopReason;

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
  /** Virtual time of its host (microseconds) at which it arrived there (when it was submitted). */
  arrivedAt: Micros;
  /** Its place among the host's arrivals: operations that arrive together start in this order. */
  arrival: number;
  /** Virtual time of its host at which it started (its arrival until then). */
  startedAt: Micros;
  /** When its last step so far ends (its start until a step has run). */
  endsAt: Micros;
  /** When the new VM's `run` step ended, or null. */
  runEndedAt: Micros | null;
  /** When it next has something to do, in its host's virtual time; null while stuck. */
  nextAt: Micros | null;
  /** Real time since which a step has waited with nothing known to change, or null. */
  stuckSinceMs: number | null;
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
  /**
   * The host's virtual clock: the virtual time (whole microseconds) up to which it has been
   * simulated. Operations arrive at the host's current virtual time, and every wait ends at the
   * virtual time its resource comes back: no result depends on the real time or the time scale.
   */
  clock: Micros;
  /** The real time at which the clock was last set: the time scale paces from there. */
  clockAtMs: number;
  /** Operations that have arrived so far: the next arrival's place. */
  arrivals: number;
  /**
   * Releases in flight and the virtual time at which they return to the host: all after `clock`
   * (an advance returns what is due by the time it reaches).
   */
  releases: PendingRelease[];
  /** The host-wide lock of HKID release (the kernel's global lock): free from this virtual time. */
  hkidLockFreeAt: Micros;
  /**
   * Which HKID release attempts fail on this host, for experiments; absent (documents stored
   * before there was a setting too): none.
   */
  hkidReleaseFaults?: HkidReleaseFaults;
  /** Release attempts at each step since the setting was made: what its rules count. */
  hkidReleaseAttempts?: HkidReleaseAttempts;
}
