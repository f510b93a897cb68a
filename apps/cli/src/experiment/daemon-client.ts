import { ExperimentError } from '#experiments';
import { z } from 'zod';

// The daemon's HTTP API as the daemon target uses it: JSON over fetch, a bearer token when given,
// at most a few requests in flight, and each answer checked against what the target reads of it
// (a daemon is outside input; fields the target does not read may come and go).

const jobStates = ['queued', 'running', 'succeeded', 'failed', 'cancelled'] as const;

/** A job as the target reads it (`GET /v1/jobs/{id}`). */
const jobSchema = z.object({
  id: z.string(),
  vmId: z.string(),
  hostId: z.string(),
  action: z.string(),
  strategy: z.string().nullable(),
  state: z.enum(jobStates),
  steps: z.array(
    z.object({ name: z.string(), waitedSeconds: z.number(), errno: z.string().optional() }),
  ),
  virtualArrivedAt: z.number(),
  virtualStartedAt: z.number().nullable(),
  virtualFinishedAt: z.number().nullable(),
  result: z
    .object({
      downtimeSeconds: z.number(),
      reclaimSeconds: z.number(),
      hkidHeldSeconds: z.number(),
    })
    .optional(),
  error: z
    .object({
      code: z.string(),
      message: z.string(),
      step: z.string().optional(),
      errno: z.string().optional(),
    })
    .optional(),
});
export type DaemonJob = z.output<typeof jobSchema>;

/** What a host view gives the fleet's series. */
const hostSchema = z.object({
  id: z.string(),
  usage: z.object({
    memory: z.object({
      freeBytes: z.number(),
      privateBytes: z.number(),
      retainedBytes: z.number(),
      orphanedBytes: z.number(),
    }),
    // `leaked`: a daemon of an earlier version leaks none.
    hkids: z.object({ used: z.number(), zombies: z.number(), leaked: z.number().default(0) }),
  }),
  runningJobs: z.number(),
  queuedJobs: z.number(),
});
export type DaemonHost = z.output<typeof hostSchema>;

/** A batch as the target reads it (`GET /v1/batches/{id}`): each member's job or refusal. */
const batchSchema = z.object({
  id: z.string(),
  createdAtMs: z.number(),
  members: z.array(
    z.object({
      vmId: z.string(),
      state: z.enum(['pending', ...jobStates, 'rejected']),
      jobId: z.string().nullable(),
      error: z.object({ code: z.string(), message: z.string() }).nullable(),
      submittedAtMs: z.number().nullable(),
    }),
  ),
});
export type DaemonBatch = z.output<typeof batchSchema>;

/** What `POST /v1/batches` takes of a batch of listed VMs. */
export interface BatchRequest {
  selector: { vmIds: string[] };
  action: string;
  strategy: string;
  maxConcurrency: number;
  ratePerSecond: number | null;
}

const infoSchema = z.object({
  timeScale: z.number().min(0),
  hostConcurrency: z.number().int(),
  globalConcurrency: z.number().int().nullable(),
});
export type DaemonInfo = z.output<typeof infoSchema>;

const jobEnvelopeSchema = z.object({ job: jobSchema });
const hostListSchema = z.object({ hosts: z.array(hostSchema) });
const errorSchema = z.object({
  error: z.object({
    code: z.string(),
    message: z.string(),
    details: z.record(z.string(), z.unknown()).optional(),
  }),
});

/** A request the daemon turned down in its error shape, before anything changed. */
export class DaemonRefusal extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: Record<string, unknown>,
  ) {
    super(message);
    this.name = 'DaemonRefusal';
  }
}

/** What `POST /v1/hosts` takes of a host. */
export interface HostRequest {
  id: string;
  memoryGiB: number;
  hkids: number;
  packages: number;
  cpus: number;
  hkidCgroupLimit?: number | null;
  kernel: { terminateVm: string; linkGuestMemfd: boolean; privatePageSize: string };
  costModel?: string;
}

/** Requests in flight at once: enough to keep the daemon busy, few enough for its sockets. */
const MAX_IN_FLIGHT = 32;

export class DaemonClient {
  private readonly base: string;
  private inFlight = 0;
  private readonly queued: Array<() => void> = [];

  constructor(
    api: string,
    private readonly token: string | null,
  ) {
    this.base = api.replace(/\/+$/, '');
  }

  info(): Promise<DaemonInfo> {
    return this.call('GET', '/v1/info', infoSchema);
  }

  async createHost(host: HostRequest): Promise<void> {
    await this.call('POST', '/v1/hosts', z.object({ id: z.string() }), host);
  }

