// Several worker processes on one Redis give the same results as one: a scenario of boots,
// rounds of reboots with every strategy each host's kernel allows, and terminates, run by real
// worker processes (`dist/apps/worker/src/main.js`), with the host documents' invariants
// checked every time a test reads them.
import { MAINLINE_KERNEL } from '#tdx-sim';
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { OperationRecord, Strategy } from '#fleet';
import type { KernelFeatures } from '#tdx-sim';
import { runnableStrategies } from '#vmm';
import { Redis } from 'ioredis';
import {
  type FleetClient,
  type WorkerProcess,
  connectFleet,
  lockHolders,
  sampleHosts,
  settledUsage,
  startWorker,
  waitForJobs,
} from './support/fleet.js';
import { startTestRedis, type TestRedis } from './support/redis.js';

const GIB = 1024 ** 3;

const HOSTS: Array<{ id: string; kernel: KernelFeatures }> = [
  {
    id: 'h-mainline',
    kernel: {
      ...MAINLINE_KERNEL,
      terminateVm: 'none',
      linkGuestMemfd: false,
      privatePageSize: '4K',
    },
  },
  {
    id: 'h-v4',
    kernel: { ...MAINLINE_KERNEL, terminateVm: 'v4', linkGuestMemfd: false, privatePageSize: '4K' },
  },
  {
    id: 'h-aug2025',
    kernel: {
      ...MAINLINE_KERNEL,
      terminateVm: 'aug2025',
      linkGuestMemfd: true,
      privatePageSize: '2M',
    },
  },
];
const VM_SHAPES = [
  { vcpus: 2, memoryGiB: 2 },
  { vcpus: 4, memoryGiB: 4 },
  { vcpus: 2, memoryGiB: 6 },
  { vcpus: 4, memoryGiB: 8 },
];
const REBOOT_ROUNDS = 3;

function rebootStrategies(kernel: KernelFeatures): Strategy[] {
  return runnableStrategies('reboot', kernel);
}

function terminateStrategies(kernel: KernelFeatures): Strategy[] {
  return runnableStrategies('terminate', kernel);
}

/** What must come out the same however many workers run the scenario, and however fast. */
interface Outcome {
  /** Per job, in submission order: what it was and what it did (no ids, no times). */
  jobs: Array<{
    vmId: string;
    action: string;
    strategy: string | null;
    state: string;
    steps: string[];
    bytes: Record<string, number> | null;
  }>;
  /** Per VM, after each round: its state, generation and guest_memfds. */
  vmHistory: Record<
    string,
    Array<{
      state: string;
      generation: number;
      guestMemfds: Array<{ bytes: number; firstBootGeneration: number }>;
      /** Whether the guest_memfd ids are the ones it had before the round. */
      keptGuestMemfds: boolean;
    }>
  >;
  hosts: Record<
    string,
    {
      usage: ReturnType<typeof settledUsage>;
      vmStates: Record<string, number>;
      openOps: number;
    }
  >;
}

function jobSummary(op: OperationRecord): Outcome['jobs'][number] {
  return {
    vmId: op.vmId,
    action: op.action,
    strategy: op.strategy,
    state: op.state,
    steps: op.steps.map((s) => `${s.name}:${s.state}`),
    bytes:
      op.result === null
        ? null
        : {
            bytesReclaimed: op.result.bytesReclaimed,
            bytesFreed: op.result.bytesFreed,
            bytesReused: op.result.bytesReused,
            bytesAllocated: op.result.bytesAllocated,
          },
  };
}

/**
 * Runs the scenario on a fresh prefix with `workers` worker processes at `timeScale`; returns
 * its outcome and every problem seen in a host document along the way.
 */
