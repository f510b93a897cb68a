import {
  type CostModelName,
  type HostState,
  type KernelFeatures,
  createHost,
  GIB_BYTES,
  makeHostConfig,
} from '#tdx-sim';
import {
  type Intent,
  type RebootStrategy,
  type TerminateStrategy,
  type PlanRefusal,
  type PlanRun,
  type VmShape,
  handlesAfter,
  planFor,
  runPlan,
  shapeOfGiB,
} from '#vmm';

/** One row of the seed's table (the TERMINATE_VM V4 commit message, June 2025). */
export interface SeedRow {
  vcpus: number;
  memoryGiB: number;
  beforeSeconds: number;
  afterSeconds: number;
}

/** The seed's measurements: reclaim seconds before and after KVM_TDX_TERMINATE_VM. */
export const SEED_TABLE: readonly SeedRow[] = [
  { vcpus: 4, memoryGiB: 18, beforeSeconds: 72, afterSeconds: 24 },
  { vcpus: 32, memoryGiB: 107, beforeSeconds: 517, afterSeconds: 134 },
  { vcpus: 64, memoryGiB: 400, beforeSeconds: 5539, afterSeconds: 467 },
];

/** The range of vCPUs and memory the seed's table covers; outside it the model extrapolates. */
export const CALIBRATED_RANGE = { vcpus: [4, 64], memoryGiB: [18, 400] } as const;

/** True when a size lies outside the seed's table. */
export function outsideCalibratedRange(vcpus: number, memoryGiB: number): boolean {
  return (
    vcpus < CALIBRATED_RANGE.vcpus[0] ||
    vcpus > CALIBRATED_RANGE.vcpus[1] ||
    memoryGiB < CALIBRATED_RANGE.memoryGiB[0] ||
    memoryGiB > CALIBRATED_RANGE.memoryGiB[1]
  );
}

/** Raised when an experiment's plan is refused by the host's kernel or the VM's shape. */
export class PlanRefusedError extends Error {
  constructor(readonly refusal: PlanRefusal) {
    super(refusal.message);
    this.name = 'PlanRefusedError';
  }
}

/** Runs `intent`'s plan on `state`, or throws {@link PlanRefusedError}. */
export function runIntent(
  state: HostState,
  intent: Intent,
  shape: VmShape,
  bootRun?: PlanRun,
): PlanRun {
  const handles = bootRun === undefined ? undefined : handlesAfter(shape, bootRun.bindings);
  const planned = planFor(intent, state.config.kernel, shape, handles);
  if (!planned.ok) throw new PlanRefusedError(planned.refusal);
  return runPlan(state, planned.plan);
}

/** Options of a single-host experiment. */
export interface HostOptions {
  kernel?: Partial<KernelFeatures>;
  model?: CostModelName;
  hostMemoryGiB?: number;
  hkids?: number;
  packages?: number;
}

/**
 * A host with room for two VMs of `memoryGiB` (old and new side by side) and `extraGiB` more,
 * unless told otherwise.
 */
export function hostFor(memoryGiB: number, options: HostOptions = {}, extraGiB = 0): HostState {
  const config = makeHostConfig({
    memoryGiB: options.hostMemoryGiB ?? Math.ceil(2 * memoryGiB + 8 + extraGiB),
    hkids: options.hkids ?? 63,
    packages: options.packages ?? 2,
    cpus: Math.max(128, options.packages ?? 2),
    costModel: options.model ?? 'calibrated',
    kernel: options.kernel ?? {},
  });
  return createHost(config);
}

/** Raised when the VM an experiment needs does not boot (the host is too small, say). */
export class BootFailedError extends Error {
  constructor(run: PlanRun) {
    super(
      `the VM did not boot: ${run.failure?.step ?? '?'} failed with ${run.failure?.message ?? ''}`,
    );
    this.name = 'BootFailedError';
  }
}

/** Boots a VM of `shape` on `state` (faulting in all its memory); throws if the boot fails. */
export function bootVm(state: HostState, shape: VmShape): PlanRun {
  const run = runIntent(state, { action: 'boot' }, shape);
  if (!run.ok) throw new BootFailedError(run);
  return run;
}

/** Simulated reclaim seconds of one VM size, by the mainline path and by the terminate path. */
export interface ReclaimResult {
  beforeSeconds: number;
  afterSeconds: number;
}

/**
 * Boots a VM, faults in all its memory, and tears it down twice from the same state: by closing
 * everything (Dynamic Page Removal, "before") and with KVM_TDX_TERMINATE_VM first ("after").
 * The seconds are the reclaim work of those plans as tdx-sim ran them.
 */
export function simulateReclaim(
  vcpus: number,
  memoryGiB: number,
  model: CostModelName,
): ReclaimResult {
  const shape = shapeOfGiB(vcpus, memoryGiB);
  const host = hostFor(memoryGiB, { model, kernel: { terminateVm: 'v4' } });
  const boot = bootVm(host, shape);
  const teardown = (strategy: TerminateStrategy): number => {
    const run = runIntent(boot.state, { action: 'terminate', strategy }, shape, boot);
    if (!run.ok) throw new Error(`teardown ${strategy} failed: ${run.failure?.message ?? ''}`);
    return run.summary.reclaimSeconds;
  };
  return { beforeSeconds: teardown('close'), afterSeconds: teardown('terminate') };
}

/** A row of `sim reclaim-table`. */
export interface ReclaimTableRow {
  vcpus: number;
  memoryGiB: number;
  seed: { beforeSeconds: number; afterSeconds: number };
  simulated: ReclaimResult;
}

/** The seed's table beside the simulation of each of its rows. */
export function reclaimTable(model: CostModelName): {
  model: CostModelName;
  rows: ReclaimTableRow[];
} {
  return {
    model,
    rows: SEED_TABLE.map((row) => ({
      vcpus: row.vcpus,
      memoryGiB: row.memoryGiB,
      seed: { beforeSeconds: row.beforeSeconds, afterSeconds: row.afterSeconds },
      simulated: simulateReclaim(row.vcpus, row.memoryGiB, model),
    })),
  };
}

/** Options of `sim reboot`. */
export interface RebootExperiment extends HostOptions {
  strategy: RebootStrategy;
  vcpus: number;
  memoryGiB: number;
  /** Other VMs booted first, each holding an HKID (to try a host at full HKID capacity). */
  otherVms?: number;
  /** Whether the VMM preallocates the guest memory when it creates the guest_memfds. */
  preallocate?: boolean;
}

/** Boots a VM and reboots it with a strategy; returns the reboot's run. */
export function rebootOnce(options: RebootExperiment): PlanRun {
  const shape = {
    ...shapeOfGiB(options.vcpus, options.memoryGiB),
    preallocate: options.preallocate === true,
  };
  const others = options.otherVms ?? 0;
  const small = shapeOfGiB(1, 0.25);
  let host = hostFor(options.memoryGiB, options, others * 0.5);
  // Refuse before any boot, so a refusal never depends on whether the boot would fit.
  const refusal = planFor(
    { action: 'reboot', strategy: options.strategy },
    host.config.kernel,
    shape,
    { vm: 0, vcpus: [], guestMemfds: [] },
  );
  if (!refusal.ok) throw new PlanRefusedError(refusal.refusal);
  for (let i = 0; i < others; i += 1) host = bootVm(host, small).state;
  const boot = bootVm(host, shape);
  return runIntent(boot.state, { action: 'reboot', strategy: options.strategy }, shape, boot);
}

/** GiB with two decimals, for reports. */
export function formatGiB(bytes: number): string {
  return `${(bytes / GIB_BYTES).toFixed(2)} GiB`;
}
