// A worker process that dies (SIGKILL) or stops (SIGTERM) in the middle of a reboot: the job
// completes on another worker, every step applied exactly once, and the VM and its host end as a
// reboot without a crash leaves them.
import { MAINLINE_KERNEL } from '#tdx-sim';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import {
  type HostDocument,
  type HostSpec,
  type OperationRecord,
  type Strategy,
  advanceOperation,
  createHostDocument,
  createVm,
  submitOperation,
} from '#fleet';
import { runnableStrategies } from '#vmm';
import { Redis } from 'ioredis';
import {
  type FleetClient,
  type WorkerProcess,
  connectFleet,
  documentProblems,
  lockHolders,
  sampleHosts,
  settledUsage,
  startWorker,
  waitForJobs,
} from './support/fleet.js';
import { startTestRedis, type TestRedis } from './support/redis.js';

const GIB = 1024 ** 3;
const HOST: HostSpec = {
  id: 'h-crash',
  memoryGiB: 64,
  hkids: 16,
  packages: 2,
  cpus: 64,
  kernel: { ...MAINLINE_KERNEL, terminateVm: 'none', linkGuestMemfd: false, privatePageSize: '4K' },
};
const VM = { id: 'vm-big', vcpus: 4, memoryBytes: 18 * GIB };
/** An 18 GiB cold reboot costs about 71 virtual seconds: about 3.5 s of wall time at 20x. */
const TIME_SCALE = '20';
const SHUTDOWN_TIMEOUT_MS = 5000;

/** Runs an operation of a document to its end in pure virtual time (no Redis, no worker). */
function runToEnd(doc: HostDocument, opId: string): { doc: HostDocument; op: OperationRecord } {
  let current = doc;
  for (let i = 0; i < 10_000; i += 1) {
    const advance = advanceOperation(current, opId, {
      nowMs: 1,
      timeScale: 0,
      hostConcurrency: 4,
      maxWaitMs: 1000,
      pollMs: 50,
    });
    if (advance.kind === 'wait') throw new Error('reference run waits');
    current = advance.doc;
    if (advance.finished !== null) return { doc: current, op: advance.finished };
  }
  throw new Error('reference run does not end');
}

/** A cold reboot of the VM without any crash: what the daemon's run must match. */
function referenceReboot(): { doc: HostDocument; op: OperationRecord } {
  const created = createVm(createHostDocument(HOST, 0), {
    vmId: VM.id,
    opId: 'boot',
    vcpus: VM.vcpus,
    memoryBytes: VM.memoryBytes,
    nowMs: 0,
  });
  const booted = runToEnd(created.doc, 'boot');
  const submitted = submitOperation(booted.doc, {
    opId: 'reboot',
    vmId: VM.id,
    action: 'reboot',
    strategy: 'cold',
    nowMs: 1,
  });
  return runToEnd(submitted.doc, 'reboot');
}

/** What a finished reboot must have in common with the reference (no ids, no times). */
function comparable(doc: HostDocument, op: OperationRecord) {
  const vm = doc.vms[op.vmId];
  assert.ok(vm !== undefined);
  return {
    job: {
      state: op.state,
      steps: op.steps.map((s) => ({ name: s.name, state: s.state, virtual: s.virtualSeconds })),
      bytes: {
        reclaimed: op.result?.bytesReclaimed,
        freed: op.result?.bytesFreed,
        reused: op.result?.bytesReused,
        allocated: op.result?.bytesAllocated,
      },
    },
    vm: {
      state: vm.state,
      generation: vm.generation,
      activeJob: vm.activeJob,
      guestMemfds: vm.guestMemfds.map((g) => ({
        bytes: g.bytes,
        firstBootGeneration: g.firstBootGeneration,
      })),
    },
    usage: settledUsage(doc, Number.MAX_SAFE_INTEGER),
  };
}

function stepOf(op: OperationRecord, name: string): OperationRecord['steps'][number] {
  const step = op.steps.find((s) => s.name === name);
  assert.ok(step !== undefined, `the job has a step ${name}`);
  return step;
}

