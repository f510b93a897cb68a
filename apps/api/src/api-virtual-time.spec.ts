import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import {
  type OfflineHostSpec,
  type OfflineOperation,
  type OfflineOutput,
  type OfflineRequest,
  type Strategy,
  runFleet,
} from '#fleet';
import { FleetQueues, FleetService } from '#queue';
import { FleetStore } from '#store';
import { ALL_KERNELS, type HostState, createHost, makeHostConfig } from '#tdx-sim';
import {
  type PlanRun,
  type PlanSummary,
  type RebootStrategy,
  handlesAfter,
  planBoot,
  planFor,
  runPlan,
  runnableStrategies,
  shapeOfGiB,
  toMicros,
} from '#vmm';
import { Redis } from 'ioredis';
import { type TestApp } from '../../../test/support/http-app.js';
import { startTestRedis, type TestRedis } from '../../../test/support/redis.js';
import { hostViewSchema } from './host.dto.js';
import { jobEnvelopeSchema } from './job.dto.js';
import { ApiClient, type JobAnswer, startApiApp } from './testing/api-test-client.js';
import { vmAndJobSchema } from './vm.dto.js';

// The daemon's numbers are the simulation's: a reboot run by the workers reports what the pure
// runner (`sim reboot`) computes for the same host state, at any TIME_SCALE.

const KERNEL = { terminateVm: 'v4', linkGuestMemfd: true, privatePageSize: '4K' } as const;
const HOST = { memoryGiB: 512, hkids: 2, packages: 2, cpus: 128, kernel: KERNEL };
const SMALL = { vcpus: 1, memoryGiB: 0.25 };
const BIG = { vcpus: 32, memoryGiB: 107 };

/** `sim reboot` for the same host: a small VM holding the other HKID, then the big VM. */
function expectedReboot(strategy: RebootStrategy): PlanSummary {
  let host: HostState = createHost(makeHostConfig({ ...HOST, costModel: 'calibrated' }));
  const boot = (shape: ReturnType<typeof shapeOfGiB>): PlanRun => {
    const run = runPlan(host, planBoot(shape));
    assert.ok(run.ok);
    host = run.state;
    return run;
  };
  boot(shapeOfGiB(SMALL.vcpus, SMALL.memoryGiB));
  const shape = shapeOfGiB(BIG.vcpus, BIG.memoryGiB);
  const booted = boot(shape);
  const planned = planFor(
    { action: 'reboot', strategy },
    host.config.kernel,
    shape,
    handlesAfter(shape, booted.bindings),
  );
  assert.ok(planned.ok);
  const run = runPlan(host, planned.plan);
  assert.ok(run.ok);
  return run.summary;
}