async function runScenario(
  redisUrl: string,
  prefix: string,
  workers: number,
  timeScale: number,
): Promise<{ outcome: Outcome; problems: string[]; lockHolders: number }> {
  const env = {
    TIME_SCALE: String(timeScale),
    WORKER_CONCURRENCY: '8',
    HOST_CONCURRENCY: '2',
    SHUTDOWN_TIMEOUT_MS: '5000',
  };
  const processes: WorkerProcess[] = [];
  const fleet: FleetClient = connectFleet(redisUrl, prefix, timeScale);
  const problems: string[] = [];
  const outcome: Outcome = { jobs: [], vmHistory: {}, hosts: {} };
  const previousIds = new Map<string, string[]>();
  const lockRedis = new Redis(redisUrl);
  const holders = new Set<string>();
  try {
    processes.push(
      ...(await Promise.all(
        Array.from({ length: workers }, () => startWorker(redisUrl, prefix, env)),
      )),
    );
    const vms: Array<{ id: string; kernel: KernelFeatures; index: number }> = [];
    for (const host of HOSTS) {
      await fleet.service.createHost({
        id: host.id,
        memoryGiB: 64,
        hkids: 16,
        packages: 2,
        cpus: 64,
        kernel: host.kernel,
      });
    }

    const runRound = async (submit: () => Promise<string[]>): Promise<void> => {
      const jobIds = await submit();
      const finished = await waitForJobs(fleet, jobIds, {
        timeoutMs: 30_000,
        problems,
        onPoll: async (pending) => {
          for (const holder of await lockHolders(lockRedis, fleet.queues, pending)) {
            holders.add(holder);
          }
        },
      });
      for (const id of jobIds) {
        const op = finished.get(id);
        assert.ok(op !== undefined);
        outcome.jobs.push(jobSummary(op));
      }
      // Each VM as GET /v1/vms/{id} shows it: a terminated one has left its host's document.
      for (const { id: vmId } of vms) {
        const vm = await fleet.service.getVm(vmId);
        const ids = vm.guestMemfds.map((g) => g.id);
        const before = previousIds.get(vm.id) ?? [];
        previousIds.set(vm.id, ids);
        (outcome.vmHistory[vm.id] ??= []).push({
          state: vm.state,
          generation: vm.generation,
          guestMemfds: vm.guestMemfds.map((g) => ({
            bytes: g.bytes,
            firstBootGeneration: g.firstBootGeneration,
          })),
          keptGuestMemfds: ids.length > 0 && ids.every((id, i) => before[i] === id),
        });
      }
    };

    // Boot every VM.
    await runRound(async () => {
      const jobs: string[] = [];
      for (const host of HOSTS) {
        for (const [index, shape] of VM_SHAPES.entries()) {
          const id = `vm-${host.id}-${index}`;
          const { job } = await fleet.service.createVm({
            id,
            hostId: host.id,
            vcpus: shape.vcpus,
            memoryBytes: shape.memoryGiB * GIB,
          });
          vms.push({ id, kernel: host.kernel, index });
          jobs.push(job.id);
        }
      }
      return jobs;
    });

    // Rounds of reboots, all at once, each VM with a strategy its kernel allows (rotating).
    for (let round = 0; round < REBOOT_ROUNDS; round += 1) {
      await runRound(() =>
        Promise.all(
          vms.map(async (vm) => {
            const strategies = rebootStrategies(vm.kernel);
            const strategy = strategies[(round + vm.index) % strategies.length] ?? 'cold';
            return (await fleet.service.submit(vm.id, 'reboot', strategy)).job.id;
          }),
        ),
      );
    }

    // Terminate half the VMs (with each strategy the kernel allows) while the others reboot.
    await runRound(() =>
      Promise.all(
        vms.map(async (vm) => {
          if (vm.index < 2) {
            const strategies = terminateStrategies(vm.kernel);
            const strategy = strategies[vm.index % strategies.length] ?? 'close';
            return (await fleet.service.submit(vm.id, 'terminate', strategy)).job.id;
          }
          const strategies = rebootStrategies(vm.kernel);
          const strategy = strategies[strategies.length - 1] ?? 'cold';
          return (await fleet.service.submit(vm.id, 'reboot', strategy)).job.id;
        }),
      ),
    );

    const now = Date.now();
    for (const doc of await sampleHosts(fleet.store, problems)) {
      const vmStates: Record<string, number> = {};
      for (const vm of Object.values(doc.vms)) vmStates[vm.state] = (vmStates[vm.state] ?? 0) + 1;
      outcome.hosts[doc.id] = {
        usage: settledUsage(doc, now),
        vmStates,
        openOps: Object.keys(doc.ops).length,
      };
    }

    // The workers stop cleanly once idle.
    for (const proc of processes) proc.child.kill('SIGTERM');
    for (const proc of processes) {
      assert.equal(await proc.exited(10_000), 0, proc.stderr() + proc.stdout());
    }
    return { outcome, problems, lockHolders: holders.size };
  } finally {
    for (const proc of processes) proc.killGroup();
    await fleet.close();
    await lockRedis.quit();
  }
}

/**
 * Two workers (8 slots each) with HOST_CONCURRENCY=1 and GLOBAL_CONCURRENCY=2, a reboot of every
 * VM at once: the most operations seen running at once, in all and on one host.
 */
