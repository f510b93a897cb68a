// Benchmark of the daemon on a private redis-server, TIME_SCALE=0:
//  (a) raw BullMQ: N no-op jobs added in bulk, run by a Worker with the daemon's concurrency;
//  (b) end-to-end reboot jobs: N reboots of booted VMs, their jobs added in bulk, run by the
//      daemon's workers (FleetWorkers, in process) with the same concurrency;
//  (b') the same reboots without the queue: handed straight to the workers' runner, with the
//      same concurrency: what the reboots cost besides BullMQ's own work;
//  (c) the API: POST /v1/vms/{id}/reboot against a fleetd process under a loopback load.
// (a) and (b) run back to back, `--rounds` times (fresh hosts each round), after one round that
// is not counted: both phases first run with the code not yet optimised by the JIT, and raw
// BullMQ, measured cold, looks half as fast as it is. The report gives the medians, and the ratio
// is the median of each round's ratio, so one noisy phase does not decide it. (b') runs
// `--rounds` times after them.
//   npm run -s bench:daemon -- [--json] [--rounds N] [--jobs N] [--vms-per-host N] [--api-seconds S]
import { MAINLINE_KERNEL } from '#tdx-sim';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { Queue, Worker } from 'bullmq';
import { CONFIG_DEFAULTS } from '#config';
import {
  type HostDocument,
  advanceOperation,
  createHostDocument,
  createVm,
  submitOperation,
} from '#fleet';
import {
  FleetQueues,
  FleetService,
  FleetWorkers,
  type OperationJobData,
  OperationRunner,
} from '#queue';
import { type RedisServerHandle, findFreePort, startRedisServer } from '#redis';
import { FleetStore } from '#store';
import { REBOOT_STRATEGIES } from '#vmm';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { spawnService, waitForStatus } from '../test/support/service-process.js';

const GIB = 1024 ** 3;
const KERNEL = {
  ...MAINLINE_KERNEL,
  terminateVm: 'aug2025',
  linkGuestMemfd: true,
  privatePageSize: '2M',
} as const;
/** Every strategy runs on {@link KERNEL}: reboots take them in turn. */
const STRATEGIES = REBOOT_STRATEGIES;
/** The daemon's defaults, so both measurements run with the same concurrency as `npm start`. */
const CONCURRENCY = Number(CONFIG_DEFAULTS.WORKER_CONCURRENCY);
const HOST_CONCURRENCY = Number(CONFIG_DEFAULTS.HOST_CONCURRENCY);
/** The same job options the daemon's queues use (FleetQueues), for a fair comparison. */
const JOB_OPTIONS = {
  attempts: 20,
  backoff: { type: 'exponential', delay: 500 },
  removeOnComplete: { age: 24 * 3600, count: 10_000 },
  removeOnFail: { age: 7 * 24 * 3600 },
};
const ADD_CHUNK = 1000;
/** Upper bound on each measured phase, so a stuck run ends. */
const PHASE_TIMEOUT_MS = 120_000;

const { values } = parseArgs({
  options: {
    json: { type: 'boolean' },
    rounds: { type: 'string' },
    jobs: { type: 'string' },
    'vms-per-host': { type: 'string' },
    'api-seconds': { type: 'string' },
    'api-vms': { type: 'string' },
    'api-connections': { type: 'string' },
  },
});

function positive(name: string, value: string | undefined, fallback: number, max: number): number {
  const parsed = value === undefined ? fallback : Number(value);
  if (!Number.isSafeInteger(parsed) || parsed < 1 || parsed > max) {
    process.stderr.write(`bench:daemon: --${name} must be an integer from 1 to ${max}\n`);
    process.exit(2);
  }
  return parsed;
}

const ROUNDS = positive('rounds', values.rounds, 3, 20);
const JOBS = positive('jobs', values.jobs, 2000, 20_000);
const VMS_PER_HOST = positive('vms-per-host', values['vms-per-host'], 8, 60);
const API_SECONDS = positive('api-seconds', values['api-seconds'], 5, 60);
const API_VMS = positive('api-vms', values['api-vms'], 256, 2000);
const API_CONNECTIONS = positive('api-connections', values['api-connections'], 16, 256);