for (const timeScale of ['0', '1000']) {
  describe(`reboots through the API at TIME_SCALE=${timeScale} report the simulation's numbers`, () => {
    let redis: TestRedis;
    let app: TestApp;
    let api: ApiClient;

    before(async () => {
      redis = await startTestRedis();
      app = await startApiApp({
        redisUrl: redis.url,
        keyPrefix: `virtual-time-${timeScale}`,
        workers: true,
        env: { TIME_SCALE: timeScale },
      });
      api = new ApiClient(app.baseUrl);
    });
    after(async () => {
      await app?.close();
      await redis?.stop();
    });

    for (const strategy of ['cold', 'terminate', 'reuse'] as const) {
      it(`${strategy}: at full HKID capacity, every figure as the pure runner's`, async () => {
        const hostId = `h-${strategy}`;
        await api.expect(api.post('/v1/hosts', { id: hostId, ...HOST }), 201, hostViewSchema);
        for (const [id, shape] of [
          [`small-${strategy}`, SMALL],
          [`big-${strategy}`, BIG],
        ] as const) {
          const created = await api.expect(
            api.post('/v1/vms', { id, hostId, ...shape }),
            202,
            vmAndJobSchema,
          );
          assert.equal((await api.waitForJob(created.job.id)).state, 'succeeded');
        }
        const { job } = await api.expect(
          api.post(`/v1/vms/big-${strategy}/reboot`, { strategy }),
          202,
          jobEnvelopeSchema,
        );
        const done = await api.waitForJob(job.id);
        assert.equal(done.state, 'succeeded', JSON.stringify(done.error));
        const expected = expectedReboot(strategy);
        assert.deepEqual(done.result, expected);
        if (strategy === 'cold') {
          // The new VM waited for the old VM's HKID: the wait is in the downtime.
          const initVm = done.steps.find((s) => s.name === 'init-vm');
          assert.equal(initVm?.errno, 'ENOSPC');
          assert.ok((initVm?.waitedSeconds ?? 0) > 500, `waited ${initVm?.waitedSeconds} s`);
          assert.ok(expected.downtimeSeconds > 600);
        }
      });
    }

    it('a storm on one host: each reboot counted once in the metrics, however jobs share commits', async () => {
      // A worker advances every operation of a host, whichever job it holds: several reboots may
      // end in one commit, and the jobs that find theirs finished must not count it again.
      const hostId = 'h-storm';
      await api.expect(
        api.post('/v1/hosts', { id: hostId, memoryGiB: 64, hkids: 16, kernel: KERNEL }),
        201,
        hostViewSchema,
      );
      const ids = ['s1', 's2', 's3', 's4', 's5', 's6'];
      for (const id of ids) {
        const created = await api.expect(
          api.post('/v1/vms', { id, hostId, vcpus: 2, memoryGiB: 2 }),
          202,
          vmAndJobSchema,
        );
        assert.equal((await api.waitForJob(created.job.id)).state, 'succeeded');
      }
      const counted = async (): Promise<number> => {
        const text = String((await api.get('/metrics')).body);
        const line = text
          .split('\n')
          .find((l) =>
            l.startsWith(
              'tdxfleet_operations_total{action="reboot",strategy="terminate",outcome="succeeded"}',
            ),
          );
        return Number(line?.split(' ')[1] ?? 0);
      };
      const before = await counted();
      const jobs = await Promise.all(
        ids.map(async (id) => {
          const { job } = await api.expect(
            api.post(`/v1/vms/${id}/reboot`, { strategy: 'terminate' }),
            202,
            jobEnvelopeSchema,
          );
          return job.id;
        }),
      );
      for (const jobId of jobs) assert.equal((await api.waitForJob(jobId)).state, 'succeeded');
      assert.equal((await counted()) - before, ids.length);
    });
  });
}

// Rows of the agreement table (libs/fleet/src/agreement.spec.ts) that make sense live: the
// daemon's workers, Redis and the API give, per operation, what the offline engine gives for the
// same scenario: exactly at TIME_SCALE=0, within 0.1% at 1000x.
//
// Operations of a row arrive together: they are submitted while no worker runs (the app that
// booted the VMs is closed first), through the API's own service with its clock held, so that
// at 1000x they arrive at one virtual time (over HTTP, each would arrive a virtual second later
// per real millisecond). Then an app with workers runs them, catching up in virtual order.

/** A kernel that runs `strategy` of a reboot, the first in declaration order. */
function kernelFor(strategy: RebootStrategy) {
  const kernel = ALL_KERNELS.find((k) => runnableStrategies('reboot', k).includes(strategy));
  assert.ok(kernel);
  return kernel;
}

interface LiveOp {
  vmId: string;
  action: 'reboot' | 'terminate';
  strategy: Strategy;
}

interface LiveRow {
  name: string;
  /** The time scales it runs at. */
  scales: readonly ('0' | '1000')[];
  host: Omit<OfflineHostSpec, 'id'>;
  vms: { id: string; vcpus: number; memoryGiB: number }[];
  ops: LiveOp[];
  /**
   * Cancel this VM's operation once it runs (over HTTP, at a wall-clock-dependent virtual time):
   * the offline engine cancels it `offlineAfterSeconds` after the operations arrived. The row is
   * built so that any moment in that window stops it at the same step boundary.
   */
  cancel?: { vmId: string; offlineAfterSeconds: number };
  check?: (offline: OfflineOutput) => void;
}

const BOOT_GAP = 10_000;