async function runLimited(redisUrl: string): Promise<{
  maxRunning: number;
  maxActiveJobs: number;
  maxOnOneHost: number;
  states: string[];
  problems: string[];
}> {
  const prefix = 'limits';
  const env = {
    // Slow enough that operations are seen running between commits: an operation arrives when it
    // is submitted, and one whose job waited in the queue longer than its own virtual time would
    // be done in the first commit.
    TIME_SCALE: '200',
    WORKER_CONCURRENCY: '8',
    HOST_CONCURRENCY: '1',
    GLOBAL_CONCURRENCY: '2',
  };
  const fleet = connectFleet(redisUrl, prefix, 200);
  const processes: WorkerProcess[] = [];
  const problems: string[] = [];
  let maxRunning = 0;
  let maxActiveJobs = 0;
  let maxOnOneHost = 0;
  try {
    processes.push(
      await startWorker(redisUrl, prefix, env),
      await startWorker(redisUrl, prefix, env),
    );
    const boots: string[] = [];
    for (const host of HOSTS) {
      await fleet.service.createHost({
        id: host.id,
        memoryGiB: 64,
        hkids: 16,
        packages: 2,
        cpus: 64,
        kernel: host.kernel,
      });
      for (const [index, shape] of VM_SHAPES.entries()) {
        const { job } = await fleet.service.createVm({
          id: `vm-${host.id}-${index}`,
          hostId: host.id,
          vcpus: shape.vcpus,
          memoryBytes: shape.memoryGiB * GIB,
        });
        boots.push(job.id);
      }
    }
    const observe = async (): Promise<void> => {
      let running = 0;
      for (const doc of await sampleHosts(fleet.store, problems)) {
        const onHost = Object.values(doc.ops).filter((op) => op.state === 'running').length;
        maxOnOneHost = Math.max(maxOnOneHost, onHost);
        running += onHost;
      }
      maxRunning = Math.max(maxRunning, running);
      maxActiveJobs = Math.max(maxActiveJobs, await fleet.queues.operations.getActiveCount());
    };
    const booted = await waitForJobs(fleet, boots, {
      timeoutMs: 30_000,
      problems,
      pollMs: 5,
      onPoll: observe,
    });
    const reboots = await Promise.all(
      HOSTS.flatMap((host) =>
        VM_SHAPES.map(async (_, index) => {
          const vmId = `vm-${host.id}-${index}`;
          return (await fleet.service.submit(vmId, 'reboot', 'cold')).job.id;
        }),
      ),
    );
    const rebooted = await waitForJobs(fleet, reboots, {
      timeoutMs: 30_000,
      problems,
      pollMs: 5,
      onPoll: observe,
    });
    const states = [...booted.values(), ...rebooted.values()].map((op) => op.state);
    return { maxRunning, maxActiveJobs, maxOnOneHost, states, problems };
  } finally {
    for (const proc of processes) proc.killGroup();
    await fleet.close();
  }
}

/**
 * A host short of HKIDs and memory (3 HKIDs, 20 GiB for three 6 GiB VMs on mainline): each cold
 * reboot's new VM waits for what its own and the others' teardowns give back. Returns what must
 * match between runs, and how many steps had to wait.
 */
async function runUnderPressure(
  redisUrl: string,
  prefix: string,
  workers: number,
): Promise<{ outcome: unknown; waitedSteps: number; problems: string[] }> {
  const fleet = connectFleet(redisUrl, prefix);
  const processes: WorkerProcess[] = [];
  const problems: string[] = [];
  try {
    const env = { TIME_SCALE: '200', HOST_CONCURRENCY: '4', STEP_WAIT_TIMEOUT_MS: '20000' };
    for (let i = 0; i < workers; i += 1) {
      processes.push(await startWorker(redisUrl, prefix, env));
    }
    await fleet.service.createHost({
      id: 'h-tight',
      memoryGiB: 20,
      hkids: 3,
      packages: 2,
      cpus: 64,
      kernel: {
        ...MAINLINE_KERNEL,
        terminateVm: 'none',
        linkGuestMemfd: false,
        privatePageSize: '4K',
      },
    });
    const vmIds = ['vm-0', 'vm-1', 'vm-2'];
    const boots: string[] = [];
    for (const id of vmIds) {
      const { job } = await fleet.service.createVm({
        id,
        hostId: 'h-tight',
        vcpus: 2,
        memoryBytes: 6 * GIB,
      });
      boots.push(job.id);
    }
    await waitForJobs(fleet, boots, { timeoutMs: 30_000, problems });
    const reboots = await Promise.all(
      vmIds.map(async (id) => (await fleet.service.submit(id, 'reboot', 'cold')).job.id),
    );
    const done = await waitForJobs(fleet, reboots, { timeoutMs: 30_000, problems, pollMs: 5 });
    const doc = await fleet.store.requireHost('h-tight');
    const ops = reboots.map((id) => done.get(id));
    return {
      outcome: {
        jobs: ops.map((op) => op?.state),
        vms: Object.values(doc.vms)
          .sort((a, b) => a.id.localeCompare(b.id))
          .map((vm) => [vm.id, vm.state, vm.generation, vm.guestMemfds.length]),
        usage: settledUsage(doc, Number.MAX_SAFE_INTEGER),
      },
      waitedSteps: ops.reduce(
        (sum, op) => sum + (op?.steps.filter((s) => s.waitedMs > 0).length ?? 0),
        0,
      ),
      problems,
    };
  } finally {
    for (const proc of processes) proc.killGroup();
    await fleet.close();
  }
}

