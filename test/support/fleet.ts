import { setTimeout as sleep } from 'node:timers/promises';
import { type HostDocument, type JobState, type OperationRecord, hostView } from '#fleet';
import { DEFAULT_ENVIRONMENT, FleetQueues, FleetService } from '#queue';
import { findFreePort } from '#redis';
import { FleetStore } from '#store';
import { checkInvariants } from '#tdx-sim';
import { Redis } from 'ioredis';
import { type ServiceProcess, spawnService, waitForStatus } from './service-process.js';

/**
 * Which BullMQ workers hold the locks of `jobIds` now: a lock's token is `<worker id>:<n>`, the
 * worker id being unique per Worker instance (so per process here).
 */
export async function lockHolders(
  redis: Redis,
  queues: FleetQueues,
  jobIds: readonly string[],
): Promise<string[]> {
  if (jobIds.length === 0) return [];
  const tokens = await redis.mget(jobIds.map((id) => `${queues.operations.toKey(id)}:lock`));
  return tokens.flatMap((t) => (t === null ? [] : [t.slice(0, t.lastIndexOf(':'))]));
}

/** The worker process as built by `npm run build`. */
export const WORKER_SCRIPT = 'dist/apps/worker/src/main.js';

/** A test's own handle on a fleet: the store, the queues and the service over one Redis. */
export interface FleetClient {
  readonly store: FleetStore;
  readonly queues: FleetQueues;
  readonly service: FleetService;
  close(): Promise<void>;
}

/**
 * Connects to the fleet under `prefix` the way the API process does; `timeScale` is the workers'
 * TIME_SCALE, so that operations arrive at their hosts' current virtual time.
 */
export function connectFleet(redisUrl: string, prefix: string, timeScale = 0): FleetClient {
  const storeRedis = new Redis(redisUrl);
  const queueRedis = new Redis(redisUrl, { maxRetriesPerRequest: null });
  const store = new FleetStore(storeRedis, prefix);
  const queues = new FleetQueues(queueRedis, store.keys.queuePrefix);
  const service = new FleetService(store, queues, { ...DEFAULT_ENVIRONMENT, timeScale });
  return {
    store,
    queues,
    service,
    close: async () => {
      await queues.close();
      await Promise.all([storeRedis.quit(), queueRedis.quit()]);
    },
  };
}

/** A worker process of ours, with the port its health endpoint answers on. */
export interface WorkerProcess extends ServiceProcess {
  readonly port: number;
}

/**
 * Spawns `node dist/apps/worker/src/main.js` against `redisUrl` with `KEY_PREFIX=prefix` and
 * `env`, and waits until its `/readyz` answers 200 (its BullMQ workers are running).
 */
export async function startWorker(
  redisUrl: string,
  prefix: string,
  env: Record<string, string> = {},
): Promise<WorkerProcess> {
  const port = await findFreePort();
  const proc = spawnService(WORKER_SCRIPT, {
    REDIS_URL: redisUrl,
    KEY_PREFIX: prefix,
    WORKER_PORT: String(port),
    LOG_LEVEL: 'warn',
    ...env,
  });
  try {
    await waitForStatus(`http://127.0.0.1:${port}/readyz`, 200, 20_000, () => {
      return proc.child.exitCode === null && proc.child.signalCode === null;
    });
  } catch (error) {
    proc.killGroup();
    throw new Error(
      `worker did not get ready: ${error instanceof Error ? error.message : String(error)}\n` +
        `${proc.stdout()}\n${proc.stderr()}`,
      { cause: error },
    );
  }
  return { ...proc, port };
}

/** The simulator's invariants of every host document, and a few of the fleet's own. */
export function documentProblems(doc: HostDocument): string[] {
  const problems = checkInvariants(doc.sim).map((p) => `host ${doc.id} (v${doc.version}): ${p}`);
  for (const vm of Object.values(doc.vms)) {
    if (vm.activeJob !== null && doc.ops[vm.activeJob] === undefined) {
      problems.push(`host ${doc.id}: VM ${vm.id} names job ${vm.activeJob}, not in the document`);
    }
  }
  for (const op of Object.values(doc.ops)) {
    if (doc.vms[op.vmId]?.activeJob !== op.id) {
      problems.push(`host ${doc.id}: job ${op.id} is not its VM's active job`);
    }
  }
  return problems;
}

/** Reads every host document, recording what is wrong with each into `problems`. */
export async function sampleHosts(store: FleetStore, problems: string[]): Promise<HostDocument[]> {
  const docs = await store.listHosts();
  for (const doc of docs) {
    for (const problem of documentProblems(doc)) {
      if (!problems.includes(problem)) problems.push(problem);
    }
  }
  return docs;
}

const FINAL_STATES: readonly JobState[] = ['succeeded', 'failed', 'cancelled'];

/**
 * Waits until every job has ended, sampling the host documents (and their invariants) on each
 * poll. Returns the finished operation records by id.
 */
export async function waitForJobs(
  fleet: FleetClient,
  jobIds: readonly string[],
  options: {
    timeoutMs: number;
    problems: string[];
    pollMs?: number;
    /** Called on every poll with the jobs not finished yet. */
    onPoll?: (pending: string[]) => Promise<void>;
  },
): Promise<Map<string, OperationRecord>> {
  const deadline = performance.now() + options.timeoutMs;
  const done = new Map<string, OperationRecord>();
  for (;;) {
    await sampleHosts(fleet.store, options.problems);
    await options.onPoll?.(jobIds.filter((id) => !done.has(id)));
    for (const id of jobIds) {
      if (done.has(id)) continue;
      const op = await fleet.store.getJob(id);
      if (op !== null && FINAL_STATES.includes(op.state)) done.set(id, op);
    }
    if (done.size === jobIds.length) return done;
    if (performance.now() > deadline) {
      const pending = jobIds.filter((id) => !done.has(id));
      const states = await Promise.all(
        pending.map(async (id) => `${id}: ${(await fleet.store.getJob(id))?.state ?? 'unknown'}`),
      );
      throw new Error(`jobs not finished within ${options.timeoutMs} ms: ${states.join(', ')}`);
    }
    await sleep(options.pollMs ?? 25);
  }
}

/** A host's usage as its document holds it (at its clock), for comparisons. */
export function settledUsage(doc: HostDocument, nowMs: number) {
  const view = hostView(doc, nowMs);
  return { memory: view.usage.memory, hkids: view.usage.hkids };
}
