import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  type BatchRecord,
  type BatchSpec,
  type BatchView,
  FleetError,
  type HostSpec,
  type HostView,
  IdempotencyConflictError,
  InvalidRequestError,
  type JobView,
  NoCapacityError,
  NotFoundError,
  type OperationRecord,
  type Strategy,
  VmExistsError,
  VmStateConflictError,
  type VmView,
  batchView,
  chooseHost,
  createHostDocument,
  createVm,
  hostView,
  jobView,
  requestCancel,
  selectBatchMembers,
  vmView,
} from '#fleet';
import type { FleetStore } from '#store';
import { strategiesOf } from '#vmm';
import { submitOnHost } from './host-submissions.js';
import type { FleetQueues } from './queues.js';

/** How many times (100 ms apart) a replayed key waits for its first request's job. */
const IDEMPOTENCY_WAIT_ATTEMPTS = 20;

/** A job that has already ended cannot be cancelled. */
export class JobFinishedError extends FleetError {
  constructor(jobId: string, state: string) {
    super('job_finished', `job ${jobId} has already ended (${state})`, { jobId, state });
    this.name = 'JobFinishedError';
  }
}

/** An Idempotency-Key and what the request it came with was. */
export interface Idempotency {
  key: string;
  /** Method, path and body of the request: the same key with another request is refused. */
  fingerprint: string;
}

/** One reboot or terminate of {@link FleetService.submitMany}. */
export interface SubmitRequest {
  vmId: string;
  action: 'reboot' | 'terminate';
  strategy: Strategy;
  idempotency?: Idempotency;
  /** The batch the operation belongs to, if any. */
  batchId?: string;
}

/** What became of one request of `submitMany`: its job, or the domain error that refused it. */
export type SubmitOutcome =
  { ok: true; job: JobView; replayed: boolean } | { ok: false; error: FleetError };

/** A request that passed its checks and claimed its key, with its place among the requests. */
interface AdmittedRequest {
  request: SubmitRequest;
  opId: string;
  hostId: string;
  index: number;
}

/** `POST /v1/vms`. */
export interface CreateVmInput {
  id?: string;
  hostId?: string;
  vcpus: number;
  memoryBytes: number;
}

/** Clock and id source, replaceable in tests. */
export interface ServiceEnvironment {
  now: () => number;
  newId: () => string;
  /**
   * How the hosts' virtual clocks follow real time (the workers' TIME_SCALE): an operation arrives
   * at its host's current virtual time.
   */
  timeScale: number;
}

/** The real clock, random ids, and no pacing: what a service gets unless told otherwise. */
export const DEFAULT_ENVIRONMENT: ServiceEnvironment = {
  now: () => Date.now(),
  newId: () => randomUUID(),
  timeScale: 0,
};

/**
 * What the API offers, over the store and the queues: hosts, VMs, operations as queued jobs,
 * cancellation, batches. Throws domain errors only; the HTTP layer maps them.
 */
export class FleetService {
  /** Told of every operation this service ends itself (a queued job cancelled): the metrics. */
  private readonly finishedListeners: Array<(op: OperationRecord) => void> = [];

  constructor(
    private readonly store: FleetStore,
    private readonly queues: FleetQueues,
    private readonly env: ServiceEnvironment = DEFAULT_ENVIRONMENT,
  ) {}

  /**
   * Calls `listener` with each operation this service ends without a worker: a queued job
   * cancelled. The workers tell of the operations they end themselves.
   */
  onOperationFinished(listener: (op: OperationRecord) => void): void {
    this.finishedListeners.push(listener);
  }

  async createHost(spec: Omit<HostSpec, 'id'> & { id?: string }): Promise<HostView> {
    const id = spec.id ?? `host-${this.env.newId().slice(0, 8)}`;
    const doc = createHostDocument({ ...spec, id }, this.env.now());
    const stored = await this.store.createHost(doc);
    return hostView(stored, this.env.now());
  }

  async listHosts(): Promise<HostView[]> {
    const now = this.env.now();
    return (await this.store.listHosts()).map((doc) => hostView(doc, now));
  }