const silent = pino({ level: 'silent' });

/** What to stop if the run is interrupted (SIGINT, SIGTERM): child process groups, redis. */
const onInterrupt = new Set<() => void>();
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    for (const stop of onInterrupt) stop();
    process.exit(130);
  });
}
/** Progress: on stdout, or on stderr with --json (stdout then has the JSON line only). */
const log = (line: string): void => {
  (values.json === true ? process.stderr : process.stdout).write(`${line}\n`);
};

/** Waits until `count()` reaches `target`; returns the milliseconds from `startMs`. */
async function until(startMs: number, target: number, count: () => Promise<number>) {
  for (;;) {
    const done = await count();
    if (done >= target) return performance.now() - startMs;
    if (performance.now() - startMs > PHASE_TIMEOUT_MS) {
      throw new Error(`only ${done} of ${target} jobs done within ${PHASE_TIMEOUT_MS} ms`);
    }
    await sleep(5);
  }
}

/** What one measured phase came to. */
interface PhaseResult {
  jobsPerSecond: number;
  /** CPU time (user and system, every thread) this process spent per job during the phase. */
  cpuMicrosecondsPerJob: number;
}

/** Starts the clock of a phase: call the result with the jobs done once they are all done. */
function startPhase(): { startMs: number; end: (jobs: number, ms: number) => PhaseResult } {
  const cpu = process.cpuUsage();
  return {
    startMs: performance.now(),
    end: (jobs, ms) => {
      const used = process.cpuUsage(cpu);
      return {
        jobsPerSecond: (jobs / ms) * 1000,
        cpuMicrosecondsPerJob: (used.user + used.system) / jobs,
      };
    },
  };
}

/** (a) N no-op jobs, added in bulk, run to completion by one Worker. */
async function rawBullmq(url: string): Promise<PhaseResult> {
  const connection = new Redis(url, { maxRetriesPerRequest: null });
  const workerConnection = new Redis(url, { maxRetriesPerRequest: null });
  const prefix = '{bench-raw}';
  const queue = new Queue('noop', { connection, prefix, defaultJobOptions: JOB_OPTIONS });
  const worker = new Worker('noop', () => Promise.resolve({ ok: true }), {
    connection: workerConnection,
    prefix,
    concurrency: CONCURRENCY,
    autorun: false,
  });
  try {
    void worker.run();
    await worker.waitUntilReady();
    const phase = startPhase();
    for (let i = 0; i < JOBS; i += ADD_CHUNK) {
      const count = Math.min(ADD_CHUNK, JOBS - i);
      await queue.addBulk(
        Array.from({ length: count }, (_, k) => ({
          name: 'noop',
          data: { opId: `noop-${i + k}`, hostId: 'none' },
          opts: { jobId: `noop-${i + k}` },
        })),
      );
    }
    const ms = await until(phase.startMs, JOBS, () => queue.getCompletedCount());
    return phase.end(JOBS, ms);
  } finally {
    await worker.close();
    await queue.obliterate({ force: true });
    await queue.close();
    await Promise.all([connection.quit(), workerConnection.quit()]);
  }
}

/** Runs an operation to its end in pure virtual time: how the bench boots its VMs. */
function runToEnd(doc: HostDocument, opId: string, nowMs: number): HostDocument {
  let current = doc;
  for (;;) {
    const advance = advanceOperation(current, opId, {
      nowMs,
      timeScale: 0,
      hostConcurrency: VMS_PER_HOST,
      maxWaitMs: 0,
      pollMs: 50,
    });
    if (advance.kind === 'wait') throw new Error(`boot of ${opId} waits`);
    current = advance.doc;
    if (advance.finished !== null) {
      if (advance.finished.state !== 'succeeded') throw new Error(`boot of ${opId} failed`);
      return current;
    }
  }
}

/** `--jobs` VMs, `--vms-per-host` on each host (fewer on the last). */
const HOSTS = Math.ceil(JOBS / VMS_PER_HOST);
const vmsOnHost = (h: number): number => Math.min(VMS_PER_HOST, JOBS - h * VMS_PER_HOST);