/** The steps of a job as `name:state(+ms left)`, for failure messages. */
function describeSteps(op: OperationRecord, nowMs: number): string {
  return op.steps
    .map((s) => {
      const left = s.endsAtMs === null ? '' : `(${Math.round(s.endsAtMs - nowMs)})`;
      return `${s.name}:${s.state}${left}`;
    })
    .join(' ');
}

function stepsDone(op: OperationRecord | null): number {
  return op === null ? 0 : op.steps.filter((s) => s.state === 'done').length;
}

/** Polls the job until `ready` says so; fails if the job ends first. */
/** A job as a crash left it, and the real time of its host's last commit before. */
interface JobSnapshot {
  op: OperationRecord;
  committedAtMs: number;
}

/** Reads the host first: a commit in between only makes the job newer than the time. */
async function snapshot(fleet: FleetClient, jobId: string): Promise<JobSnapshot> {
  const doc = await fleet.store.requireHost(HOST.id);
  const op = await fleet.store.getJob(jobId);
  assert.ok(op !== null);
  return { op, committedAtMs: doc.clockAtMs };
}

async function waitForJobPoint(
  fleet: FleetClient,
  jobId: string,
  what: string,
  ready: (op: OperationRecord) => boolean,
): Promise<OperationRecord> {
  const deadline = performance.now() + 20_000;
  while (performance.now() < deadline) {
    const op = await fleet.store.getJob(jobId);
    if (op !== null && op.finishedAtMs !== null) {
      throw new Error(`job ${jobId} ended (${op.state}) before ${what}`);
    }
    if (op !== null && ready(op)) return op;
    await sleep(10);
  }
  throw new Error(`job ${jobId} did not reach ${what} within 20 s`);
}

/** A small fleet for the storm: three kernels, four VMs each. */
const STORM_HOSTS: HostSpec[] = [
  { ...HOST, id: 'h-mainline' },
  {
    ...HOST,
    id: 'h-v4',
    kernel: { ...MAINLINE_KERNEL, terminateVm: 'v4', linkGuestMemfd: false, privatePageSize: '4K' },
  },
  {
    ...HOST,
    id: 'h-aug2025',
    kernel: {
      ...MAINLINE_KERNEL,
      terminateVm: 'aug2025',
      linkGuestMemfd: true,
      privatePageSize: '2M',
    },
  },
];
const STORM_VM_GIB = [2, 4, 6, 8];

function stormStrategy(host: HostSpec, index: number): Strategy {
  const allowed: Strategy[] = runnableStrategies('reboot', host.kernel);
  return allowed[index % allowed.length] ?? 'cold';
}

/** The storm's VMs and hosts after one reboot each, in pure virtual time. */
function stormReference(): Map<string, HostDocument> {
  const docs = new Map<string, HostDocument>();
  for (const host of STORM_HOSTS) {
    let doc = createHostDocument(host, 0);
    for (const [index, gib] of STORM_VM_GIB.entries()) {
      const vmId = `vm-${host.id}-${index}`;
      doc = createVm(doc, {
        vmId,
        opId: `boot-${vmId}`,
        vcpus: 2,
        memoryBytes: gib * GIB,
        nowMs: 0,
      }).doc;
      doc = runToEnd(doc, `boot-${vmId}`).doc;
    }
    for (const [index] of STORM_VM_GIB.entries()) {
      const vmId = `vm-${host.id}-${index}`;
      doc = submitOperation(doc, {
        opId: `reboot-${vmId}`,
        vmId,
        action: 'reboot',
        strategy: stormStrategy(host, index),
        nowMs: 1,
      }).doc;
      doc = runToEnd(doc, `reboot-${vmId}`).doc;
    }
    docs.set(host.id, doc);
  }
  return docs;
}

/** A host's VMs and usage, as much as must match between two runs of the same operations. */
function hostOutcome(doc: HostDocument) {
  return {
    vms: Object.values(doc.vms)
      .sort((a, b) => a.id.localeCompare(b.id))
      .map((vm) => ({
        id: vm.id,
        state: vm.state,
        generation: vm.generation,
        activeJob: vm.activeJob,
        guestMemfds: vm.guestMemfds.map((g) => ({
          bytes: g.bytes,
          firstBootGeneration: g.firstBootGeneration,
        })),
      })),
    ops: Object.keys(doc.ops).length,
    usage: settledUsage(doc, Number.MAX_SAFE_INTEGER),
  };
}

