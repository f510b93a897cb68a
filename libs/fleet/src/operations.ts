import { PAGES_PER_GIB, PAGE_BYTES } from '#tdx-sim';
import {
  type Intent,
  type Plan,
  type PlanStep,
  type RebootStrategy,
  type TerminateStrategy,
  type VmShape,
  emptyTotals,
  newCursor,
  planBoot,
  planFor,
  shapeProblem,
} from '#vmm';
import { hostTimeAt } from './host-document.js';
import {
  InvalidRequestError,
  KernelFeatureMissingError,
  NoCapacityError,
  NotFoundError,
  VmBusyError,
  VmExistsError,
  VmStateConflictError,
} from './errors.js';
import type {
  Action,
  HostDocument,
  JobStep,
  OperationRecord,
  Strategy,
  VmLifecycle,
  VmRecord,
} from './model.js';

/** What a VM needs from its host: memory in pages (guest plus TDX metadata) and one HKID. */
export function pagesNeeded(
  vcpus: number,
  memoryBytes: number,
  costParams = { tdcsPages: 6, vcpuControlPages: 6 },
): number {
  const guest = Math.ceil(memoryBytes / PAGE_BYTES);
  const sept = Math.ceil(guest / 512 / 512) + Math.ceil(guest / 512);
  return guest + sept + 1 + costParams.tdcsPages + vcpus * costParams.vcpuControlPages;
}

/** Free capacity of a host after what queued and running boots will still take. */
export interface HostCapacity {
  freePages: number;
  freeHkids: number;
}

/** What a host can still give a new VM, counting memory and HKIDs in flight back to it. */
export function hostCapacity(doc: HostDocument): HostCapacity {
  const sim = doc.sim;
  let freePages = sim.freePages + sim.inFlight.reduce((sum, r) => sum + r.pages, 0);
  let freeHkids = sim.freeHkids.length + sim.inFlight.reduce((sum, r) => sum + r.hkids.length, 0);
  for (const op of Object.values(doc.ops)) {
    // A boot, or a reboot of a stopped VM (its plan is a boot): it will take memory and an HKID.
    if (op.intent.action !== 'boot') continue;
    const vm = doc.vms[op.vmId];
    if (vm === undefined) continue;
    freePages -= Math.max(
      0,
      pagesNeeded(vm.vcpus, vm.memoryBytes, sim.config.costParams) - op.totals.allocatedPages,
    );
    const initDone = op.steps.some((s) => s.name === 'init-vm' && s.state === 'done');
    if (!initDone) freeHkids -= 1;
  }
  const limit = sim.config.hkidCgroupLimit;
  if (limit !== null) freeHkids = Math.min(freeHkids, limit - (sim.config.hkids - freeHkids));
  return { freePages, freeHkids };
}

/** Why a host cannot take a VM, or null when it can. */
export function capacityProblem(
  doc: HostDocument,
  vcpus: number,
  memoryBytes: number,
): string | null {
  const { freePages, freeHkids } = hostCapacity(doc);
  const needed = pagesNeeded(vcpus, memoryBytes, doc.sim.config.costParams);
  if (freeHkids < 1) {
    return `host ${doc.id} has no free HKID (${doc.sim.config.hkids} in use or reserved)`;
  }
  if (freePages < needed) {
    const gib = (pages: number) => (pages / PAGES_PER_GIB).toFixed(2);
    return `host ${doc.id} has ${gib(Math.max(0, freePages))} GiB free, the VM needs ${gib(needed)} GiB`;
  }
  if (vcpus > doc.sim.config.cpus) {
    return `host ${doc.id} has ${doc.sim.config.cpus} CPUs, the VM wants ${vcpus} vCPUs`;
  }
  return null;
}

/** Validates a VM's size; throws {@link InvalidRequestError}. */
export function checkShape(vcpus: number, memoryBytes: number): VmShape {
  const shape: VmShape = { vcpus, memoryBytes };
  const problem = shapeProblem(shape);
  if (problem !== null) throw new InvalidRequestError(problem);
  return shape;
}

function newOperation(
  doc: HostDocument,
  vm: VmRecord,
  fields: {
    id: string;
    action: Action;
    strategy: Strategy | null;
    plan: Plan;
    nowMs: number;
    timeScale: number;
    idempotencyKey: string | null;
    batchId: string | null;
  },
): OperationRecord {
  const arrivedAt = hostTimeAt(doc, fields.nowMs, fields.timeScale);
  return {
    id: fields.id,
    hostId: doc.id,
    vmId: vm.id,
    action: fields.action,
    strategy: fields.strategy,
    state: 'queued',
    intent: fields.plan.intent,
    plan: null,
    steps: [],
    tracks: { teardown: newCursor(arrivedAt), boot: newCursor(arrivedAt) },
    bootReleased: !fields.plan.steps.some((s) => s.track === 'teardown'),
    bindings: {},
    totals: emptyTotals(),
    arrivedAt,
    arrival: doc.arrivals,
    startedAt: arrivedAt,
    endsAt: arrivedAt,
    runEndedAt: null,
    nextAt: arrivedAt,
    stuckSinceMs: null,
    previousVmState: vm.state,
    cancelRequested: false,
    cleanupReason: null,
    result: null,
    error: null,
    idempotencyKey: fields.idempotencyKey,
    batchId: fields.batchId,
    createdAtMs: fields.nowMs,
    startedAtMs: null,
    finishedAtMs: null,
  };
}