/** The hosts with their VMs booted (in pure virtual time), stored; returns the host ids. */
async function storeBootedHosts(store: FleetStore): Promise<string[]> {
  const hostIds: string[] = [];
  const now = Date.now();
  for (let h = 0; h < HOSTS; h += 1) {
    const hostId = `host-${h}`;
    const vms = vmsOnHost(h);
    let doc = createHostDocument(
      { id: hostId, memoryGiB: 4 * vms + 16, hkids: 63, packages: 2, cpus: 64, kernel: KERNEL },
      now,
    );
    for (let v = 0; v < vms; v += 1) {
      const vmId = `vm-${h}-${v}`;
      doc = createVm(doc, {
        vmId,
        opId: `boot-${vmId}`,
        vcpus: 2,
        memoryBytes: 2 * GIB,
        nowMs: now,
      }).doc;
      doc = runToEnd(doc, `boot-${vmId}`, now);
      await store.indexVm(vmId, hostId);
    }
    await store.createHost(doc);
    hostIds.push(hostId);
  }
  return hostIds;
}

/**
 * Records a reboot of every VM (cold, terminate and reuse in turn) in its host's document, one
 * compare-and-set per host as the API would do one per request; returns the operations to run.
 */
async function submitReboots(
  store: FleetStore,
  hostIds: readonly string[],
): Promise<OperationJobData[]> {
  const operations: OperationJobData[] = [];
  for (const [h, hostId] of hostIds.entries()) {
    await store.update(hostId, (current) => {
      let next = current;
      for (let v = 0; v < vmsOnHost(h); v += 1) {
        next = submitOperation(next, {
          opId: `reboot-${h}-${v}`,
          vmId: `vm-${h}-${v}`,
          action: 'reboot',
          strategy: STRATEGIES[(h + v) % STRATEGIES.length] ?? 'cold',
          nowMs: Date.now(),
        }).doc;
      }
      return { doc: next, value: null };
    });
    for (let v = 0; v < vmsOnHost(h); v += 1) {
      operations.push({ opId: `reboot-${h}-${v}`, hostId });
      await store.indexJob(`reboot-${h}-${v}`, hostId);
    }
  }
  return operations;
}

/** Every reboot must have succeeded for a number to mean anything. */
async function checkSucceeded(
  store: FleetStore,
  operations: readonly OperationJobData[],
): Promise<void> {
  const failed: string[] = [];
  for (const { opId } of operations) {
    const op = await store.getJob(opId);
    if (op?.state !== 'succeeded') failed.push(`${opId}: ${op?.state ?? 'missing'}`);
  }
  if (failed.length > 0) {
    throw new Error(`${failed.length} reboots did not succeed: ${failed.slice(0, 5).join(', ')}`);
  }
}

/** How the daemon's workers run operations, with TIME_SCALE=0. */
const RUNNER_OPTIONS = {
  timeScale: 0,
  hostConcurrency: HOST_CONCURRENCY,
  stepWaitTimeoutMs: Number(CONFIG_DEFAULTS.STEP_WAIT_TIMEOUT_MS),
  pollMs: 50,
};

/**
 * (b) N reboots of booted VMs, their jobs added in bulk, run to completion by the daemon's
 * workers in this process.
 */
async function rebootJobs(url: string, round: number): Promise<PhaseResult> {
  const storeRedis = new Redis(url);
  const queueRedis = new Redis(url, { maxRetriesPerRequest: null });
  const store = new FleetStore(storeRedis, `bench-e2e-${round}`);
  const queues = new FleetQueues(queueRedis, store.keys.queuePrefix);
  const service = new FleetService(store, queues);
  const workers = new FleetWorkers(
    store,
    queues,
    service,
    {
      ...RUNNER_OPTIONS,
      redisUrl: url,
      queuePrefix: store.keys.queuePrefix,
      concurrency: CONCURRENCY,
      globalConcurrency: null,
      lockDurationMs: Number(CONFIG_DEFAULTS.JOB_LOCK_MS),
    },
    silent,
  );
  try {
    // The hosts are stored before the workers start (their start-up reconcile looks for
    // operations without a job: there are none yet); only the jobs are left to add, timed.
    const hostIds = await storeBootedHosts(store);
    await workers.start();
    const jobs = await submitReboots(store, hostIds);
    const phase = startPhase();
    for (let i = 0; i < jobs.length; i += ADD_CHUNK) {
      await queues.operations.addBulk(
        jobs.slice(i, i + ADD_CHUNK).map((data) => ({
          name: 'operation',
          data,
          opts: { jobId: data.opId },
        })),
      );
    }
    const ms = await until(phase.startMs, jobs.length, () => queues.operations.getCompletedCount());
    const result = phase.end(jobs.length, ms);
    await checkSucceeded(store, jobs);
    return result;
  } finally {
    await workers.stop();
    await queues.close();
    await Promise.all([storeRedis.quit(), queueRedis.quit()]);
  }
}