describe('worker processes on one Redis', () => {
  let redis: TestRedis;
  let reference: Outcome;
  before(async () => {
    redis = await startTestRedis();
  });
  after(async () => {
    await redis.stop();
  });

  it('one worker runs the scenario: every job succeeds, every document sound', async () => {
    const { outcome, problems } = await runScenario(redis.url, 'one-ts0', 1, 0);
    assert.deepEqual(problems, []);
    const failed = outcome.jobs.filter((j) => j.state !== 'succeeded');
    assert.deepEqual(failed, [], 'every job succeeds');
    assert.equal(outcome.jobs.length, HOSTS.length * VM_SHAPES.length * (REBOOT_ROUNDS + 2));
    for (const host of Object.values(outcome.hosts)) {
      assert.equal(host.openOps, 0);
      // The two terminated VMs have left the document (their last records are kept apart).
      assert.deepEqual(host.vmStates, { running: 2 });
      assert.equal(host.usage.memory.inFlightBytes, 0);
      assert.equal(host.usage.hkids.used, 2, 'one HKID per running VM');
    }
    // A reuse reboot keeps the guest_memfds; a cold one allocates new ones.
    const aug = outcome.vmHistory['vm-h-aug2025-0'];
    assert.ok(aug !== undefined);
    assert.deepEqual(
      aug.map((h) => h.generation),
      [1, 2, 3, 4, 4],
    );
    assert.deepEqual(
      aug.map((h) => h.keptGuestMemfds),
      [false, false, false, true, false],
      'rounds: boot, cold, terminate, reuse, then terminated',
    );
    for (const [vmId, history] of Object.entries(outcome.vmHistory)) {
      const last = history.at(-1)?.state;
      assert.equal(last, /-[01]$/.test(vmId) ? 'terminated' : 'running', vmId);
    }
    reference = outcome;
  });

  it('two workers keep HOST_CONCURRENCY and GLOBAL_CONCURRENCY between them', async () => {
    const run = await runLimited(redis.url);
    assert.deepEqual(run.problems, []);
    assert.ok(
      run.states.every((s) => s === 'succeeded'),
      run.states.join(', '),
    );
    assert.ok(run.maxOnOneHost <= 1, `at most 1 running per host, saw ${run.maxOnOneHost}`);
    // GLOBAL_CONCURRENCY bounds the jobs that drive hosts at once (a host's operations move
    // with whichever of its jobs a worker holds).
    assert.ok(run.maxActiveJobs <= 2, `at most 2 jobs active in all, saw ${run.maxActiveJobs}`);
    assert.ok(run.maxRunning >= 1, 'operations were seen running');
  });

  it('short of HKIDs and memory, steps wait, and two workers end as one does', async () => {
    const one = await runUnderPressure(redis.url, 'tight-one', 1);
    const two = await runUnderPressure(redis.url, 'tight-two', 2);
    assert.deepEqual(one.problems, []);
    assert.deepEqual(two.problems, []);
    assert.ok(one.waitedSteps > 0 && two.waitedSteps > 0, 'steps waited for HKIDs or memory');
    assert.deepEqual(two.outcome, one.outcome);
    assert.deepEqual((one.outcome as { jobs: string[] }).jobs, [
      'succeeded',
      'succeeded',
      'succeeded',
    ]);
  });

  it('two workers at TIME_SCALE=0 give the same outcome as one', async () => {
    assert.ok(reference !== undefined, 'needs the one-worker run');
    const { outcome, problems } = await runScenario(redis.url, 'two-ts0', 2, 0);
    assert.deepEqual(problems, []);
    assert.deepEqual(outcome, reference);
  });

  it('two workers at TIME_SCALE=2000 (steps interleave in real time) give the same outcome', async () => {
    assert.ok(reference !== undefined, 'needs the one-worker run');
    const run = await runScenario(redis.url, 'two-ts2000', 2, 2000);
    const { outcome, problems } = run;
    assert.deepEqual(problems, []);
    assert.equal(run.lockHolders, 2, 'both worker processes ran jobs');
    assert.deepEqual(outcome, reference);
  });
});