/** A request to create and boot a VM on a given host. */
export interface CreateVmRequest {
  vmId: string;
  opId: string;
  vcpus: number;
  memoryBytes: number;
  nowMs: number;
  /** How the host's virtual time follows real time: the boot arrives at the host's current one. */
  timeScale?: number;
  idempotencyKey?: string | null;
  batchId?: string | null;
  /**
   * The caller gives `doc` up and keeps no other reference to it (the offline fleet engine): the
   * VM and operation are added to its tables in place, and `doc` comes back as the new document.
   */
  inPlace?: boolean;
}

/**
 * Adds a VM to the host and queues its boot. Throws {@link NoCapacityError} when the host
 * cannot take it and {@link InvalidRequestError} for a bad size.
 */
export function createVm(
  doc: HostDocument,
  request: CreateVmRequest,
): { doc: HostDocument; vm: VmRecord; op: OperationRecord } {
  const shape = checkShape(request.vcpus, request.memoryBytes);
  if (doc.vms[request.vmId] !== undefined) throw new VmExistsError(request.vmId);
  const problem = capacityProblem(doc, request.vcpus, request.memoryBytes);
  if (problem !== null) throw new NoCapacityError(problem, { hostId: doc.id });
  const vm: VmRecord = {
    id: request.vmId,
    hostId: doc.id,
    vcpus: shape.vcpus,
    memoryBytes: shape.memoryBytes,
    state: 'stopped',
    generation: 0,
    handles: null,
    guestMemfds: [],
    activeJob: request.opId,
    createdAtMs: request.nowMs,
    updatedAtMs: request.nowMs,
  };
  const op = newOperation(doc, vm, {
    id: request.opId,
    action: 'boot',
    strategy: null,
    plan: planBoot(shape),
    nowMs: request.nowMs,
    timeScale: request.timeScale ?? 0,
    idempotencyKey: request.idempotencyKey ?? null,
    batchId: request.batchId ?? null,
  });
  vm.state = 'booting';
  if (request.inPlace === true) {
    doc.vms[vm.id] = vm;
    doc.ops[op.id] = op;
    doc.arrivals += 1;
    return { doc, vm, op };
  }
  return {
    doc: {
      ...doc,
      vms: { ...doc.vms, [vm.id]: vm },
      ops: { ...doc.ops, [op.id]: op },
      arrivals: doc.arrivals + 1,
    },
    vm,
    op,
  };
}

/** A request to reboot or terminate a VM. */
export interface OperationRequest {
  opId: string;
  vmId: string;
  action: 'reboot' | 'terminate';
  strategy: Strategy;
  nowMs: number;
  /** How the host's virtual time follows real time: the operation arrives at the host's current one. */
  timeScale?: number;
  idempotencyKey?: string | null;
  batchId?: string | null;
  /**
   * The caller gives `doc` up and keeps no other reference to it (the offline fleet engine): the
   * VM and operation are added to its tables in place, and `doc` comes back as the new document.
   */
  inPlace?: boolean;
}

const LIFECYCLE_DURING: Record<Action, VmLifecycle> = {
  boot: 'booting',
  reboot: 'rebooting',
  terminate: 'terminating',
};

/**
 * Queues a reboot or terminate of a VM. Refused before anything changes when the VM is busy,
 * terminated, or the host's kernel cannot run the strategy.
 */
