import {
  type OfflineOperation,
  type OfflineRefusal,
  type OfflineRequest,
  OfflineFleet,
} from '#fleet';
import { gibToBytes } from '#tdx-sim';
import { type BuiltFleet, type FleetVm, buildFleet } from './fleet-builder.js';
import {
  type MeasuredOperation,
  type MeasuredRefusal,
  type RunRecord,
  causes,
  groupStats,
  runMetrics,
  seriesColumns,
  slowestOperations,
} from './measure.js';
import { type PhaseRequest, PhaseDriver } from './phases.js';
import type { RunResult } from './result.js';
import type { Scenario } from './scenario.js';
import type { Variant } from './sweep.js';
import { checkReferences, checkThresholds } from './thresholds.js';

// One run of a scenario (one variant, one seed) on the offline fleet engine: the fleet is
// booted, then the phase driver issues its operations from the engine's listener at the virtual
// times they end, and at its own timers between runs of the engine.

/** A scenario's run that could not run: the fleet did not boot, or the phases never ended. */
export class ExperimentError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ExperimentError';
  }
}

/** Progress of one run, for a progress bar. */
export interface RunProgress {
  virtualTime: number;
  /** Operations of the phases issued so far, and ended. */
  issued: number;
  ended: number;
}

export interface RunOnceOptions {
  onProgress?: ((progress: RunProgress) => void) | undefined;
}

/** The data of one run, ready to measure. */
export function simulateRun(
  scenario: Scenario,
  variant: Variant,
  seed: number,
  options: RunOnceOptions = {},
): RunRecord {
  const fleet = buildFleet(scenario, variant, seed);
  const driver = new PhaseDriver(scenario, variant, fleet, seed);
  const vmById = new Map<string, FleetVm>(fleet.vms.map((vm) => [vm.id, vm]));
  const issuedFor = new Map<string, PhaseRequest>();
  const operations: MeasuredOperation[] = [];
  const refusals: MeasuredRefusal[] = [];
  const bootFailures: string[] = [];
  let booted = 0;
  let issued = 0;

  // `engine` is set before the driver can issue anything (the listener runs inside it).
  let engine: OfflineFleet | null = null;
  const toEngine = (requests: readonly PhaseRequest[], at: number): OfflineRequest[] => {
    for (const boundary of driver.takeBoundaries()) engine?.sampleAlsoAt(boundary);
    return requests.map((request) => {
      issuedFor.set(request.vmId, request);
      issued += 1;
      return { at, action: request.action, vmId: request.vmId, strategy: request.strategy };
    });
  };
  const bootDone = (at: number): OfflineRequest[] => {
    booted += 1;
    if (booted < fleet.vms.length) return [];
    if (bootFailures.length > 0) {
      throw new ExperimentError(
        `the fleet did not boot: ${bootFailures.length} VMs failed (first: ${bootFailures[0]})`,
      );
    }
    return toEngine(driver.start(at), at);
  };

  engine = new OfflineFleet({
    hosts: fleet.hosts,
    vms: fleet.vms.map((vm) => ({
      id: vm.id,
      vcpus: vm.vcpus,
      memoryGiB: vm.memoryGiB,
      hostId: vm.hostId,
    })),
    requests: fleet.vms.map((vm) => ({ at: 0, action: 'boot', vmId: vm.id })),
    limits: {
      hostConcurrency: variant.hostConcurrency ?? scenario.limits.hostConcurrency,
      globalConcurrency: scenario.limits.globalConcurrency,
      maxWaitSeconds: scenario.limits.maxWaitSeconds,
    },
    sampleEverySeconds: scenario.sampleEverySeconds,
    listener: {
      ended: (op: OfflineOperation, at: number) => {
        if (op.action === 'boot') {
          if (op.state !== 'succeeded') {
            bootFailures.push(`${op.vmId}: ${op.error?.message ?? op.state}`);
          }
          return bootDone(at);
        }
        const request = issuedFor.get(op.vmId);
        if (request === undefined) return [];
        issuedFor.delete(op.vmId);
        const vm = vmById.get(op.vmId) as FleetVm;
        operations.push(
          measuredFromOffline(op, {
            phase: request.phase,
            vmGroup: vm.group,
            vcpus: vm.vcpus,
            memoryGiB: vm.memoryGiB,
          }),
        );
        options.onProgress?.({
          virtualTime: at,
          issued,
          ended: operations.length + refusals.length,
        });
        return toEngine(
          driver.ended(
            op.vmId,
            at,
            op.state === 'succeeded'
              ? 'succeeded'
              : op.state === 'cancelled'
                ? 'cancelled'
                : 'failed',
          ),
          at,
        );
      },
      nextWake: () => driver.nextAt(),
      wake: (at: number) => toEngine(driver.tick(at), at),
      refused: (refusal: OfflineRefusal) => {
        if (refusal.action === 'boot') {
          bootFailures.push(`${refusal.vmId ?? '?'}: ${refusal.message}`);
          return bootDone(refusal.at);
        }
        const request = refusal.vmId === null ? undefined : issuedFor.get(refusal.vmId);
        if (request === undefined || refusal.vmId === null) return [];
        issuedFor.delete(refusal.vmId);
        refusals.push({
          phase: request.phase,
          vmId: refusal.vmId,
          vmGroup: vmById.get(refusal.vmId)?.group ?? null,
          action: request.action,
          strategy: request.strategy,
          code: refusal.code,
        });
        return toEngine(driver.ended(refusal.vmId, refusal.at, 'refused'), refusal.at);
      },
    },
  });
  const fleetEngine = engine;
  if (fleet.vms.length === 0) fleetEngine.schedule(toEngine(driver.start(0), 0));

  // The driver's timers (arrivals, a delayed phase) wake it through the listener too, so the
  // whole run is one run of the engine.
  fleetEngine.run();
  if (!driver.done) {
    throw new ExperimentError(
      `the phases did not end: ${issuedFor.size} operations never ended (first: ${[...issuedFor.keys()][0] ?? 'none'})`,
    );
  }
  for (const phase of driver.unserved) {
    const spec = scenario.phases.find((p) => p.name === phase);
    refusals.push({
      phase,
      vmId: null,
      vmGroup: null,
      action: spec?.action ?? 'reboot',
      strategy: null,
      code: 'no_idle_vm',
    });
  }
  for (const boundary of driver.takeBoundaries()) fleetEngine.sampleAlsoAt(boundary);
  const output = fleetEngine.output();
  return {
    operations,
    refusals,
    phases: [...driver.phaseSpans()],
    series: { everySeconds: output.series.everySeconds, samples: output.series.fleet },
    capacity: capacityOf(fleet),
  };
}