// The tests use prefixes and processes of their own and mostly wait on wall-clock time: they run
// side by side.
describe('a worker dies or stops in the middle of a reboot', { concurrency: true }, () => {
  let redis: TestRedis;
  const reference = referenceReboot();
  before(async () => {
    redis = await startTestRedis();
  });
  after(async () => {
    await redis.stop();
  });

  /** Sets up the host and a booted VM under `prefix` with a worker; submits a cold reboot. */
  async function bootAndSubmit(
    prefix: string,
    env: Record<string, string>,
  ): Promise<{ fleet: FleetClient; first: WorkerProcess; jobId: string }> {
    const fleet = connectFleet(redis.url, prefix, Number(env.TIME_SCALE ?? '1000'));
    const first = await startWorker(redis.url, prefix, env);
    await fleet.service.createHost(HOST);
    const { job: boot } = await fleet.service.createVm({ ...VM, hostId: HOST.id });
    const problems: string[] = [];
    const booted = await waitForJobs(fleet, [boot.id], { timeoutMs: 20_000, problems });
    assert.equal(booted.get(boot.id)?.state, 'succeeded');
    assert.deepEqual(problems, []);
    const { job } = await fleet.service.submit(VM.id, 'reboot', 'cold');
    return { fleet, first, jobId: job.id };
  }

  /**
   * Checks the finished job against the reference, and that each step a snapshot had committed
   * kept its start and end, each later one starting no earlier than the snapshot's last commit.
   * (Start times alone cannot show a step run twice: virtual time gives a rerun the same times.
   * The reference comparison and the sound documents show that.)
   */
  async function checkFinished(
    fleet: FleetClient,
    jobId: string,
    snapshots: JobSnapshot[],
  ): Promise<void> {
    const problems: string[] = [];
    const finished = (await waitForJobs(fleet, [jobId], { timeoutMs: 30_000, problems })).get(
      jobId,
    );
    assert.ok(finished !== undefined);
    const doc = await fleet.store.requireHost(HOST.id);
    assert.deepEqual(problems, [], 'documents sound while the job resumed');
    assert.deepEqual(documentProblems(doc), [], 'the host is sound at the end');
    assert.equal(finished.state, 'succeeded', JSON.stringify(finished.error));
    assert.equal(finished.steps.length, reference.op.steps.length, 'no cleanup steps added');
    assert.deepEqual(comparable(doc, finished), comparable(reference.doc, reference.op));
    for (const { op: before, committedAtMs } of snapshots) {
      finished.steps.forEach((step, i) => {
        const earlier = before.steps[i];
        assert.ok(earlier !== undefined);
        if (earlier.startedAtMs !== null) {
          assert.equal(step.startedAtMs, earlier.startedAtMs, `${step.name} kept its start`);
          assert.equal(step.endsAtMs, earlier.endsAtMs, `${step.name} kept its end`);
        } else {
          // The host's clock ran on while no worker held the job: a step due before the crash
          // starts at its due time, but never before the commit the snapshot saw.
          assert.ok(
            (step.startedAtMs ?? 0) >= committedAtMs - 1,
            `${step.name} started after the snapshot's last commit (${step.startedAtMs} < ${committedAtMs})`,
          );
        }
      });
    }
  }

  it('SIGKILL during a teardown step: another worker completes the job, each step once', async () => {
    const env = { TIME_SCALE, JOB_LOCK_MS: '2000' };
    const { fleet, first, jobId } = await bootAndSubmit('kill-once', env);
    let second: WorkerProcess | undefined;
    try {
      // close-guest-memfd is committed and its ~68 virtual seconds (3.4 s) are running.
      const before = await waitForJobPoint(fleet, jobId, 'close-guest-memfd', (op) => {
        return op.steps.some((s) => s.name === 'close-guest-memfd' && s.state === 'done');
      });
      first.killGroup();
      const killedAtMs = Date.now();
      assert.equal(await first.exited(5000), 'SIGKILL');
      const killed = await snapshot(fleet, jobId);
      const atKill = killed.op;
      assert.ok(atKill.state === 'running' && stepsDone(atKill) >= 4);
      assert.ok(stepsDone(atKill) < atKill.steps.length, 'killed in the middle');
      assert.ok(stepsDone(before) <= stepsDone(atKill));
      assert.ok(
        (stepOf(atKill, 'close-guest-memfd').endsAtMs ?? 0) > killedAtMs,
        'killed while the step was running',
      );

      second = await startWorker(redis.url, 'kill-once', env);
      await checkFinished(fleet, jobId, [killed]);
    } finally {
      first.killGroup();
      second?.killGroup();
      await fleet.close();
    }
  });

  it('SIGKILL twice (mid-teardown, then right after a second worker took the job over)', async () => {
    // At 4x the old guest_memfd's close runs ~17 s: long enough for a second worker to take
    // the job over (and die) while it runs, though the host's clock runs on while no worker
    // holds the job. A cold reboot boots the new VM meanwhile.
    const env = { TIME_SCALE: '4', JOB_LOCK_MS: '1000' };
    const { fleet, first, jobId } = await bootAndSubmit('kill-twice', env);
    const workers: WorkerProcess[] = [first];
    const locks = new Redis(redis.url);
    const holder = async (): Promise<string | undefined> =>
      (await lockHolders(locks, fleet.queues, [jobId]))[0];
    try {
      await waitForJobPoint(fleet, jobId, 'the new VM running', (op) => {
        return op.steps.some((s) => s.name === 'run' && s.state === 'done');
      });
      const firstHolder = await holder();
      assert.ok(firstHolder !== undefined, 'the first worker holds the job');
      first.killGroup();
      const firstKillAtMs = Date.now();
      assert.equal(await first.exited(5000), 'SIGKILL');
      const firstKilled = await snapshot(fleet, jobId);
      const atFirstKill = firstKilled.op;
      assert.ok(
        (stepOf(atFirstKill, 'close-guest-memfd').endsAtMs ?? 0) > firstKillAtMs,
        `killed mid-teardown: ${describeSteps(atFirstKill, firstKillAtMs)}`,
      );

      const second = await startWorker(redis.url, 'kill-twice', env);
      workers.push(second);
      const deadline = performance.now() + 15_000;
      let secondHolder = await holder();
      while (secondHolder === undefined || secondHolder === firstHolder) {
        assert.ok(performance.now() < deadline, 'the second worker took the job over');
        await sleep(10);
        secondHolder = await holder();
      }
      second.killGroup();
      assert.equal(await second.exited(5000), 'SIGKILL');
      const secondKilled = await snapshot(fleet, jobId);
      assert.ok(
        secondKilled.op.finishedAtMs === null,
        'the job was not finished when its second worker died',
      );

      workers.push(await startWorker(redis.url, 'kill-twice', env));
      await checkFinished(fleet, jobId, [firstKilled, secondKilled]);
    } finally {
      for (const worker of workers) worker.killGroup();
      await locks.quit();
      await fleet.close();
    }
  });

  it('SIGTERM: the worker exits 0 in time and hands the job back; another completes it', async () => {
    // The default job lock (30 s): the job must come back by the hand-back, not as a stalled job.
    const env = { TIME_SCALE, SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS) };
    const { fleet, first, jobId } = await bootAndSubmit('sigterm', env);
    let second: WorkerProcess | undefined;
    try {
      await waitForJobPoint(fleet, jobId, 'close-guest-memfd', (op) => {
        return op.steps.some((s) => s.name === 'close-guest-memfd' && s.state === 'done');
      });
      const stoppedAtMs = Date.now();
      first.child.kill('SIGTERM');
      assert.equal(await first.exited(SHUTDOWN_TIMEOUT_MS + 2000), 0, first.stderr());
      assert.ok(Date.now() - stoppedAtMs < SHUTDOWN_TIMEOUT_MS, 'within SHUTDOWN_TIMEOUT_MS');
      const stopped = await snapshot(fleet, jobId);
      assert.ok(stopped.op.state === 'running', 'the operation is not finished');
      const queued = await fleet.queues.operations.getJob(jobId);
      assert.ok(queued !== undefined);
      const state = await queued.getState();
      assert.ok(
        state === 'delayed' || state === 'waiting',
        `the job is handed back to the queue (it is ${state})`,
      );

      const resumedAtMs = Date.now();
      second = await startWorker(redis.url, 'sigterm', env);
      await checkFinished(fleet, jobId, [stopped]);
      const done = await fleet.store.getJob(jobId);
      assert.ok(
        done !== null && (done.finishedAtMs ?? 0) - resumedAtMs < 15_000,
        'resumed at once, not after the job lock expired',
      );
    } finally {
      first.killGroup();
      second?.killGroup();
      await fleet.close();
    }
  });

  it('a paused worker (SIGSTOP) loses its job to another; resumed, it changes nothing', async () => {
    const env = {
      TIME_SCALE,
      JOB_LOCK_MS: '1000',
      SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS),
    };
    const { fleet, first, jobId } = await bootAndSubmit('sigstop', env);
    let second: WorkerProcess | undefined;
    const pid = first.child.pid;
    assert.ok(pid !== undefined);
    try {
      await waitForJobPoint(fleet, jobId, 'close-guest-memfd', (op) => {
        return op.steps.some((s) => s.name === 'close-guest-memfd' && s.state === 'done');
      });
      process.kill(pid, 'SIGSTOP');
      const paused = await snapshot(fleet, jobId);
      assert.ok(paused.op.finishedAtMs === null);
      second = await startWorker(redis.url, 'sigstop', env);
      await checkFinished(fleet, jobId, [paused]);
      const doc = await fleet.store.requireHost(HOST.id);
      const finished = await fleet.store.getJob(jobId);

      process.kill(pid, 'SIGCONT');
      await sleep(2500);
      const later = await fleet.store.requireHost(HOST.id);
      assert.equal(later.version, doc.version, 'the resumed worker committed nothing');
      assert.deepEqual(await fleet.store.getJob(jobId), finished);
      first.child.kill('SIGTERM');
      assert.equal(await first.exited(SHUTDOWN_TIMEOUT_MS + 2000), 0, first.stderr());
    } finally {
      try {
        process.kill(pid, 'SIGCONT');
      } catch {
        // gone
      }
      first.killGroup();
      second?.killGroup();
      await fleet.close();
    }
  });

  it('an operation committed without its job (the API died in between) runs once a worker starts', async () => {
    const prefix = 'lost-job';
    const fleet = connectFleet(redis.url, prefix);
    let worker: WorkerProcess | undefined;
    try {
      const booted = runToEnd(
        createVm(createHostDocument(HOST, Date.now()), {
          vmId: VM.id,
          opId: 'boot',
          vcpus: VM.vcpus,
          memoryBytes: VM.memoryBytes,
          nowMs: Date.now(),
        }).doc,
        'boot',
      ).doc;
      await fleet.store.createHost(booted);
      await fleet.store.indexVm(VM.id, HOST.id);
      // What FleetService.submit does, up to the commit: the job is never added.
      await fleet.store.indexJob('lost', HOST.id);
      await fleet.store.update(HOST.id, (doc) => ({
        doc: submitOperation(doc, {
          opId: 'lost',
          vmId: VM.id,
          action: 'reboot',
          strategy: 'cold',
          nowMs: Date.now(),
        }).doc,
        value: null,
      }));
      assert.equal(await fleet.queues.operations.getJob('lost'), undefined);
      worker = await startWorker(redis.url, prefix, { TIME_SCALE: '0' });
      const problems: string[] = [];
      const done = await waitForJobs(fleet, ['lost'], { timeoutMs: 10_000, problems });
      assert.deepEqual(problems, []);
      const op = done.get('lost');
      assert.ok(op !== undefined);
      const doc = await fleet.store.requireHost(HOST.id);
      assert.deepEqual(comparable(doc, op), comparable(reference.doc, reference.op));
    } finally {
      worker?.killGroup();
      await fleet.close();
    }
  });

  it('a reboot storm with the worker SIGKILLed three times: every job done once, state as without', async () => {
    const prefix = 'storm';
    // The VMs boot at once (TIME_SCALE=0); the reboots run at 3x, where an 8 GiB cold reboot on
    // mainline takes ~12 s: the three kills land mid-operation even on a loaded machine, where
    // noticing progress and restarting a worker take a while (a host's clock runs on while no
    // worker holds its jobs, and the next worker catches up).
    const env = { TIME_SCALE: '3', JOB_LOCK_MS: '1000', HOST_CONCURRENCY: '2' };
    const fleet = connectFleet(redis.url, prefix, 3);
    const problems: string[] = [];
    let worker = await startWorker(redis.url, prefix, { ...env, TIME_SCALE: '0' });
    const started: WorkerProcess[] = [worker];
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        await sampleHosts(fleet.store, problems);
        await sleep(5);
      }
    })();
    try {
      const boots: string[] = [];
      for (const host of STORM_HOSTS) {
        await fleet.service.createHost(host);
        for (const [index, gib] of STORM_VM_GIB.entries()) {
          const { job } = await fleet.service.createVm({
            id: `vm-${host.id}-${index}`,
            hostId: host.id,
            vcpus: 2,
            memoryBytes: gib * GIB,
          });
          boots.push(job.id);
        }
      }
      await waitForJobs(fleet, boots, { timeoutMs: 20_000, problems });
      worker.killGroup();
      await worker.exited(5000);
      worker = await startWorker(redis.url, prefix, env);
      started.push(worker);
      const reboots = await Promise.all(
        STORM_HOSTS.flatMap((host) =>
          STORM_VM_GIB.map(async (_, index) => {
            const vmId = `vm-${host.id}-${index}`;
            const { job } = await fleet.service.submit(vmId, 'reboot', stormStrategy(host, index));
            return job.id;
          }),
        ),
      );
      // Three times: once the current worker has made progress, let it run a little, then
      // SIGKILL it and start another.
      const progress = async (): Promise<{ steps: number; open: number }> => {
        const ops = await Promise.all(reboots.map((id) => fleet.store.getJob(id)));
        return {
          steps: ops.reduce((sum, op) => sum + stepsDone(op), 0),
          open: ops.filter((op) => op !== null && op.finishedAtMs === null).length,
        };
      };
      let kills = 0;
      let killedMidOperation = 0;
      let before = (await progress()).steps;
      for (const delayMs of [40, 120, 80]) {
        const deadline = performance.now() + 10_000;
        let now = await progress();
        while (now.open > 0 && now.steps === before && performance.now() < deadline) {
          await sleep(5);
          now = await progress();
        }
        if (now.open === 0) break;
        await sleep(delayMs);
        worker.killGroup();
        await worker.exited(5000);
        kills += 1;
        const atKill = await progress();
        if (atKill.open > 0) killedMidOperation += 1;
        before = atKill.steps;
        worker = await startWorker(redis.url, prefix, env);
        started.push(worker);
      }
      const finished = await waitForJobs(fleet, reboots, { timeoutMs: 30_000, problems });
      assert.equal(kills, 3, 'the worker was killed three times');
      assert.equal(killedMidOperation, 3, 'each kill left operations unfinished');
      for (const op of finished.values()) {
        assert.equal(op.state, 'succeeded', `${op.vmId}: ${JSON.stringify(op.error)}`);
        assert.ok(
          op.steps.every((s) => s.state === 'done' && s.cleanup !== true),
          `${op.vmId}: every step done once, no cleanup`,
        );
      }
      sampling = false;
      await sampler;
      assert.deepEqual(problems, [], 'every document sound throughout');
      const reference = stormReference();
      for (const doc of await fleet.store.listHosts()) {
        const expected = reference.get(doc.id);
        assert.ok(expected !== undefined);
        assert.deepEqual(hostOutcome(doc), hostOutcome(expected), `host ${doc.id}`);
      }
    } finally {
      sampling = false;
      await sampler;
      for (const proc of started) proc.killGroup();
      await fleet.close();
    }
  });
});