/**
 * (b') The same reboots with no queue: `CONCURRENCY` loops hand them straight to the runner the
 * workers use (OperationRunner: the executor, the store's compare-and-set commits). What a
 * reboot costs the daemon besides BullMQ's own work per job.
 */
async function rebootsWithoutQueue(url: string, round: number): Promise<PhaseResult> {
  const storeRedis = new Redis(url);
  const store = new FleetStore(storeRedis, `bench-direct-${round}`);
  const runner = new OperationRunner(store, RUNNER_OPTIONS);
  const running = new AbortController();
  try {
    const operations = await submitReboots(store, await storeBootedHosts(store));
    const phase = startPhase();
    let next = 0;
    const loop = async (): Promise<void> => {
      for (let op = operations[next++]; op !== undefined; op = operations[next++]) {
        const outcome = await runner.run(op.opId, op.hostId, running.signal);
        if (outcome.kind !== 'finished') throw new Error(`${op.opId}: ${outcome.kind}`);
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, loop));
    const result = phase.end(operations.length, performance.now() - phase.startMs);
    await checkSucceeded(store, operations);
    return result;
  } finally {
    running.abort();
    await storeRedis.quit();
  }
}

interface ApiReport {
  requestsPerSecond: number;
  p99Ms: number;
  statusCounts: Record<string, number>;
  vms: number;
  connections: number;
  seconds: number;
}

async function post(url: string, body: unknown): Promise<{ status: number; json: unknown }> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: response.status, json: await response.json() };
}

/**
 * (c) A fleetd process (API + workers, TIME_SCALE=0) on this Redis; `API_VMS` booted VMs; then
 * autocannon POSTs reboots over them round-robin for `API_SECONDS` on loopback. A VM that is
 * still rebooting answers 409, so 202 and 409 are counted apart.
 */
