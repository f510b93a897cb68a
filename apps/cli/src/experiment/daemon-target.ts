import {
  type BuiltFleet,
  ExperimentError,
  type FleetVm,
  type MeasuredOperation,
  type MeasuredRefusal,
  type PhaseRequest,
  PhaseDriver,
  type RequestOutcome,
  type RunProgress,
  type RunRecord,
  type Scenario,
  type Variant,
  buildFleet,
} from '#experiments';
import { gibToBytes } from '#tdx-sim';
import { toMicros, toSeconds } from '#vmm';
import { type MemberSubmission, submissionGroups, submitAsBatch } from './batch-submission.js';
import { DaemonClient, type DaemonJob, DaemonRefusal } from './daemon-client.js';
import { FleetSampler } from './fleet-sampler.js';
import { JobWatcher } from './job-watcher.js';
import { measuredOperation } from './measured-job.js';
import { RunClock } from './run-clock.js';
import { terminateAll } from './run-cleanup.js';

// One run of a scenario on a live daemon, through its HTTP API only: the live twin of the offline
// target (`simulateRun`), giving the same RunRecord with the same meaning. The fleet is created
// and booted under the run's prefix, the phase driver is driven as offline (its requests
// submitted, each job's end fed back at its time on the run's clock, its timers kept), the
// fleet is sampled, and what the run created is terminated at the end.
//
// Order of events. The driver hears ends and timers in order of time, a time's ends before its
// timer (as offline, where the engine runs up to a timer before it fires), and what they issue
// at one time is submitted together: as one batch, whose members on one host the daemon commits
// there at once and in order, so that they arrive together as offline. At TIME_SCALE > 0 they
// go to it once the run's clock has reached them (an end as soon as it is heard, a timer at its
// real time). At TIME_SCALE 0 the daemon does not wait and ends come in whatever order the
// workers finish them: they are held until no job of the run is in flight (then none can end
// earlier), and timers fire at once.

export interface DaemonRunOptions {
  /** The daemon's base URL (`http://127.0.0.1:3000`). */
  api: string;
  /** Its API_TOKEN, for the mutating calls. */
  token?: string | null;
  /** Put before every host and VM id of the run, so that runs never meet on one daemon. */
  runPrefix: string;
  onProgress?: (progress: RunProgress) => void;
  signal?: AbortSignal;
}

/**
 * The fleet is sampled every `sampleEverySeconds / TIME_SCALE` real seconds, but no more often
 * than this (and this often at TIME_SCALE 0).
 */
const SAMPLE_FLOOR_MS = 250;
/** Ids the API takes: letters, digits, ".", "_" and "-", starting with a letter or digit. */
const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const MAX_ID_LENGTH = 100;

/** Runs one run (one variant, one seed) of `scenario` on the daemon at `options.api`. */
export async function runOnDaemon(
  scenario: Scenario,
  variant: Variant,
  seed: number,
  options: DaemonRunOptions,
): Promise<RunRecord> {
  const fleet = buildFleet(scenario, variant, seed);
  checkPrefix(options.runPrefix, fleet);
  const run = new DaemonRun(scenario, variant, seed, fleet, options);
  let record: RunRecord;
  try {
    record = await run.measure();
  } catch (error) {
    run.close();
    try {
      await run.cleanUp();
    } catch (cleanupError) {
      throw new ExperimentError(
        `${messageOf(error)}; cleaning up the run's VMs failed too: ${messageOf(cleanupError)}`,
      );
    }
    throw error;
  }
  run.close();
  await run.cleanUp();
  return record;
}

/** An end, or a refusal, not yet told to the driver. */
interface HeldEnd {
  t: number;
  hostIndex: number;
  seq: number;
  vmId: string;
  outcome: RequestOutcome;
  operation: MeasuredOperation | null;
  refusal: MeasuredRefusal | null;
}

class DaemonRun {
  private readonly client: DaemonClient;
  private readonly prefix: string;
  private readonly watcher: JobWatcher;
  private readonly sampler: FleetSampler;
  private readonly driver: PhaseDriver;
  private readonly vmById: ReadonlyMap<string, FleetVm>;
  private readonly hostIndex: ReadonlyMap<string, number>;
  private readonly wakeup = new Wakeup();
  /** Jobs followed to their end, and what to do then. */
  private readonly following = new Map<string, (job: DaemonJob) => void>();
  private pendingSubmissions = 0;
  private readonly held: HeldEnd[] = [];
  private heldSeq = 0;
  private readonly operations: MeasuredOperation[] = [];
  private readonly refusals: MeasuredRefusal[] = [];
  private issued = 0;
  private timeScale = 0;
  private clock = new RunClock(0, 0, 0);
  /** The latest end seen on the run's clock: the stamp of samples at TIME_SCALE 0. */
  private latestEnd = 0;
  private failure: { error: unknown } | null = null;

