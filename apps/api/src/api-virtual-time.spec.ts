import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { type HostState, createHost, makeHostConfig } from '#tdx-sim';
import {
  type PlanRun,
  type PlanSummary,
  type RebootStrategy,
  handlesAfter,
  planBoot,
  planFor,
  runPlan,
  shapeOfGiB,
} from '#vmm';
import { type TestApp } from '../../../test/support/http-app.js';
import { startTestRedis, type TestRedis } from '../../../test/support/redis.js';
import { hostViewSchema } from './host.dto.js';
import { jobEnvelopeSchema } from './job.dto.js';
import { ApiClient, startApiApp } from './testing/api-test-client.js';
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
  });
}
