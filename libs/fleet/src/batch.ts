import { InvalidRequestError } from './errors.js';
import type { HostDocument, JobState, Strategy } from './model.js';

/** Which VMs a batch acts on: listed hosts, listed VMs, or every VM. Exactly one. */
export interface BatchSelector {
  hostIds?: string[];
  vmIds?: string[];
  all?: boolean;
}

/** What `POST /v1/batches` asks for. */
export interface BatchSpec {
  selector: BatchSelector;
  action: 'reboot' | 'terminate';
  strategy: Strategy;
  /** Operations of the batch running at once. */
  maxConcurrency: number;
  /** Submissions per second, or null for as fast as concurrency allows. */
  ratePerSecond: number | null;
}

/** One VM of a batch: submitted or not, and how its operation ended. */
export interface BatchMember {
  vmId: string;
  hostId: string | null;
  state: 'pending' | JobState | 'rejected';
  jobId: string | null;
  error: { code: string; message: string } | null;
  submittedAtMs: number | null;
}

/** A batch and each VM's outcome. */
export interface BatchRecord {
  id: string;
  spec: BatchSpec;
  state: 'running' | 'done';
  members: BatchMember[];
  createdAtMs: number;
  finishedAtMs: number | null;
}

const FINAL: ReadonlySet<BatchMember['state']> = new Set([
  'succeeded',
  'failed',
  'cancelled',
  'rejected',
]);

/** True when the member's operation has ended (or it was never accepted). */
export function memberFinished(member: BatchMember): boolean {
  return FINAL.has(member.state);
}

/**
 * The members of a new batch, from the hosts' documents. VMs already terminated are left out;
 * listed ids that do not exist are members rejected as not found.
 */
export function selectBatchMembers(
  docs: readonly HostDocument[],
  selector: BatchSelector,
): BatchMember[] {
  const chosen = [
    selector.all === true,
    selector.hostIds !== undefined,
    selector.vmIds !== undefined,
  ].filter(Boolean);
  if (chosen.length !== 1) {
    throw new InvalidRequestError('selector needs exactly one of hostIds, vmIds or all: true');
  }
  const member = (vmId: string, hostId: string | null): BatchMember => ({
    vmId,
    hostId,
    state: 'pending',
    jobId: null,
    error: null,
    submittedAtMs: null,
  });
  const live = docs.flatMap((doc) =>
    Object.values(doc.vms)
      .filter((vm) => vm.state !== 'terminated')
      .map((vm) => ({ vmId: vm.id, hostId: doc.id })),
  );
  if (selector.all === true) return live.map((v) => member(v.vmId, v.hostId));
  if (selector.hostIds !== undefined) {
    const known = new Set(docs.map((d) => d.id));
    const missing = selector.hostIds.filter((id) => !known.has(id));
    if (missing.length > 0)
      throw new InvalidRequestError(`unknown host ids: ${missing.join(', ')}`);
    const wanted = new Set(selector.hostIds);
    return live.filter((v) => wanted.has(v.hostId)).map((v) => member(v.vmId, v.hostId));
  }
  const byId = new Map(live.map((v) => [v.vmId, v.hostId]));
  return [...new Set(selector.vmIds)].map((vmId) => {
    const hostId = byId.get(vmId);
    if (hostId !== undefined) return member(vmId, hostId);
    return {
      ...member(vmId, null),
      state: 'rejected',
      error: { code: 'not_found', message: `no live VM with id ${vmId}` },
    };
  });
}

/**
 * How many more members may be submitted now: no more than `maxConcurrency` in flight, and no
 * more than `ratePerSecond` per second since the batch began (the first one at once).
 */
export function submissionsAllowed(batch: BatchRecord, nowMs: number): number {
  const inFlight = batch.members.filter(
    (m) => m.state === 'queued' || m.state === 'running',
  ).length;
  let allowed = batch.spec.maxConcurrency - inFlight;
  const rate = batch.spec.ratePerSecond;
  if (rate !== null) {
    const submitted = batch.members.filter((m) => m.submittedAtMs !== null).length;
    const budget = Math.floor(((nowMs - batch.createdAtMs) / 1000) * rate) + 1;
    allowed = Math.min(allowed, budget - submitted);
  }
  return Math.max(0, allowed);
}

/** A batch as the API shows it: the record plus counts by state. */
export interface BatchView extends BatchRecord {
  counts: Record<BatchMember['state'], number>;
}

export function batchView(batch: BatchRecord): BatchView {
  const counts: BatchView['counts'] = {
    pending: 0,
    queued: 0,
    running: 0,
    succeeded: 0,
    failed: 0,
    cancelled: 0,
    rejected: 0,
  };
  for (const m of batch.members) counts[m.state] += 1;
  return { ...batch, counts };
}