  /** Creates a VM on a host and queues its boot: the boot job. */
  async createVm(vm: {
    id: string;
    hostId: string;
    vcpus: number;
    memoryGiB: number;
  }): Promise<DaemonJob> {
    return (await this.call('POST', '/v1/vms', jobEnvelopeSchema, vm)).job;
  }

  /** Queues a reboot or terminate; `onSent` hears the real time the request went out. */
  async submit(
    vmId: string,
    action: string,
    strategy: string,
    onSent?: (realMs: number) => void,
  ): Promise<DaemonJob> {
    const path = `/v1/vms/${encodeURIComponent(vmId)}/${action}`;
    return (await this.call('POST', path, jobEnvelopeSchema, { strategy }, onSent)).job;
  }

  /** Starts a batch; `onSent` hears the real time the request went out. */
  createBatch(batch: BatchRequest, onSent?: (realMs: number) => void): Promise<DaemonBatch> {
    // The API takes no rate as "as fast as concurrency allows".
    const { ratePerSecond, ...rest } = batch;
    const body = ratePerSecond === null ? rest : batch;
    return this.call('POST', '/v1/batches', batchSchema, body, onSent);
  }

  batch(batchId: string): Promise<DaemonBatch> {
    return this.call('GET', `/v1/batches/${encodeURIComponent(batchId)}`, batchSchema);
  }

  job(jobId: string): Promise<DaemonJob> {
    return this.call('GET', `/v1/jobs/${encodeURIComponent(jobId)}`, jobSchema);
  }

  async cancel(jobId: string): Promise<void> {
    await this.call('DELETE', `/v1/jobs/${encodeURIComponent(jobId)}`, jobEnvelopeSchema);
  }

  async hosts(): Promise<DaemonHost[]> {
    return (await this.call('GET', '/v1/hosts', hostListSchema)).hosts;
  }

  /** Opens `GET /v1/events`: once it answers, the stream misses no event after. */
  async events(signal: AbortSignal): Promise<ReadableStream<Uint8Array>> {
    const response = await this.fetch('GET', '/v1/events', undefined, signal);
    if (!response.ok || response.body === null) {
      throw new ExperimentError(`GET /v1/events answered ${response.status}`);
    }
    return response.body;
  }

  private async call<S extends z.ZodType>(
    method: string,
    path: string,
    schema: S,
    body?: unknown,
    onSent?: (realMs: number) => void,
  ): Promise<z.output<S>> {
    await this.slot();
    let status: number;
    let text: string;
    try {
      onSent?.(performance.now());
      const response = await this.fetch(method, path, body);
      status = response.status;
      text = await response.text();
    } finally {
      this.release();
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    if (status >= 400 && status < 500) {
      const refusal = errorSchema.safeParse(json);
      if (refusal.success) {
        const { code, message, details } = refusal.data.error;
        throw new DaemonRefusal(status, code, message, details ?? {});
      }
    }
    if (status < 200 || status >= 300) {
      throw new ExperimentError(`${method} ${path} answered ${status}: ${text.slice(0, 200)}`);
    }
    const parsed = schema.safeParse(json);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new ExperimentError(
        `${method} ${path} answered an unexpected body (${issue?.path.join('.') ?? ''}: ` +
          `${issue?.message ?? 'not JSON'}): is this a tdx-fleet daemon of this version?`,
      );
    }
    return parsed.data;
  }

  private async fetch(
    method: string,
    path: string,
    body?: unknown,
    signal?: AbortSignal,
  ): Promise<Response> {
    const headers: Record<string, string> = {};
    if (this.token !== null) headers['authorization'] = `Bearer ${this.token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    try {
      return await fetch(`${this.base}${path}`, {
        method,
        headers,
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        ...(signal === undefined ? {} : { signal }),
      });
    } catch (error) {
      if (signal?.aborted === true) throw error;
      const cause = error instanceof Error ? (error.cause ?? error) : error;
      throw new ExperimentError(
        `cannot reach the daemon at ${this.base} (${method} ${path}): ${String(cause)}`,
      );
    }
  }

  private async slot(): Promise<void> {
    if (this.inFlight < MAX_IN_FLIGHT) {
      this.inFlight += 1;
      return;
    }
    // The request that frees a slot hands it over: the count stays.
    await new Promise<void>((resolve) => this.queued.push(resolve));
  }

  private release(): void {
    const next = this.queued.shift();
    if (next !== undefined) next();
    else this.inFlight -= 1;
  }
}
