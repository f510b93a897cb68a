import type { KernelFeatureName } from '#vmm';

/**
 * What went wrong, as a stable code. One place (the HTTP error filter) maps codes to statuses;
 * one place (the worker) decides what is retried. Services never throw HTTP errors.
 */
export type FleetErrorCode =
  | 'invalid_request'
  | 'not_found'
  | 'vm_busy'
  | 'vm_state_conflict'
  | 'kernel_feature_missing'
  | 'no_capacity'
  | 'idempotency_conflict'
  | 'already_exists'
  | 'job_finished';

/** The base of every domain error of the fleet. */
export class FleetError extends Error {
  constructor(
    readonly code: FleetErrorCode,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = 'FleetError';
  }
}

/** The request cannot be carried out as given (a bad size, an unknown kernel switch...). */
export class InvalidRequestError extends FleetError {
  constructor(message: string, details?: Record<string, unknown>) {
    super('invalid_request', message, details);
    this.name = 'InvalidRequestError';
  }
}

/** No host, VM, job or batch with that id. */
export class NotFoundError extends FleetError {
  constructor(kind: 'host' | 'vm' | 'job' | 'batch', id: string) {
    super('not_found', `no ${kind} with id ${id}`, { kind, id });
    this.name = 'NotFoundError';
  }
}

/** The VM already has an operation queued or running. */
export class VmBusyError extends FleetError {
  constructor(
    readonly vmId: string,
    readonly jobId: string,
  ) {
    super('vm_busy', `VM ${vmId} is busy with job ${jobId}`, { vmId, jobId });
    this.name = 'VmBusyError';
  }
}

/** The VM's state does not allow the operation (a terminated VM cannot be rebooted). */
export class VmStateConflictError extends FleetError {
  constructor(vmId: string, state: string, action: string) {
    super('vm_state_conflict', `VM ${vmId} is ${state}: cannot ${action}`, { vmId, state, action });
    this.name = 'VmStateConflictError';
  }
}

/** The host's kernel cannot run the requested strategy. */
export class KernelFeatureMissingError extends FleetError {
  constructor(
    readonly feature: KernelFeatureName,
    kernelSwitch: string,
    message: string,
  ) {
    super('kernel_feature_missing', message, { feature, switch: kernelSwitch });
    this.name = 'KernelFeatureMissingError';
  }
}

/** No host can take the VM (memory or HKIDs), or the chosen host cannot. */
export class NoCapacityError extends FleetError {
  constructor(message: string, details?: Record<string, unknown>) {
    super('no_capacity', message, details);
    this.name = 'NoCapacityError';
  }
}

/** An Idempotency-Key was reused for a different request. */
export class IdempotencyConflictError extends FleetError {
  constructor(key: string, jobId: string) {
    super(
      'idempotency_conflict',
      `Idempotency-Key ${key} was used for another request (job ${jobId})`,
      { key, jobId },
    );
    this.name = 'IdempotencyConflictError';
  }
}

/** A VM id that is taken. */
export class VmExistsError extends FleetError {
  constructor(vmId: string) {
    super('already_exists', `a VM with id ${vmId} exists already`, { vmId });
    this.name = 'VmExistsError';
  }
}