  constructor(
    private readonly scenario: Scenario,
    private readonly variant: Variant,
    seed: number,
    private readonly fleet: BuiltFleet,
    private readonly options: DaemonRunOptions,
  ) {
    this.client = new DaemonClient(options.api, options.token ?? null);
    this.prefix = options.runPrefix;
    this.driver = new PhaseDriver(scenario, variant, fleet, seed);
    this.vmById = new Map(fleet.vms.map((vm) => [vm.id, vm]));
    this.hostIndex = new Map(fleet.hosts.map((host, i) => [host.id, i]));
    this.watcher = new JobWatcher(this.client, this.prefix, {
      ended: (job) => {
        const then = this.following.get(job.id);
        this.following.delete(job.id);
        then?.(job);
        this.wakeup.notify();
      },
      failed: (error) => this.fail(error),
    });
    this.sampler = new FleetSampler(
      this.client,
      new Set(fleet.hosts.map((host) => this.prefix + host.id)),
      () =>
        // At TIME_SCALE 0 the daemon's clocks do not follow real time: the series is then only
        // an ordering of what the fleet went through, each sample at the latest end seen.
        this.timeScale === 0 ? this.latestEnd : this.clock.at(performance.now()),
      (error) => this.fail(error),
    );
    const signal = options.signal;
    if (signal?.aborted === true) this.fail(signal.reason);
    signal?.addEventListener('abort', () => this.fail(signal.reason), { once: true });
  }

  async measure(): Promise<RunRecord> {
    this.throwIfFailed();
    this.timeScale = await this.checkSettings();
    const startAt = await this.boot();
    this.clock = new RunClock(startAt, performance.now(), this.timeScale);
    this.latestEnd = startAt;
    await this.sampler.sample(startAt);
    this.sampler.start(
      Math.max(
        SAMPLE_FLOOR_MS,
        this.timeScale === 0 ? 0 : (this.scenario.sampleEverySeconds / this.timeScale) * 1000,
      ),
    );
    await this.drive(startAt);
    await this.sampler.stop();
    this.throwIfFailed();
    const spans = [...this.driver.phaseSpans()];
    const end = Math.max(this.latestEnd, ...spans.map((span) => span.endedAt));
    await this.sampler.sample(end);
    for (const phase of this.driver.unserved) {
      const spec = this.scenario.phases.find((p) => p.name === phase);
      this.refusals.push({
        phase,
        vmId: null,
        vmGroup: null,
        action: spec?.action ?? 'reboot',
        strategy: null,
        code: 'no_idle_vm',
      });
    }
    return {
      operations: this.operations,
      refusals: this.refusals,
      phases: spans,
      series: { everySeconds: this.scenario.sampleEverySeconds, samples: this.sampler.series() },
      capacity: {
        hosts: this.fleet.hosts.length,
        vms: this.fleet.vms.length,
        memoryBytes: this.fleet.hosts.reduce((sum, h) => sum + gibToBytes(h.memoryGiB), 0),
        hkids: this.fleet.hosts.reduce((sum, h) => sum + h.hkids, 0),
      },
    };
  }

  close(): void {
    this.watcher.close();
    void this.sampler.stop();
  }

  /** Terminates what the run created (see `terminateAll`). */
  cleanUp(): Promise<void> {
    return terminateAll(
      this.client,
      this.fleet.vms.map((vm) => this.prefix + vm.id),
    );
  }

  // ------------------------------------------------------------------------------------------
  // Before the phases.