async function apiLoad(url: string): Promise<ApiReport> {
  const port = await findFreePort();
  const base = `http://127.0.0.1:${port}`;
  const fleetd = spawnService('dist/apps/fleetd/src/main.js', {
    REDIS_URL: url,
    PORT: String(port),
    TIME_SCALE: '0',
    KEY_PREFIX: 'bench-api',
    LOG_LEVEL: 'warn',
    SHUTDOWN_TIMEOUT_MS: '5000',
  });
  const killFleetd = (): void => fleetd.killGroup();
  onInterrupt.add(killFleetd);
  try {
    await waitForStatus(`${base}/readyz`, 200, 30_000, () => fleetd.child.exitCode === null);
    // Few VMs per host, and consecutive requests on different hosts: requests to one host
    // serialise on its document's compare-and-set.
    const perHost = 8;
    const hosts = Math.ceil(API_VMS / perHost);
    for (let h = 0; h < hosts; h += 1) {
      const created = await post(`${base}/v1/hosts`, {
        id: `api-host-${h}`,
        memoryGiB: 4 * perHost + 16,
        hkids: 63,
        packages: 2,
        cpus: 64,
        kernel: KERNEL,
      });
      if (created.status !== 201) {
        throw new Error(
          `POST /v1/hosts answered ${created.status}: ${JSON.stringify(created.json)}`,
        );
      }
    }
    const vmIds: string[] = [];
    const bootJobs: string[] = [];
    for (let v = 0; v < API_VMS; v += 1) {
      const id = `api-vm-${v}`;
      const created = await post(`${base}/v1/vms`, {
        id,
        hostId: `api-host-${v % hosts}`,
        vcpus: 2,
        memoryGiB: 2,
      });
      if (created.status !== 202) {
        throw new Error(`POST /v1/vms answered ${created.status}: ${JSON.stringify(created.json)}`);
      }
      vmIds.push(id);
      bootJobs.push((created.json as { job: { id: string } }).job.id);
    }
    const bootDeadline = performance.now() + PHASE_TIMEOUT_MS;
    for (const jobId of bootJobs) {
      for (;;) {
        const response = await fetch(`${base}/v1/jobs/${jobId}`);
        const job = (await response.json()) as { state?: string };
        if (job.state === 'succeeded') break;
        if (job.state === 'failed' || job.state === 'cancelled') {
          throw new Error(`boot job ${jobId} ${job.state}`);
        }
        if (performance.now() > bootDeadline) throw new Error(`boot job ${jobId} is stuck`);
        await sleep(20);
      }
    }

    let next = 0;
    const result = await autocannon({
      url: base,
      connections: API_CONNECTIONS,
      duration: API_SECONDS,
      requests: [
        {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          setupRequest: (request) => {
            const vmId = vmIds[next % vmIds.length] ?? 'api-vm-0';
            const strategy = STRATEGIES[Math.floor(next / vmIds.length) % STRATEGIES.length];
            next += 1;
            return {
              ...request,
              path: `/v1/vms/${vmId}/reboot`,
              body: JSON.stringify({ strategy }),
            };
          },
        },
      ],
    });
    const statusCounts: Record<string, number> = {};
    const stats = (result as { statusCodeStats?: Record<string, { count: number }> })
      .statusCodeStats;
    for (const [code, { count }] of Object.entries(stats ?? {})) statusCounts[code] = count;
    if (result.errors > 0) statusCounts['errors'] = result.errors;
    if (result.timeouts > 0) statusCounts['timeouts'] = result.timeouts;
    return {
      requestsPerSecond: result.requests.average,
      p99Ms: result.latency.p99,
      statusCounts,
      vms: API_VMS,
      connections: API_CONNECTIONS,
      seconds: API_SECONDS,
    };
  } finally {
    fleetd.child.kill('SIGTERM');
    await fleetd.exited(10_000).catch(() => undefined);
    fleetd.killGroup();
    onInterrupt.delete(killFleetd);
  }
}

const round1 = (n: number, digits = 1): number => Number(n.toFixed(digits));
const median = (values: readonly number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[mid] ?? 0)
    : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
};

