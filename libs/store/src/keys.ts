/**
 * Every Redis key of a fleet. A host's keys share the hash tag `{host:<id>}`, so on a Redis
 * Cluster its document, its finished jobs and its terminated VMs live in one slot (one Lua script
 * commits them);
 * the fleet-wide indexes share the tag `{<prefix>}`, like the BullMQ queues.
 */
export class FleetKeys {
  constructor(readonly prefix: string) {}

  /** BullMQ's key prefix for this fleet's queues. */
  get queuePrefix(): string {
    return `{${this.prefix}}`;
  }

  hostDoc(hostId: string): string {
    return `${this.prefix}:{host:${hostId}}:doc`;
  }

  finishedJob(hostId: string, jobId: string): string {
    return `${this.prefix}:{host:${hostId}}:job:${jobId}`;
  }

  /** The last record of a VM terminated on the host. */
  terminatedVm(hostId: string, vmId: string): string {
    return `${this.prefix}:{host:${hostId}}:vm:${vmId}`;
  }

  /** The ids of the VMs terminated on the host, scored by when their last records expire (ms). */
  terminatedVms(hostId: string): string {
    return `${this.prefix}:{host:${hostId}}:terminated`;
  }

  get hosts(): string {
    return `{${this.prefix}}:hosts`;
  }

  get vmHost(): string {
    return `{${this.prefix}}:vm-host`;
  }

  get jobHost(): string {
    return `{${this.prefix}}:job-host`;
  }

  idempotency(key: string): string {
    return `{${this.prefix}}:idempotency:${key}`;
  }

  batch(batchId: string): string {
    return `{${this.prefix}}:batch:${batchId}`;
  }

  get batches(): string {
    return `{${this.prefix}}:batches`;
  }

  get events(): string {
    return `{${this.prefix}}:events`;
  }
}