export function submitOperation(
  doc: HostDocument,
  request: OperationRequest,
): { doc: HostDocument; op: OperationRecord } {
  const vm = doc.vms[request.vmId];
  if (vm === undefined) throw new NotFoundError('vm', request.vmId);
  if (vm.activeJob !== null) throw new VmBusyError(vm.id, vm.activeJob);
  if (vm.state === 'terminated') throw new VmStateConflictError(vm.id, vm.state, request.action);
  const shape: VmShape = { vcpus: vm.vcpus, memoryBytes: vm.memoryBytes };
  const intent: Intent =
    request.action === 'reboot'
      ? { action: 'reboot', strategy: request.strategy as RebootStrategy }
      : { action: 'terminate', strategy: request.strategy as TerminateStrategy };

  let plan: Plan;
  // The kernel must be able to run the strategy, whatever the VM is doing now.
  const planned = planFor(intent, doc.sim.config.kernel, shape, vm.handles ?? emptyHandles());
  if (!planned.ok) {
    const refusal = planned.refusal;
    if (refusal.code === 'KERNEL_FEATURE_MISSING') {
      throw new KernelFeatureMissingError(refusal.feature, refusal.switch, refusal.message);
    }
    throw new InvalidRequestError(refusal.message);
  }
  if (vm.handles === null && request.action === 'reboot') {
    const problem = capacityProblem(doc, vm.vcpus, vm.memoryBytes);
    if (problem !== null) throw new NoCapacityError(problem, { hostId: doc.id });
  }
  if (vm.handles === null) {
    // A stopped VM has nothing to tear down: a reboot boots it, a terminate only records it.
    plan =
      request.action === 'reboot'
        ? planBoot(shape)
        : { intent, steps: [], handoff: null, initialBindings: {} };
  } else {
    plan = planned.plan;
  }
  const op = newOperation(doc, vm, {
    id: request.opId,
    action: request.action,
    strategy: request.strategy,
    plan,
    nowMs: request.nowMs,
    timeScale: request.timeScale ?? 0,
    idempotencyKey: request.idempotencyKey ?? null,
    batchId: request.batchId ?? null,
  });
  const updated: VmRecord = {
    ...vm,
    activeJob: op.id,
    state: LIFECYCLE_DURING[request.action],
    updatedAtMs: request.nowMs,
  };
  if (request.inPlace === true) {
    doc.vms[vm.id] = updated;
    doc.ops[op.id] = op;
    doc.arrivals += 1;
    return { doc, op };
  }
  return {
    doc: {
      ...doc,
      vms: { ...doc.vms, [vm.id]: updated },
      ops: { ...doc.ops, [op.id]: op },
      arrivals: doc.arrivals + 1,
    },
    op,
  };
}

function emptyHandles() {
  return { vm: 0, vcpus: [], guestMemfds: [] };
}

/**
 * Asks an operation to stop. A queued one is cancelled at once (the VM is as it was); a running
 * one stops at its next step boundary (the executor cleans up). Returns the same document when
 * the operation has already finished or was already asked.
 */
export function requestCancel(
  doc: HostDocument,
  opId: string,
  nowMs: number,
): { doc: HostDocument; op: OperationRecord; finished: boolean } {
  const op = doc.ops[opId];
  if (op === undefined) throw new NotFoundError('job', opId);
  if (op.state === 'queued') {
    const cancelled: OperationRecord = {
      ...op,
      state: 'cancelled',
      cancelRequested: true,
      error: { code: 'cancelled', message: 'cancelled before it started' },
      finishedAtMs: nowMs,
      steps: op.steps.map((s) => ({ ...s, state: 'skipped' })),
    };
    const vm = doc.vms[op.vmId];
    const vms = { ...doc.vms };
    if (vm !== undefined) {
      vms[vm.id] = { ...vm, activeJob: null, state: op.previousVmState, updatedAtMs: nowMs };
      if (op.action === 'boot')
        vms[vm.id] = { ...vm, activeJob: null, state: 'stopped', updatedAtMs: nowMs };
    }
    const ops = { ...doc.ops };
    delete ops[opId];
    return { doc: { ...doc, vms, ops }, op: cancelled, finished: true };
  }
  if (op.cancelRequested) return { doc, op, finished: false };
  const asked = { ...op, cancelRequested: true };
  return { doc: { ...doc, ops: { ...doc.ops, [opId]: asked } }, op: asked, finished: false };
}

/** A step of a plan that has not run yet. */
export function pendingJobStep(step: PlanStep): JobStep {
  // Written out, not spread over the engine's record: a reboot makes 17 of these when it starts.
  return {
    name: step.name,
    track: step.track,
    state: 'pending',
    virtualSeconds: 0,
    virtualStart: null,
    waitedSeconds: 0,
    wallMs: 0,
    startedAtMs: null,
    endsAtMs: null,
    waitedMs: 0,
  };
}

/**
 * The plan of an operation on `vm` with `intent`, as submitOperation and createVm built it:
 * deterministic, so a queued operation's plan is rebuilt when it starts.
 */
export function planOperation(doc: HostDocument, vm: VmRecord, intent: Intent): Plan {
  const shape: VmShape = { vcpus: vm.vcpus, memoryBytes: vm.memoryBytes };
  if (intent.action === 'boot') return planBoot(shape);
  if (vm.handles === null) return { intent, steps: [], handoff: null, initialBindings: {} };
  const planned = planFor(intent, doc.sim.config.kernel, shape, vm.handles);
  if (!planned.ok) throw new Error(`VM ${vm.id}: ${planned.refusal.message}`);
  return planned.plan;
}