  /** The daemon's TIME_SCALE, once its limits are found to be the scenario's. */
  private async checkSettings(): Promise<number> {
    const info = await this.client.info();
    const hostConcurrency = this.variant.hostConcurrency ?? this.scenario.limits.hostConcurrency;
    if (info.hostConcurrency !== hostConcurrency) {
      throw new ExperimentError(
        `the daemon runs HOST_CONCURRENCY=${info.hostConcurrency}, the scenario ` +
          `(variant ${this.variant.name}) needs ${hostConcurrency}: start the daemon with ` +
          `HOST_CONCURRENCY=${hostConcurrency}`,
      );
    }
    const global = this.scenario.limits.globalConcurrency;
    if (info.globalConcurrency !== global) {
      const setting = (n: number | null) => (n === null ? ' unset' : `=${n}`);
      throw new ExperimentError(
        `the daemon runs GLOBAL_CONCURRENCY${setting(info.globalConcurrency)}, the scenario ` +
          `needs GLOBAL_CONCURRENCY${setting(global)}`,
      );
    }
    return info.timeScale;
  }

  /**
   * Creates the hosts and VMs and waits for every boot to end. Returns when the phases start on
   * the run's clock: offline, every boot arrives at 0 and the phases start when the last ends;
   * here, each host's boots from the first one's arrival to the last one's end, the longest.
   */
  private async boot(): Promise<number> {
    await Promise.all(
      this.fleet.hosts.map(async (host) => {
        try {
          await this.client.createHost({
            id: this.prefix + host.id,
            memoryGiB: host.memoryGiB,
            hkids: host.hkids,
            packages: host.packages,
            cpus: host.cpus,
            kernel: host.kernel,
            ...(host.hkidCgroupLimit == null ? {} : { hkidCgroupLimit: host.hkidCgroupLimit }),
            ...(host.costModel === undefined ? {} : { costModel: host.costModel }),
          });
        } catch (error) {
          throw refusalError(error, `host ${this.prefix + host.id} could not be created`);
        }
      }),
    );
    await this.watcher.open();
    const boots: DaemonJob[] = [];
    const failures: string[] = [];
    let left = this.fleet.vms.length;
    await Promise.all(
      this.fleet.vms.map(async (vm) => {
        let job: DaemonJob;
        try {
          job = await this.client.createVm({
            id: this.prefix + vm.id,
            hostId: this.prefix + vm.hostId,
            vcpus: vm.vcpus,
            memoryGiB: vm.memoryGiB,
          });
        } catch (error) {
          throw refusalError(error, `VM ${vm.id} could not be created on host ${vm.hostId}`);
        }
        this.follow(job.id, (ended) => {
          left -= 1;
          if (ended.state === 'succeeded') boots.push(ended);
          else failures.push(`${vm.id}: ${ended.error?.message ?? ended.state}`);
        });
      }),
    );
    while (left > 0) {
      this.throwIfFailed();
      await this.wakeup.wait();
    }
    if (failures.length > 0) {
      throw new ExperimentError(
        `the fleet did not boot: ${failures.length} VMs failed (first: ${failures[0]})`,
      );
    }
    // Host times are whole microseconds: their differences are taken exactly.
    const spans = new Map<string, { from: number; to: number }>();
    for (const job of boots) {
      const span = spans.get(job.hostId) ?? { from: Infinity, to: -Infinity };
      span.from = Math.min(span.from, toMicros(job.virtualArrivedAt));
      span.to = Math.max(span.to, toMicros(job.virtualFinishedAt ?? job.virtualArrivedAt));
      spans.set(job.hostId, span);
    }
    let longest = 0;
    for (const span of spans.values()) longest = Math.max(longest, span.to - span.from);
    return toSeconds(longest);
  }

  // ------------------------------------------------------------------------------------------
  // The phases.

  private async drive(startAt: number): Promise<void> {
    this.submit(this.driver.start(startAt), startAt);
    for (;;) {
      this.throwIfFailed();
      const quiet = this.inFlight() === 0;
      const horizon =
        this.timeScale > 0
          ? this.clock.at(performance.now())
          : quiet
            ? this.nextEventAt()
            : -Infinity;
      if (this.deliverUpTo(horizon)) continue;
      if (quiet && this.held.length === 0 && this.driver.nextAt() === null) break;
      const next = this.nextEventAt();
      const wakeAtMs =
        this.timeScale > 0 && Number.isFinite(next) ? this.clock.realMsOf(next) : Infinity;
      await this.waitForChange(wakeAtMs);
    }
    if (!this.driver.done) {
      throw new ExperimentError('the phases did not end: nothing is in flight and nothing is due');
    }
  }