const LIVE_ROWS: LiveRow[] = [
  {
    name: 'memory for one VM: the cold reboot waits for the old memory (ENOMEM)',
    scales: ['0', '1000'],
    host: { memoryGiB: 4 + 1 / 32, hkids: 8, packages: 2, cpus: 16, kernel: kernelFor('cold') },
    vms: [{ id: 'a', vcpus: 4, memoryGiB: 4 }],
    ops: [{ vmId: 'a', action: 'reboot', strategy: 'cold' }],
    check: (offline) => {
      assert.ok(offlineOp(offline, 'a').waits.some((w) => w.errno === 'ENOMEM' && w.seconds > 0));
    },
  },
  {
    name: 'three reboots on one host queue for the HKID release lock',
    scales: ['0', '1000'],
    host: { memoryGiB: 64, hkids: 8, packages: 2, cpus: 16, kernel: kernelFor('terminate') },
    vms: [
      { id: 'a', vcpus: 2, memoryGiB: 2 },
      { id: 'b', vcpus: 2, memoryGiB: 0.25 },
      { id: 'c', vcpus: 2, memoryGiB: 2 },
    ],
    ops: [
      { vmId: 'a', action: 'reboot', strategy: 'terminate' },
      { vmId: 'b', action: 'reboot', strategy: 'cold' },
      { vmId: 'c', action: 'reboot', strategy: 'terminate' },
    ],
    check: (offline) => {
      assert.equal(offlineOp(offline, 'a').waitedSeconds, 0);
      for (const id of ['b', 'c']) {
        assert.ok(offlineOp(offline, id).waits.some((w) => w.errno === null && w.seconds > 0));
      }
    },
  },
  {
    // Closing the guest_memfds of a 400 GiB, 16-vCPU VM removes its pages from a live TD: about
    // 2500 virtual seconds, 2.5 s at 1000x. A cancel at any moment of it takes effect when it
    // ends, at the next step boundary. The other VM's reboot, arrived with it, ends long before.
    name: 'a cancel in the middle of a teardown',
    scales: ['1000'],
    host: { memoryGiB: 512, hkids: 8, packages: 2, cpus: 128, kernel: kernelFor('terminate') },
    vms: [
      { id: 'a', vcpus: 16, memoryGiB: 400 },
      { id: 'b', vcpus: 2, memoryGiB: 2 },
    ],
    ops: [
      { vmId: 'a', action: 'terminate', strategy: 'close' },
      { vmId: 'b', action: 'reboot', strategy: 'terminate' },
    ],
    cancel: { vmId: 'a', offlineAfterSeconds: 100 },
    check: (offline) => {
      const a = offlineOp(offline, 'a');
      assert.equal(a.state, 'cancelled');
      assert.ok((a.finishedAt ?? 0) - (a.startedAt ?? 0) > 2000);
      assert.ok((offlineOp(offline, 'b').finishedAt ?? Infinity) < (a.startedAt ?? 0) + 100);
    },
  },
];

function offlineOp(output: OfflineOutput, vmId: string): OfflineOperation {
  const op = output.operations.find((o) => o.vmId === vmId && o.action !== 'boot');
  assert.ok(op, `the operation of ${vmId}`);
  return op;
}

/** The row in the offline engine: boots a gap apart, then the operations together. */
function offlineRow(row: LiveRow, hostId: string): OfflineOutput {
  const opsAt = (row.vms.length + 1) * BOOT_GAP;
  const requests: OfflineRequest[] = [
    ...row.vms.map((vm, i): OfflineRequest => ({
      at: (i + 1) * BOOT_GAP,
      action: 'boot',
      vmId: vm.id,
    })),
    ...row.ops.map((op): OfflineRequest => ({ at: opsAt, ...op })),
  ];
  if (row.cancel !== undefined) {
    requests.push({
      at: opsAt + row.cancel.offlineAfterSeconds,
      action: 'cancel',
      vmId: row.cancel.vmId,
    });
  }
  return runFleet({
    hosts: [{ id: hostId, ...row.host }],
    vms: row.vms.map((vm) => ({ ...vm, hostId })),
    requests,
  });
}

/** Seconds as whole microseconds, summed: the order of the sum does not matter. */
function waitedMicros(seconds: readonly number[]): number {
  return seconds.reduce((sum, s) => sum + toMicros(s), 0);
}

/** Within 0.1% (or a microsecond). */
function near(actual: number, expected: number, what: string): void {
  assert.ok(
    Math.abs(actual - expected) <= Math.max(1e-6, 1e-3 * Math.abs(expected)),
    `${what}: ${actual} live, ${expected} offline`,
  );
}

