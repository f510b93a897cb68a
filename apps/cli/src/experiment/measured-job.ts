import { type FleetVm, type MeasuredOperation, type PhaseRequest } from '#experiments';
import { type DaemonJob } from './daemon-client.js';
import { onRunClock } from './run-clock.js';

// An ended job of the daemon as a run measures it: the offline target's MeasuredOperation, with
// the same fields meaning the same, its times on the run's clock and its ids without the run's
// prefix.

export interface JobContext {
  /** What the phase driver issued, and the VM of the built fleet it was for. */
  request: PhaseRequest;
  vm: FleetVm;
  /** The run's prefix of host and VM ids on the daemon. */
  hostPrefix: string;
  /** When the driver issued it, and when it arrived, on the run's clock. */
  requestedAt: number;
  arrivedAt: number;
}

export function measuredOperation(job: DaemonJob, context: JobContext): MeasuredOperation {
  const { request, vm, hostPrefix, requestedAt, arrivedAt } = context;
  const { startedAt, finishedAt } = onRunClock(arrivedAt, job);
  return {
    vmId: request.vmId,
    hostId: job.hostId.startsWith(hostPrefix) ? job.hostId.slice(hostPrefix.length) : job.hostId,
    phase: request.phase,
    vmGroup: vm.group,
    vcpus: vm.vcpus,
    memoryGiB: vm.memoryGiB,
    action: job.action,
    strategy: job.strategy,
    state: job.state,
    requestedAt,
    arrivedAt,
    startedAt,
    // A job cancelled before it started ended where it arrived.
    finishedAt: finishedAt ?? arrivedAt,
    result:
      job.result === undefined
        ? null
        : {
            downtimeSeconds: job.result.downtimeSeconds,
            reclaimSeconds: job.result.reclaimSeconds,
            hkidHeldSeconds: job.result.hkidHeldSeconds,
          },
    // The steps that waited, and for what (no errno: the HKID release lock), as offline.
    waits: job.steps
      .filter((step) => step.waitedSeconds > 0)
      .map((step) => ({ step: step.name, errno: step.errno ?? null, seconds: step.waitedSeconds })),
    error:
      job.error === undefined
        ? null
        : { code: job.error.code, step: job.error.step, errno: job.error.errno },
  };
}