  /** The earliest time of a held end or of the driver's timer. */
  private nextEventAt(): number {
    return Math.min(this.held[0]?.t ?? Infinity, this.driver.nextAt() ?? Infinity);
  }

  /**
   * Tells the driver, in order of time, of every held end and timer due by `horizon`: a time's
   * ends, then its timer; what they issue is submitted together. True if anything was told.
   */
  private deliverUpTo(horizon: number): boolean {
    let delivered = false;
    for (;;) {
      const t = this.nextEventAt();
      if (!Number.isFinite(t) || t > horizon) return delivered;
      const requests: PhaseRequest[] = [];
      while (this.held[0] !== undefined && this.held[0].t === t) {
        requests.push(...this.deliver(this.held.shift() as HeldEnd));
      }
      const timer = this.driver.nextAt();
      if (timer !== null && timer <= t) requests.push(...this.driver.tick(t));
      this.submit(requests, t);
      delivered = true;
    }
  }

  private deliver(end: HeldEnd): PhaseRequest[] {
    if (end.operation !== null) this.operations.push(end.operation);
    if (end.refusal !== null) this.refusals.push(end.refusal);
    this.options.onProgress?.({
      virtualTime: end.t,
      issued: this.issued,
      ended: this.operations.length + this.refusals.length,
    });
    return this.driver.ended(end.vmId, end.t, end.outcome);
  }

  /**
   * Submits requests issued at `requestedAt` on the run's clock, all at once: several of one
   * action and strategy as one batch (a host's then arrive there together, in this order).
   */
  private submit(requests: readonly PhaseRequest[], requestedAt: number): void {
    for (const group of submissionGroups(requests)) {
      this.issued += group.length;
      this.pendingSubmissions += 1;
      const submitted =
        group.length === 1
          ? this.submitOne(group[0] as PhaseRequest, requestedAt)
          : this.submitBatch(group, requestedAt);
      void submitted.finally(() => {
        this.pendingSubmissions -= 1;
        this.wakeup.notify();
      });
    }
  }

  private async submitOne(request: PhaseRequest, requestedAt: number): Promise<void> {
    let sentMs = performance.now();
    let job: DaemonJob;
    try {
      job = await this.client.submit(
        this.prefix + request.vmId,
        request.action,
        request.strategy,
        (realMs) => (sentMs = realMs),
      );
    } catch (error) {
      if (this.isRefusal(error)) this.refused(request, requestedAt, sentMs, error.code);
      return;
    }
    this.followOperation(request, requestedAt, sentMs, job.id);
  }

  /** Submits requests of one action and strategy, each VM once, as one batch. */
  private async submitBatch(requests: readonly PhaseRequest[], requestedAt: number): Promise<void> {
    const first = requests[0] as PhaseRequest;
    let sentMs = performance.now();
    let members: MemberSubmission[];
    try {
      members = await submitAsBatch(
        this.client,
        {
          vmIds: requests.map((r) => this.prefix + r.vmId),
          action: first.action,
          strategy: first.strategy,
        },
        { onSent: (realMs) => (sentMs = realMs), stopped: () => this.failure !== null },
      );
    } catch (error) {
      if (this.isRefusal(error)) {
        for (const request of requests) this.refused(request, requestedAt, sentMs, error.code);
      }
      return;
    }
    members.forEach((member, i) => {
      const request = requests[i] as PhaseRequest;
      if (member.kind === 'job') {
        this.followOperation(request, requestedAt, member.sentMs, member.jobId);
      } else this.refused(request, requestedAt, member.sentMs, member.code);
    });
  }

  /**
   * A 4xx is the daemon refusing the request before anything changed (busy VM, a plan the
   * host's kernel refuses, no capacity...); anything else, and a wrong token, which is the
   * caller's to fix, fails the run.
   */
  private isRefusal(error: unknown): error is DaemonRefusal {
    if (error instanceof DaemonRefusal && error.status !== 401 && error.status !== 403) return true;
    this.fail(error);
    return false;
  }

  /** When a request meant for `requestedAt` and submitted at real time `sentMs` arrived. */
  private arrivalOf(requestedAt: number, sentMs: number): number {
    return requestedAt + this.clock.lagSeconds(requestedAt, sentMs);
  }