let redisDir: string | undefined;
let redis: RedisServerHandle | undefined;
try {
  redisDir = await mkdtemp(join(tmpdir(), 'tdxfleet-bench-redis-'));
  redis = await startRedisServer({ dir: redisDir, appendOnly: false });
  const redisPid = redis.pid;
  onInterrupt.add(() => {
    try {
      process.kill(redisPid, 'SIGKILL');
    } catch {
      // already gone
    }
  });
  log(`redis-server ${redis.url}; ${JOBS} jobs; worker concurrency ${CONCURRENCY}`);
  const warmRaw = await rawBullmq(redis.url);
  const warmReboots = await rebootJobs(redis.url, 0);
  log(
    `warm-up round (not counted): raw ${round1(warmRaw.jobsPerSecond)} jobs/s, ` +
      `reboot ${round1(warmReboots.jobsPerSecond)} jobs/s`,
  );
  const rounds: Array<{ raw: PhaseResult; reboots: PhaseResult; ratio: number }> = [];
  const perJob = (phase: PhaseResult): string =>
    `${round1(phase.jobsPerSecond)}/s (${Math.round(phase.cpuMicrosecondsPerJob)} µs CPU each)`;
  for (let round = 1; round <= ROUNDS; round += 1) {
    const raw = await rawBullmq(redis.url);
    const reboots = await rebootJobs(redis.url, round);
    const ratio = reboots.jobsPerSecond / raw.jobsPerSecond;
    rounds.push({ raw, reboots, ratio });
    log(
      `round ${round}: raw BullMQ no-op jobs ${perJob(raw)}; reboot jobs end to end ` +
        `${perJob(reboots)} (${VMS_PER_HOST} VMs per host, host concurrency ` +
        `${HOST_CONCURRENCY}); ratio ${ratio.toFixed(3)}`,
    );
  }
  // After the rounds above, so that the ratio is measured as before this phase existed (the
  // heap it leaves behind changes the next phases' garbage collection).
  const withoutQueue: PhaseResult[] = [];
  for (let round = 1; round <= ROUNDS; round += 1) {
    const result = await rebootsWithoutQueue(redis.url, round);
    withoutQueue.push(result);
    log(`the same reboots without the queue, round ${round}: ${perJob(result)}`);
  }
  log(
    `API: fleetd with TIME_SCALE=0, ${API_VMS} VMs, ${API_CONNECTIONS} connections, ${API_SECONDS} s`,
  );
  const api = await apiLoad(redis.url);
  const report = {
    rawBullmqJobsPerSecond: round1(median(rounds.map((r) => r.raw.jobsPerSecond))),
    rebootJobsPerSecond: round1(median(rounds.map((r) => r.reboots.jobsPerSecond))),
    ratio: round1(median(rounds.map((r) => r.ratio)), 3),
    // This process's CPU time per job (every thread: the JIT and the GC too), medians.
    // The reboots' own work (executor and commits) with no queue around it: both it and
    // BullMQ's work per job run on this process's one JavaScript thread.
    rebootWithoutQueuePerSecond: round1(median(withoutQueue.map((r) => r.jobsPerSecond))),
    cpuMicrosecondsPerJob: {
      rawBullmq: Math.round(median(rounds.map((r) => r.raw.cpuMicrosecondsPerJob))),
      reboot: Math.round(median(rounds.map((r) => r.reboots.cpuMicrosecondsPerJob))),
      rebootWithoutQueue: Math.round(median(withoutQueue.map((r) => r.cpuMicrosecondsPerJob))),
    },
    rounds: rounds.map((r) => ({
      rawBullmqJobsPerSecond: round1(r.raw.jobsPerSecond),
      rebootJobsPerSecond: round1(r.reboots.jobsPerSecond),
      ratio: round1(r.ratio, 3),
    })),
    api: {
      requestsPerSecond: round1(api.requestsPerSecond),
      p99Ms: api.p99Ms,
      statusCounts: api.statusCounts,
    },
    settings: {
      rounds: ROUNDS,
      jobs: JOBS,
      workerConcurrency: CONCURRENCY,
      hostConcurrency: HOST_CONCURRENCY,
      vmsPerHost: VMS_PER_HOST,
      timeScale: 0,
      api: { vms: api.vms, connections: api.connections, seconds: api.seconds },
    },
  };
  if (values.json === true) {
    process.stdout.write(`${JSON.stringify(report)}\n`);
  } else {
    log(
      `medians over ${ROUNDS} rounds: raw ${report.rawBullmqJobsPerSecond} jobs/s, reboot ` +
        `${report.rebootJobsPerSecond} jobs/s, ratio ${report.ratio} (target >= 0.5); CPU per ` +
        `job ${report.cpuMicrosecondsPerJob.rawBullmq} µs raw, ${report.cpuMicrosecondsPerJob.reboot} µs reboot`,
    );
    log(
      `the same reboots without the queue: ${report.rebootWithoutQueuePerSecond}/s, ` +
        `${report.cpuMicrosecondsPerJob.rebootWithoutQueue} µs CPU each`,
    );
    log(
      `API POST /v1/vms/{id}/reboot: ${report.api.requestsPerSecond} requests/s, ` +
        `p99 ${report.api.p99Ms} ms, statuses ${JSON.stringify(report.api.statusCounts)} ` +
        `(${api.connections} connections over ${api.vms} VMs for ${api.seconds} s)`,
    );
  }
} catch (error) {
  process.stderr.write(
    `bench:daemon failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
  );
  process.exitCode = 1;
} finally {
  await redis?.stop();
  if (redisDir !== undefined) await rm(redisDir, { recursive: true, force: true });
}