/** Runs a row live; the finished jobs by VM. */
async function runLive(
  redisUrl: string,
  keyPrefix: string,
  timeScale: '0' | '1000',
  row: LiveRow,
  hostId: string,
): Promise<Map<string, JobAnswer>> {
  const appOptions = { redisUrl, keyPrefix, workers: true, env: { TIME_SCALE: timeScale } };
  const booting = await startApiApp(appOptions);
  try {
    const api = new ApiClient(booting.baseUrl);
    await api.expect(api.post('/v1/hosts', { id: hostId, ...row.host }), 201, hostViewSchema);
    // One after another, as the offline engine boots them: each alone on the host.
    for (const vm of row.vms) {
      const created = await api.expect(api.post('/v1/vms', { ...vm, hostId }), 202, vmAndJobSchema);
      assert.equal((await api.waitForJob(created.job.id)).state, 'succeeded');
    }
  } finally {
    await booting.close();
  }

  // No worker runs now: the operations arrive together, at the host's time of this instant.
  const storeRedis = new Redis(redisUrl);
  const queueRedis = new Redis(redisUrl, { maxRetriesPerRequest: null });
  const store = new FleetStore(storeRedis, keyPrefix);
  const queues = new FleetQueues(queueRedis, store.keys.queuePrefix);
  const heldNow = Date.now();
  const service = new FleetService(store, queues, {
    now: () => heldNow,
    newId: () => randomUUID(),
    timeScale: Number(timeScale),
  });
  const jobIds = new Map<string, string>();
  try {
    for (const op of row.ops) {
      const { job } = await service.submit(op.vmId, op.action, op.strategy);
      jobIds.set(op.vmId, job.id);
    }
  } finally {
    await queues.close();
    await Promise.all([storeRedis.quit(), queueRedis.quit()]);
  }

  const running = await startApiApp(appOptions);
  try {
    const api = new ApiClient(running.baseUrl);
    if (row.cancel !== undefined) {
      const jobId = jobIds.get(row.cancel.vmId) as string;
      await api.waitForJob(jobId, (job) => job.state === 'running');
      const answer = await api.delete(`/v1/jobs/${jobId}`);
      assert.equal(answer.status, 202, JSON.stringify(answer.body));
    }
    const done = new Map<string, JobAnswer>();
    for (const [vmId, jobId] of jobIds) done.set(vmId, await api.waitForJob(jobId));
    return done;
  } finally {
    await running.close();
  }
}

for (const timeScale of ['0', '1000'] as const) {
  describe(`agreement rows live at TIME_SCALE=${timeScale}: the offline engine's results`, () => {
    let redis: TestRedis;

    before(async () => {
      redis = await startTestRedis();
    });
    after(async () => {
      await redis?.stop();
    });

    for (const [index, row] of LIVE_ROWS.entries()) {
      if (!row.scales.includes(timeScale)) continue;
      it(row.name, async () => {
        const hostId = `agree-${index}`;
        const offline = offlineRow(row, hostId);
        row.check?.(offline);
        const live = await runLive(
          redis.url,
          `agreement-${timeScale}-${index}`,
          timeScale,
          row,
          hostId,
        );
        for (const op of row.ops) {
          const job = live.get(op.vmId);
          const expected = offlineOp(offline, op.vmId);
          assert.ok(job);
          assert.equal(job.state, expected.state, `${op.vmId}: ${JSON.stringify(job.error)}`);
          assert.equal(job.error?.code ?? null, expected.error?.code ?? null);
          const waited = waitedMicros(job.steps.map((s) => s.waitedSeconds));
          const expectedWaited = waitedMicros(expected.waits.map((w) => w.seconds));
          // Its start and end from its arrival, on its host's clock: the offline engine's.
          const arrived = expected.arrivedAt ?? 0;
          near(
            (job.virtualStartedAt ?? NaN) - job.virtualArrivedAt,
            (expected.startedAt ?? NaN) - arrived,
            `${op.vmId} start from arrival`,
          );
          near(
            (job.virtualFinishedAt ?? NaN) - job.virtualArrivedAt,
            (expected.finishedAt ?? NaN) - arrived,
            `${op.vmId} end from arrival`,
          );
          if (op.vmId === row.cancel?.vmId) {
            // Stopped at the same step boundary: the same steps, ending at the same time.
            const end = Math.max(...job.steps.map((s) => (s.virtualStart ?? 0) + s.virtualSeconds));
            near(end, (expected.finishedAt ?? 0) - (expected.startedAt ?? 0), `${op.vmId} end`);
            assert.ok(job.steps.some((s) => s.cleanup === true && s.state === 'done'));
            assert.equal(waited, expectedWaited);
            continue;
          }
          if (timeScale === '0') {
            assert.deepEqual(job.result, expected.result, op.vmId);
            assert.equal(waited, expectedWaited, `${op.vmId} waited`);
            continue;
          }
          const result = job.result;
          assert.ok(result && expected.result);
          for (const key of Object.keys(expected.result) as (keyof PlanSummary)[]) {
            near(result[key], expected.result[key], `${op.vmId} ${key}`);
          }
          near(waited, expectedWaited, `${op.vmId} waited (µs)`);
        }
      });
    }
  });
}