  private refused(request: PhaseRequest, requestedAt: number, sentMs: number, code: string): void {
    const vm = this.vmById.get(request.vmId) as FleetVm;
    this.hold({
      t: this.arrivalOf(requestedAt, sentMs),
      hostIndex: this.hostIndex.get(vm.hostId) ?? 0,
      vmId: request.vmId,
      outcome: 'refused',
      operation: null,
      refusal: {
        phase: request.phase,
        vmId: request.vmId,
        vmGroup: vm.group,
        action: request.action,
        strategy: request.strategy,
        code,
      },
    });
  }

  /** Follows a submitted request's job, and holds its end for the driver. */
  private followOperation(
    request: PhaseRequest,
    requestedAt: number,
    sentMs: number,
    jobId: string,
  ): void {
    const vm = this.vmById.get(request.vmId) as FleetVm;
    const arrival = this.arrivalOf(requestedAt, sentMs);
    this.follow(jobId, (ended) => {
      const operation = measuredOperation(ended, {
        request,
        vm,
        hostPrefix: this.prefix,
        requestedAt,
        arrivedAt: arrival,
      });
      const t = operation.finishedAt ?? arrival;
      this.latestEnd = Math.max(this.latestEnd, t);
      this.hold({
        t,
        hostIndex: this.hostIndex.get(vm.hostId) ?? 0,
        vmId: request.vmId,
        outcome:
          ended.state === 'succeeded' || ended.state === 'cancelled' ? ended.state : 'failed',
        operation,
        refusal: null,
      });
    });
  }

  /** Keeps an end for the driver, in order of time, host, then arrival here. */
  private hold(end: Omit<HeldEnd, 'seq'>): void {
    const entry: HeldEnd = { ...end, seq: this.heldSeq++ };
    const before = (a: HeldEnd, b: HeldEnd) =>
      a.t < b.t ||
      (a.t === b.t &&
        (a.hostIndex < b.hostIndex || (a.hostIndex === b.hostIndex && a.seq < b.seq)));
    let lo = 0;
    let hi = this.held.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (before(this.held[mid] as HeldEnd, entry)) lo = mid + 1;
      else hi = mid;
    }
    this.held.splice(lo, 0, entry);
  }

  // ------------------------------------------------------------------------------------------
  // Jobs, waiting and failing.

  private follow(jobId: string, then: (job: DaemonJob) => void): void {
    this.following.set(jobId, then);
    this.watcher.follow(jobId);
  }

  /** Submissions not answered yet and jobs not ended yet. */
  private inFlight(): number {
    return this.pendingSubmissions + this.following.size;
  }

  /** Until something changes or the real time `untilMs` (monotonic) comes. */
  private async waitForChange(untilMs: number): Promise<void> {
    const delay = untilMs - performance.now();
    if (delay <= 0) return;
    if (!Number.isFinite(delay)) {
      await this.wakeup.wait();
      return;
    }
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, delay)));
    await Promise.race([this.wakeup.wait(), timeout]);
    clearTimeout(timer);
  }

  private fail(error: unknown): void {
    this.failure ??= { error };
    this.wakeup.notify();
  }

  private throwIfFailed(): void {
    if (this.failure !== null) throw this.failure.error;
  }
}

/** Wakes the one waiter when something happened, or at its next wait if nobody waited. */
class Wakeup {
  private waiter: (() => void) | null = null;
  private pending = false;

  notify(): void {
    const waiter = this.waiter;
    if (waiter === null) {
      this.pending = true;
      return;
    }
    this.waiter = null;
    waiter();
  }

  wait(): Promise<void> {
    if (this.pending) {
      this.pending = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => (this.waiter = resolve));
  }
}

/** The run's ids as the daemon will see them must be ids it takes. */
function checkPrefix(prefix: string, fleet: BuiltFleet): void {
  const longest = Math.max(0, ...[...fleet.hosts, ...fleet.vms].map((x) => x.id.length));
  if (!ID_PATTERN.test(prefix) || prefix.length + longest > MAX_ID_LENGTH) {
    throw new ExperimentError(
      `run prefix "${prefix}": ids on the daemon must be letters, digits, ".", "_" or "-", ` +
        `start with a letter or digit and be at most ${MAX_ID_LENGTH} long (the longest id of ` +
        `the fleet is ${longest})`,
    );
  }
}

/** A refusal as an error naming what it refused; other errors as they are. */
function refusalError(error: unknown, what: string): unknown {
  if (!(error instanceof DaemonRefusal)) return error;
  return new ExperimentError(`${what}: ${error.code}: ${error.message}`);
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