  async getHost(hostId: string): Promise<HostView> {
    return hostView(await this.store.requireHost(hostId), this.env.now());
  }

  async listVms(filter: { hostId?: string; state?: string } = {}): Promise<VmView[]> {
    const docs =
      filter.hostId === undefined
        ? await this.store.listHosts()
        : [await this.store.requireHost(filter.hostId)];
    // Terminated VMs have left their hosts' documents; their last records are kept 7 days.
    const terminated =
      filter.state === undefined || filter.state === 'terminated'
        ? await this.store.terminatedVms(docs)
        : [];
    return docs
      .flatMap((doc) => Object.values(doc.vms).map((vm) => vmView(doc, vm)))
      .concat(terminated.map(({ doc, vm }) => vmView(doc, vm)))
      .filter((vm) => filter.state === undefined || vm.state === filter.state)
      .sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.id.localeCompare(b.id));
  }

  async getVm(vmId: string): Promise<VmView> {
    const { doc, vm } = await this.store.requireVm(vmId);
    return vmView(doc, vm);
  }

  /**
   * Creates a VM and queues its boot, on `hostId` or on the host with the most room. With an
   * Idempotency-Key, a repeated request returns the first one's VM and job.
   */
  async createVm(
    input: CreateVmInput,
    idempotency?: Idempotency,
  ): Promise<{ vm: VmView; job: JobView; replayed: boolean }> {
    const vmId = input.id ?? `vm-${this.env.newId().slice(0, 8)}`;
    const opId = this.env.newId();
    const replay = await this.claim(idempotency, opId, vmId);
    if (replay !== null)
      return { vm: await this.getVm(replay.vmId), job: replay.job, replayed: true };
    try {
      const candidates =
        input.hostId === undefined
          ? await this.store.listHosts()
          : [await this.store.requireHost(input.hostId)];
      // Placement reads every host, then commits on one; if another request took the room in
      // between, the commit refuses and the next best host is tried.
      let remaining = candidates;
      for (;;) {
        const chosen = chooseHost(remaining, input.vcpus, input.memoryBytes);
        const claim = await this.store.claimVmId(vmId, chosen.id);
        if (claim === null) throw new VmExistsError(vmId);
        await this.store.indexJob(opId, chosen.id);
        try {
          const { doc, value } = await this.store.update(chosen.id, (current) => {
            const created = createVm(current, {
              vmId,
              opId,
              vcpus: input.vcpus,
              memoryBytes: input.memoryBytes,
              nowMs: this.env.now(),
              timeScale: this.env.timeScale,
              idempotencyKey: idempotency?.key ?? null,
            });
            return { doc: created.doc, value: created };
          });
          await this.queues.addOperation({ opId, hostId: chosen.id });
          return {
            vm: vmView(doc, value.vm),
            job: jobView(value.op, this.env.now()),
            replayed: false,
          };
        } catch (error) {
          if (!(error instanceof VmExistsError)) {
            await this.store.releaseVmId(vmId, chosen.id, claim);
          }
          if (!(error instanceof NoCapacityError) || input.hostId !== undefined) throw error;
          remaining = remaining.filter((d) => d.id !== chosen.id);
        }
      }
    } catch (error) {
      if (idempotency !== undefined) await this.store.releaseIdempotency(idempotency.key);
      throw error;
    }
  }

  /** Queues a reboot or terminate of a VM (409 when busy or the kernel cannot do it). */
  async submit(
    vmId: string,
    action: 'reboot' | 'terminate',
    strategy: Strategy,
    idempotency?: Idempotency,
    batchId?: string,
  ): Promise<{ job: JobView; replayed: boolean }> {
    const request = { vmId, action, strategy, idempotency, batchId };
    const outcome = (await this.submitMany([request]))[0] as SubmitOutcome;
    if (!outcome.ok) throw outcome.error;
    return { job: outcome.job, replayed: outcome.replayed };
  }

  /**
   * Queues several reboots and terminates at once. Those on one host are committed in one
   * compare-and-set of its document, in the given order: they arrive together, at the host's
   * clock, and queue there in that order. Each request is answered for itself: its job, or the
   * domain error that refused it (the others go on). Other errors (Redis) are thrown.
   */
  async submitMany(requests: readonly SubmitRequest[]): Promise<SubmitOutcome[]> {
    const admissions = await Promise.allSettled(requests.map((r) => this.admit(r)));
    const outcomes: SubmitOutcome[] = [];
    const byHost = new Map<string, AdmittedRequest[]>();
    admissions.forEach((admission, index) => {
      if (admission.status === 'rejected') return;
      const value = admission.value;
      if ('ok' in value) {
        outcomes[index] = value;
        return;
      }
      const onHost = byHost.get(value.hostId) ?? [];
      onHost.push({ ...value, index });
      byHost.set(value.hostId, onHost);
    });
    const failed = admissions.find((a) => a.status === 'rejected');
    if (failed !== undefined) {
      // Nothing is committed: the keys of the requests that got this far are given back.
      const admitted = [...byHost.values()].flat();
      await Promise.all(admitted.map((a) => this.releaseKey(a.request)));
      throw failed.reason;
    }
    const commits = await Promise.allSettled(
      [...byHost].map(async ([hostId, admitted]) => {
        const answers = await this.commitOnHost(hostId, admitted);
        admitted.forEach((a, i) => (outcomes[a.index] = answers[i] as SubmitOutcome));
      }),
    );
    const broken = commits.find((c) => c.status === 'rejected');
    if (broken !== undefined) throw broken.reason;
    return outcomes;
  }

  /**
   * A request's checks, idempotency claim and VM lookup: its outcome when it ends there (a
   * replay, a refusal), else its operation id and host.
   */
  private async admit(
    request: SubmitRequest,
  ): Promise<SubmitOutcome | Omit<AdmittedRequest, 'index'>> {
    const { vmId, action, strategy, idempotency } = request;
    const allowed = strategiesOf(action);
    if (!allowed.includes(strategy)) {
      const error = new InvalidRequestError(
        `strategy of a ${action} must be one of ${allowed.join(', ')}`,
      );
      return { ok: false, error };
    }
    const opId = this.env.newId();
    let replay;
    try {
      replay = await this.claim(idempotency, opId, vmId);
    } catch (error) {
      if (!(error instanceof FleetError)) throw error;
      return { ok: false, error };
    }
    if (replay !== null) return { ok: true, job: replay.job, replayed: true };
    try {
      const { doc, vm } = await this.store.requireVm(vmId);
      // A terminated VM has left its host's document: refused here, as the document would.
      if (vm.state === 'terminated') throw new VmStateConflictError(vm.id, vm.state, action);
      return { request, opId, hostId: doc.id };
    } catch (error) {
      await this.releaseKey(request);
      if (!(error instanceof FleetError)) throw error;
      return { ok: false, error };
    }
  }

  /** Commits a host's admitted requests in one change of its document, then queues their jobs. */
  private async commitOnHost(
    hostId: string,
    admitted: readonly AdmittedRequest[],
  ): Promise<SubmitOutcome[]> {
    let results: Array<OperationRecord | FleetError>;
    try {
      await Promise.all(admitted.map((a) => this.store.indexJob(a.opId, hostId)));
      ({ value: results } = await this.store.update(hostId, (current) => {
        const nowMs = this.env.now();
        const submitted = submitOnHost(
          current,
          admitted.map(({ request, opId }) => ({
            opId,
            vmId: request.vmId,
            action: request.action,
            strategy: request.strategy,
            nowMs,
            timeScale: this.env.timeScale,
            idempotencyKey: request.idempotency?.key ?? null,
            batchId: request.batchId ?? null,
          })),
        );
        return { doc: submitted.doc, value: submitted.results };
      }));
    } catch (error) {
      await Promise.all(admitted.map((a) => this.releaseKey(a.request)));
      if (!(error instanceof FleetError)) throw error;
      return admitted.map(() => ({ ok: false, error }));
    }
    const outcomes: SubmitOutcome[] = [];
    const accepted: OperationRecord[] = [];
    for (const [i, result] of results.entries()) {
      if (result instanceof FleetError) {
        await this.releaseKey((admitted[i] as AdmittedRequest).request);
        outcomes.push({ ok: false, error: result });
      } else {
        accepted.push(result);
        outcomes.push({ ok: true, job: jobView(result, this.env.now()), replayed: false });
      }
    }
    await this.queues.addOperations(accepted.map((op) => ({ opId: op.id, hostId })));
    return outcomes;
  }

  private async releaseKey(request: SubmitRequest): Promise<void> {
    if (request.idempotency !== undefined) {
      await this.store.releaseIdempotency(request.idempotency.key);
    }
  }

  async getJob(jobId: string): Promise<JobView> {
    return jobView(await this.requireJob(jobId), this.env.now());
  }

  /**
   * Cancels a job: a queued one at once (the VM as it was), a running one at its next step
   * boundary (the worker cleans up and the VM ends `stopped`).
   */
  async cancelJob(jobId: string): Promise<JobView> {
    const op = await this.requireJob(jobId);
    if (op.finishedAtMs !== null) throw new JobFinishedError(jobId, op.state);
    const { value } = await this.store.update(op.hostId, (current) => {
      if (current.ops[jobId] === undefined) throw new JobFinishedError(jobId, 'finished');
      const result = requestCancel(current, jobId, this.env.now());
      return { doc: result.doc, value: result, finished: result.finished ? result.op : null };
    });
    if (value.finished) {
      for (const listener of this.finishedListeners) listener(value.op);
      await this.queues.removeOperation(jobId);
    }
    return jobView(value.op, this.env.now());
  }

  /** Starts a batch: picks its VMs now, then a worker submits and follows their operations. */
  async createBatch(spec: BatchSpec): Promise<BatchView> {
    const allowed = strategiesOf(spec.action);
    if (!allowed.includes(spec.strategy)) {
      throw new InvalidRequestError(
        `strategy of a ${spec.action} must be one of ${allowed.join(', ')}`,
      );
    }
    const members = selectBatchMembers(await this.store.listHosts(), spec.selector);
    const now = this.env.now();
    const batch: BatchRecord = {
      id: `batch-${this.env.newId().slice(0, 8)}`,
      spec,
      state: members.every((m) => m.state === 'rejected') ? 'done' : 'running',
      members,
      createdAtMs: now,
      finishedAtMs: null,
    };
    if (batch.state === 'done') batch.finishedAtMs = now;
    await this.store.saveBatch(batch);
    if (batch.state === 'running') await this.queues.addBatch({ batchId: batch.id });
    return batchView(batch);
  }

  async getBatch(batchId: string): Promise<BatchView> {
    const batch = await this.store.getBatch(batchId);
    if (batch === null) throw new NotFoundError('batch', batchId);
    return batchView(batch);
  }

  private async requireJob(jobId: string): Promise<OperationRecord> {
    const op = await this.store.getJob(jobId);
    if (op === null) throw new NotFoundError('job', jobId);
    return op;
  }

  /**
   * Takes an Idempotency-Key for a new request; when the key was used before, returns that
   * request's job (same request) or refuses (another request).
   */
  private async claim(
    idempotency: Idempotency | undefined,
    opId: string,
    vmId: string,
  ): Promise<{ job: JobView; vmId: string } | null> {
    if (idempotency === undefined) return null;
    const previous = await this.store.claimIdempotency(idempotency.key, {
      fingerprint: idempotency.fingerprint,
      jobId: opId,
      vmId,
    });
    if (previous === null) return null;
    if (previous.fingerprint !== idempotency.fingerprint) {
      throw new IdempotencyConflictError(idempotency.key, previous.jobId);
    }
    // The first request with this key may still be committing its job: give it a moment.
    let op = await this.store.getJob(previous.jobId);
    for (let attempt = 0; op === null && attempt < IDEMPOTENCY_WAIT_ATTEMPTS; attempt += 1) {
      await sleep(100);
      op = await this.store.getJob(previous.jobId);
    }
    if (op === null) {
      throw new IdempotencyConflictError(idempotency.key, previous.jobId);
    }
    return { job: jobView(op, this.env.now()), vmId: previous.vmId };
  }
}
