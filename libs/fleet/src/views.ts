import {
  type KernelFeatures,
  type CostModelName,
  GIB_BYTES,
  countPages,
  hkidUsage,
  memoryUsageBytes,
  pagesToBytes,
} from '#tdx-sim';
import { toSeconds } from '#vmm';
import type {
  Action,
  HostDocument,
  JobState,
  OperationError,
  OperationRecord,
  OperationResult,
  Strategy,
  VmLifecycle,
  VmRecord,
} from './model.js';
import {
  type HkidReleaseAttempts,
  type HkidReleaseFaults,
  noReleaseAttempts,
} from './release-faults.js';

/** A host as the API shows it. */
export interface HostView {
  id: string;
  capacity: {
    memoryBytes: number;
    memoryGiB: number;
    hkids: number;
    packages: number;
    cpus: number;
    hkidCgroupLimit: number | null;
  };
  kernel: KernelFeatures;
  costModel: CostModelName;
  usage: {
    memory: {
      freeBytes: number;
      privateBytes: number;
      retainedBytes: number;
      orphanedBytes: number;
      controlBytes: number;
      inFlightBytes: number;
      /** Held by TDs whose HKID release failed: no reclaim returns it until the host reboots. */
      leakedBytes: number;
    };
    /**
     * `used` (held by VMs or being released) + `leaked` + free = `total`. Zombies are some of
     * the used ones (their VM's fds are closed); leaked ones are owned by no VM at all.
     */
    hkids: { used: number; total: number; zombies: number; leaked: number };
  };
  /** Which HKID release attempts fail, and the attempts its rules have counted so far. */
  hkidReleaseFaults: HkidReleaseFaults;
  hkidReleaseAttempts: HkidReleaseAttempts;
  vms: number;
  activeJobs: number;
  /** Of its active jobs, those running and those queued on the host (waiting for a slot). */
  runningJobs: number;
  queuedJobs: number;
  createdAt: string;
}

/**
 * The host as it was last simulated, at its clock (what was due by then has come back: a worker
 * wakes when the next release is due). `_nowMs` is kept for callers that show hosts beside jobs
 * at one real time.
 */
export function hostView(doc: HostDocument, _nowMs: number): HostView {
  const config = doc.sim.config;
  const memory = memoryUsageBytes(doc.sim);
  const hkids = hkidUsage(doc.sim);
  return {
    id: doc.id,
    capacity: {
      memoryBytes: config.memoryBytes,
      memoryGiB: config.memoryBytes / GIB_BYTES,
      hkids: config.hkids,
      packages: config.packages,
      cpus: config.cpus,
      hkidCgroupLimit: config.hkidCgroupLimit,
    },
    kernel: config.kernel,
    costModel: config.costModel,
    usage: {
      memory: {
        freeBytes: memory.free,
        privateBytes: memory.private,
        retainedBytes: memory.retained,
        orphanedBytes: memory.orphaned,
        controlBytes: memory.control + memory.sept,
        inFlightBytes: memory.inFlight,
        leakedBytes: memory.leaked,
      },
      hkids: {
        used: hkids.owned + hkids.inFlight,
        total: hkids.total,
        zombies: hkids.zombies,
        leaked: hkids.leaked,
      },
    },
    hkidReleaseFaults: doc.hkidReleaseFaults ?? {},
    hkidReleaseAttempts: doc.hkidReleaseAttempts ?? noReleaseAttempts(),
    vms: Object.values(doc.vms).filter((vm) => vm.state !== 'terminated').length,
    activeJobs: Object.keys(doc.ops).length,
    ...jobCounts(doc),
    createdAt: new Date(doc.createdAtMs).toISOString(),
  };
}

function jobCounts(doc: HostDocument): { runningJobs: number; queuedJobs: number } {
  let runningJobs = 0;
  let queuedJobs = 0;
  for (const op of Object.values(doc.ops)) {
    if (op.state === 'running') runningJobs += 1;
    else if (op.state === 'queued') queuedJobs += 1;
  }
  return { runningJobs, queuedJobs };
}

/** A VM as the API shows it. */
export interface VmView {
  id: string;
  hostId: string;
  state: VmLifecycle;
  hkid: number | null;
  generation: number;
  vcpus: number;
  memoryGiB: number;
  memoryBytes: number;
  memslots: Array<{ slot: number; gpa: number; bytes: number; guestMemfd: string | null }>;
  guestMemfds: Array<{
    id: string;
    bytes: number;
    allocatedBytes: number;
    firstBootGeneration: number;
  }>;
  activeJob: string | null;
  createdAt: string;
  updatedAt: string;
}

