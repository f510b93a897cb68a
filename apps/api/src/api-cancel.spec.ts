import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { FleetQueues } from '#queue';
import { type TestApp } from '../../../test/support/http-app.js';
import { startTestRedis, type TestRedis } from '../../../test/support/redis.js';
import { hostViewSchema } from './host.dto.js';
import { jobEnvelopeSchema } from './job.dto.js';
import { ApiClient, assertError, startApiApp } from './testing/api-test-client.js';
import { vmAndJobSchema, vmViewSchema } from './vm.dto.js';

const GIB = 1024 ** 3;

describe('cancellation and busy VMs', () => {
  let redis: TestRedis;
  before(async () => {
    redis = await startTestRedis();
  });
  after(async () => {
    await redis?.stop();
  });

  describe('API only: jobs stay queued without a worker', () => {
    let app: TestApp;
    let api: ApiClient;
    before(async () => {
      app = await startApiApp({ redisUrl: redis.url, keyPrefix: 'api-queued', workers: false });
      api = new ApiClient(app.baseUrl);
      await api.expect(api.post('/v1/hosts', { id: 'h', memoryGiB: 32 }), 201, hostViewSchema);
    });
    after(async () => {
      await app?.close();
    });

    it('answers 409 vm_busy with the queued job for a second operation', async () => {
      const { job } = await api.expect(
        api.post('/v1/vms', { id: 'vm-busy', hostId: 'h', vcpus: 2, memoryGiB: 4 }),
        202,
        vmAndJobSchema,
      );
      await sleep(200);
      assert.equal((await api.waitForJob(job.id, () => true)).state, 'queued');
      for (const [path, strategy] of [
        ['reboot', 'cold'],
        ['terminate', 'close'],
      ] as const) {
        const busy = assertError(
          await api.post(`/v1/vms/vm-busy/${path}`, { strategy }),
          409,
          'vm_busy',
        );
        assert.equal(busy.details?.['jobId'], job.id);
        assert.equal(busy.details?.['vmId'], 'vm-busy');
      }
    });

    it('cancels a queued boot at once: the VM is stopped, the queue job removed', async () => {
      const queues = app.app.get(FleetQueues);
      const { vm, job } = await api.expect(
        api.post('/v1/vms', { id: 'vm-q', hostId: 'h', vcpus: 2, memoryGiB: 4 }),
        202,
        vmAndJobSchema,
      );
      assert.equal(vm.state, 'booting');
      assert.notEqual(await queues.operations.getJob(job.id), undefined);
      // Queued: it has arrived on its host's clock, and neither started nor ended.
      assert.equal(typeof job.virtualArrivedAt, 'number');
      assert.equal(job.virtualStartedAt, null);
      assert.equal(job.virtualFinishedAt, null);
      const queued = await api.expect(api.get('/v1/hosts/h'), 200, hostViewSchema);
      assert.equal(queued.queuedJobs, queued.activeJobs);
      assert.equal(queued.runningJobs, 0);

      const cancelled = await api.expect(api.delete(`/v1/jobs/${job.id}`), 202, jobEnvelopeSchema);
      assert.equal(cancelled.job.state, 'cancelled');
      assert.equal(cancelled.job.error?.code, 'cancelled');
      assert.ok(cancelled.job.steps.every((s) => s.state === 'skipped'));
      // It spent no virtual time on its host.
      assert.equal(cancelled.job.virtualStartedAt, null);
      assert.equal(cancelled.job.virtualFinishedAt, null);
      assert.equal((await api.waitForJob(job.id, () => true)).state, 'cancelled');
      assert.equal(await queues.operations.getJob(job.id), undefined);

      const stopped = await api.expect(api.get('/v1/vms/vm-q'), 200, vmViewSchema);
      assert.equal(stopped.state, 'stopped');
      assert.equal(stopped.activeJob, null);
      assertError(await api.delete(`/v1/jobs/${job.id}`), 409, 'job_finished');

      // A reboot of the stopped VM is queued and can be cancelled too; the VM stays stopped.
      const reboot = await api.expect(
        api.post('/v1/vms/vm-q/reboot', { strategy: 'cold' }),
        202,
        jobEnvelopeSchema,
      );
      assert.equal(
        (await api.expect(api.get('/v1/vms/vm-q'), 200, vmViewSchema)).state,
        'rebooting',
      );
      await api.expect(api.delete(`/v1/jobs/${reboot.job.id}`), 202, jobEnvelopeSchema);
      assert.equal((await api.expect(api.get('/v1/vms/vm-q'), 200, vmViewSchema)).state, 'stopped');

      const host = await api.expect(api.get('/v1/hosts/h'), 200, hostViewSchema);
      assert.equal(host.usage.hkids.used, 0);
      assert.equal(host.usage.memory.freeBytes, 32 * GIB);

      // No worker ever saw them: the process whose API ended them counts them.
      const metrics = await api.get('/metrics');
      assert.equal(metrics.status, 200);
      const text = String(metrics.body);
      for (const [action, strategy] of [
        ['boot', 'none'],
        ['reboot', 'cold'],
      ]) {
        const line = `tdxfleet_operations_total{action="${action}",strategy="${strategy}",outcome="cancelled"} 1`;
        assert.ok(text.split('\n').includes(line), `${line} in /metrics`);
      }
    });
  });

  describe('with workers at TIME_SCALE=20: a job observably running', () => {
    let app: TestApp;
    let api: ApiClient;
    before(async () => {
      app = await startApiApp({
        redisUrl: redis.url,
        keyPrefix: 'api-running',
        workers: true,
        env: { TIME_SCALE: '20' },
      });
      api = new ApiClient(app.baseUrl);
      await api.expect(api.post('/v1/hosts', { id: 'h', memoryGiB: 64 }), 201, hostViewSchema);
    });
    after(async () => {
      await app?.close();
    });

    it('cancels a running cold reboot: it ends cancelled, the VM stopped, the memory free', async () => {
      // An 8 GiB boot runs about 5 simulated seconds (0.25 s here); the cold reboot's reclaim
      // about 30 (1.5 s here): long enough to watch it run and cancel it.
      const created = await api.expect(
        api.post('/v1/vms', { id: 'vm-r', hostId: 'h', vcpus: 4, memoryGiB: 8 }),
        202,
        vmAndJobSchema,
      );
      assert.equal((await api.waitForJob(created.job.id)).state, 'succeeded');

      const { job } = await api.expect(
        api.post('/v1/vms/vm-r/reboot', { strategy: 'cold' }),
        202,
        jobEnvelopeSchema,
      );
      const running = await api.waitForJob(
        job.id,
        (j) =>
          j.state === 'running' &&
          j.steps.some((s) => s.name === 'close-guest-memfd' && s.state === 'running'),
      );
      assert.ok(running.startedAt !== null);
      assert.equal(running.finishedAt, null);
      assert.ok(running.progress.fraction > 0 && running.progress.fraction < 1);
      const rebooting = await api.expect(api.get('/v1/vms/vm-r'), 200, vmViewSchema);
      assert.equal(rebooting.state, 'rebooting');
      assert.equal(rebooting.activeJob, job.id);
      const busy = assertError(
        await api.post('/v1/vms/vm-r/terminate', { strategy: 'close' }),
        409,
        'vm_busy',
      );
      assert.equal(busy.details?.['jobId'], job.id);

      const asked = await api.expect(api.delete(`/v1/jobs/${job.id}`), 202, jobEnvelopeSchema);
      assert.equal(asked.job.cancelRequested, true);
      assert.equal(asked.job.state, 'running');

      const ended = await api.waitForJob(job.id);
      assert.equal(ended.state, 'cancelled');
      assert.equal(ended.error?.code, 'cancelled');
      assert.equal(ended.result, undefined);
      const stopped = await api.expect(api.get('/v1/vms/vm-r'), 200, vmViewSchema);
      assert.equal(stopped.state, 'stopped');
      assert.equal(stopped.activeJob, null);
      assert.equal(stopped.hkid, null);
      assertError(await api.delete(`/v1/jobs/${job.id}`), 409, 'job_finished');

      // What the steps freed comes back when their simulated time has passed.
      const deadline = performance.now() + 10_000;
      for (;;) {
        const host = await api.expect(api.get('/v1/hosts/h'), 200, hostViewSchema);
        const { memory, hkids } = host.usage;
        if (memory.freeBytes === 64 * GIB) {
          assert.deepEqual(hkids, { used: 0, total: 63, zombies: 0, leaked: 0 });
          assert.equal(memory.privateBytes + memory.retainedBytes + memory.orphanedBytes, 0);
          assert.equal(host.activeJobs, 0);
          break;
        }
        assert.ok(performance.now() < deadline, `memory not back: ${JSON.stringify(memory)}`);
        await sleep(50);
      }
    });
  });
});