function capacityOf(fleet: BuiltFleet): RunRecord['capacity'] {
  return {
    hosts: fleet.hosts.length,
    vms: fleet.vms.length,
    memoryBytes: fleet.hosts.reduce((sum, h) => sum + gibToBytes(h.memoryGiB), 0),
    hkids: fleet.hosts.reduce((sum, h) => sum + h.hkids, 0),
  };
}

/** What an offline operation's record says of it, with where it belongs in the scenario. */
export function measuredFromOffline(
  op: OfflineOperation,
  where: { phase: string; vmGroup: string; vcpus: number; memoryGiB: number },
): MeasuredOperation {
  return {
    vmId: op.vmId,
    hostId: op.hostId,
    ...where,
    action: op.action,
    strategy: op.strategy,
    state: op.state,
    requestedAt: op.requestedAt,
    arrivedAt: op.arrivedAt,
    startedAt: op.startedAt,
    finishedAt: op.finishedAt,
    result:
      op.result === null
        ? null
        : {
            downtimeSeconds: op.result.downtimeSeconds,
            reclaimSeconds: op.result.reclaimSeconds,
            hkidHeldSeconds: op.result.hkidHeldSeconds,
          },
    waits: op.waits,
    error:
      op.error === null
        ? null
        : { code: op.error.code, step: op.error.step, errno: op.error.errno },
  };
}

/** What a run's record gives: its metrics, groups, slowest operations, causes and series. */
export function resultOfRun(
  scenario: Scenario,
  record: RunRecord,
  run: { variant: string; repetition: number; seed: number },
): RunResult {
  const { waits, failures } = causes(record);
  return {
    variant: run.variant,
    repetition: run.repetition,
    seed: run.seed,
    phases: [...record.phases],
    metrics: runMetrics(record),
    groups: groupStats(record),
    slowest: slowestOperations(record),
    waits,
    failures,
    series: seriesColumns(record),
    capacity: record.capacity,
    thresholds: checkThresholds(record, scenario.thresholds),
    references: checkReferences(record, scenario.references),
  };
}