/** The VM as its host document records it. */
export function vmView(doc: HostDocument, vm: VmRecord): VmView {
  const vmFile = vm.handles === null ? undefined : doc.sim.files[vm.handles.vm];
  const simVm = vmFile?.kind === 'vm' ? doc.sim.vms[vmFile.vm] : undefined;
  const memslots =
    simVm === undefined
      ? []
      : Object.values(simVm.memslots).map((m) => ({
          slot: m.slot,
          gpa: pagesToBytes(m.gpaPage),
          bytes: pagesToBytes(m.pages),
          guestMemfd: m.binding === null ? null : `gmem-${m.binding.inode}`,
        }));
  return {
    id: vm.id,
    hostId: vm.hostId,
    state: vm.state,
    hkid: simVm?.hkid ?? null,
    generation: vm.generation,
    vcpus: vm.vcpus,
    memoryGiB: vm.memoryBytes / GIB_BYTES,
    memoryBytes: vm.memoryBytes,
    memslots,
    guestMemfds: vm.guestMemfds.map((g) => {
      const inode = doc.sim.inodes[g.inode];
      const allocated = inode === undefined ? 0 : countPages(inode.allocated);
      return {
        id: g.id,
        bytes: g.bytes,
        allocatedBytes: pagesToBytes(allocated),
        firstBootGeneration: g.firstBootGeneration,
      };
    }),
    activeJob: vm.activeJob,
    createdAt: new Date(vm.createdAtMs).toISOString(),
    updatedAt: new Date(vm.updatedAtMs).toISOString(),
  };
}

/** A job as the API shows it. */
export interface JobView {
  id: string;
  vmId: string;
  hostId: string;
  action: Action;
  strategy: Strategy | null;
  state: JobState;
  progress: { stepsDone: number; stepsTotal: number; fraction: number };
  steps: Array<{
    name: string;
    track: string;
    state: 'pending' | 'waiting' | 'running' | 'done' | 'failed' | 'skipped';
    virtualSeconds: number;
    /** Virtual time of its start, from the job's start (null until it runs). */
    virtualStart: number | null;
    /** Virtual seconds it waited for an HKID, memory or the HKID release lock. */
    waitedSeconds: number;
    wallMs: number;
    waitedMs: number;
    errno?: string;
    cleanup?: boolean;
  }>;
  /**
   * Its host's virtual clock (seconds) when it arrived there, started and ended: an experiment
   * puts them on its own clock. Start and end are null until they happen, and both stay null for
   * a job cancelled before it started (it spent no virtual time on its host).
   */
  virtualArrivedAt: number;
  virtualStartedAt: number | null;
  virtualFinishedAt: number | null;
  result?: OperationResult;
  error?: OperationError;
  cancelRequested: boolean;
  batchId: string | null;
  createdAt: string;
  startedAt: string | null;
  finishedAt: string | null;
}

/** An operation as seen at `nowMs`: a step whose virtual time has not passed is running. */
export function jobView(op: OperationRecord, nowMs: number): JobView {
  const steps = op.steps.map((s) => {
    const running =
      s.state === 'done' && s.endsAtMs !== null && s.endsAtMs > nowMs && op.finishedAtMs === null;
    const view: JobView['steps'][number] = {
      name: s.name,
      track: s.track,
      state: running ? 'running' : s.state,
      virtualSeconds: s.virtualSeconds,
      virtualStart: s.virtualStart,
      waitedSeconds: s.waitedSeconds,
      wallMs: Math.round(s.wallMs),
      waitedMs: Math.round(s.waitedMs),
    };
    if (s.errno !== undefined) view.errno = s.errno;
    if (s.cleanup === true) view.cleanup = true;
    return view;
  });
  const started = op.startedAtMs !== null;
  const counted = steps.filter((s) => s.state !== 'skipped');
  const done = counted.filter((s) => s.state === 'done' || s.state === 'failed').length;
  const view: JobView = {
    id: op.id,
    vmId: op.vmId,
    hostId: op.hostId,
    action: op.action,
    strategy: op.strategy,
    state: op.state,
    progress: {
      stepsDone: done,
      stepsTotal: counted.length,
      fraction: counted.length === 0 ? (op.finishedAtMs === null ? 0 : 1) : done / counted.length,
    },
    steps,
    virtualArrivedAt: toSeconds(op.arrivedAt),
    virtualStartedAt: started ? toSeconds(op.startedAt) : null,
    // A started operation ends when its last step does (the executor finishes it then).
    virtualFinishedAt: started && op.finishedAtMs !== null ? toSeconds(op.endsAt) : null,
    cancelRequested: op.cancelRequested,
    batchId: op.batchId,
    createdAt: new Date(op.createdAtMs).toISOString(),
    startedAt: op.startedAtMs === null ? null : new Date(op.startedAtMs).toISOString(),
    finishedAt: op.finishedAtMs === null ? null : new Date(op.finishedAtMs).toISOString(),
  };
  if (op.result !== null) view.result = op.result;
  if (op.error !== null) view.error = op.error;
  return view;
}
