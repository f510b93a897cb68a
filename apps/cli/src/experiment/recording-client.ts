import { ExperimentError } from '#experiments';
import { COST_MODELS, KERNEL_SWITCH_NAMES, type KernelFeatures, kernelProblem } from '#tdx-sim';
import { z } from 'zod';
import { type RecordedHost, type RecordedJob, type RecordedVm } from './recording.js';

// The daemon reads a recording makes beyond the experiment client's: hosts with their specs and
// kernels, VMs with theirs, and jobs with their submission's wall time. Each answer is checked
// against what the recording reads of it (a daemon is outside input).

const hostSchema = z.object({
  id: z.string(),
  capacity: z.object({
    memoryGiB: z.number(),
    hkids: z.number(),
    packages: z.number(),
    cpus: z.number(),
    hkidCgroupLimit: z.number().nullable(),
  }),
  // Every switch this version declares, with a value it knows (one declaration: KERNEL_SWITCHES).
  kernel: z.custom<KernelFeatures>(
    (value) =>
      typeof value === 'object' &&
      value !== null &&
      KERNEL_SWITCH_NAMES.every((name) => Object.hasOwn(value, name)) &&
      kernelProblem(value as Record<string, unknown>) === null,
    { error: 'a kernel with every switch this version knows' },
  ),
  costModel: z.enum(COST_MODELS),
});

const vmSchema = z.object({
  id: z.string(),
  hostId: z.string(),
  state: z.string(),
  vcpus: z.number(),
  memoryGiB: z.number(),
  activeJob: z.string().nullable(),
});

const jobSchema = z.object({
  id: z.string(),
  vmId: z.string(),
  hostId: z.string(),
  action: z.enum(['boot', 'reboot', 'terminate']),
  strategy: z.string().nullable(),
  virtualArrivedAt: z.number(),
  createdAt: z.iso.datetime(),
});

/** A VM as listed, with the job it was running then (if any). */
export type ListedVm = RecordedVm & { activeJob: string | null };

export class RecordingClient {
  private readonly base: string;

  constructor(
    api: string,
    private readonly token: string | null,
  ) {
    this.base = api.replace(/\/+$/, '');
  }

  async hosts(): Promise<RecordedHost[]> {
    const { hosts } = await this.get('/v1/hosts', z.object({ hosts: z.array(hostSchema) }));
    return hosts.map((host) => ({
      id: host.id,
      ...host.capacity,
      kernel: host.kernel,
      costModel: host.costModel,
    }));
  }

  async vms(): Promise<ListedVm[]> {
    const { vms } = await this.get('/v1/vms', z.object({ vms: z.array(vmSchema) }));
    return vms;
  }

  vm(vmId: string): Promise<ListedVm> {
    return this.get(`/v1/vms/${encodeURIComponent(vmId)}`, vmSchema);
  }

  async job(jobId: string): Promise<RecordedJob> {
    const job = await this.get(`/v1/jobs/${encodeURIComponent(jobId)}`, jobSchema);
    const { createdAt, ...rest } = job;
    return { ...rest, createdAtMs: Date.parse(createdAt) };
  }

  private async get<S extends z.ZodType>(path: string, schema: S): Promise<z.output<S>> {
    const headers: Record<string, string> = {};
    if (this.token !== null) headers['authorization'] = `Bearer ${this.token}`;
    let response: Response;
    try {
      response = await fetch(`${this.base}${path}`, { headers });
    } catch (error) {
      const cause = error instanceof Error ? (error.cause ?? error) : error;
      throw new ExperimentError(
        `cannot reach the daemon at ${this.base} (GET ${path}): ${String(cause)}`,
      );
    }
    const text = await response.text();
    if (!response.ok) {
      throw new ExperimentError(`GET ${path} answered ${response.status}: ${text.slice(0, 200)}`);
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    const parsed = schema.safeParse(json);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new ExperimentError(
        `GET ${path} answered an unexpected body (${issue?.path.join('.') ?? ''}: ` +
          `${issue?.message ?? 'not JSON'}): is this a tdx-fleet daemon of this version?`,
      );
    }
    return parsed.data;
  }
}
