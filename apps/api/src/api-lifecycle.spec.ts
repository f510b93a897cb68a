import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { type HostView, type VmView } from '#fleet';
import { type TestApp } from '../../../test/support/http-app.js';
import { startTestRedis, type TestRedis } from '../../../test/support/redis.js';
import { batchViewSchema } from './batch.dto.js';
import { hostListSchema, hostViewSchema } from './host.dto.js';
import { daemonInfoSchema } from './info.dto.js';
import { jobEnvelopeSchema, jobViewSchema } from './job.dto.js';
import { ApiClient, assertError, startApiApp } from './testing/api-test-client.js';
import { vmAndJobSchema, vmListSchema, vmViewSchema } from './vm.dto.js';

import { MAINLINE_KERNEL } from '#tdx-sim';

const GIB = 1024 ** 3;

const KERNELS = {
  mainline: {
    ...MAINLINE_KERNEL,
    terminateVm: 'none',
    linkGuestMemfd: false,
    privatePageSize: '4K',
  },
  v4: { ...MAINLINE_KERNEL, terminateVm: 'v4', linkGuestMemfd: false, privatePageSize: '4K' },
  reuse: {
    ...MAINLINE_KERNEL,
    terminateVm: 'aug2025',
    linkGuestMemfd: true,
    privatePageSize: '4K',
  },
} as const;

describe('API end to end (API and workers in one process, TIME_SCALE=0)', () => {
  let redis: TestRedis;
  let app: TestApp;
  let api: ApiClient;

  before(async () => {
    redis = await startTestRedis();
    app = await startApiApp({
      redisUrl: redis.url,
      keyPrefix: 'api-lifecycle',
      workers: true,
      env: { TIME_SCALE: '0' },
    });
    api = new ApiClient(app.baseUrl);
  });
  after(async () => {
    await app?.close();
    await redis?.stop();
  });

  const host = (id: string): Promise<HostView> =>
    api.expect(api.get(`/v1/hosts/${id}`), 200, hostViewSchema);
  const vm = (id: string): Promise<VmView> =>
    api.expect(api.get(`/v1/vms/${id}`), 200, vmViewSchema);

  /** Creates a VM and waits for it to run. */
  async function bootVm(id: string, hostId: string, memoryGiB = 8): Promise<VmView> {
    const created = await api.expect(
      api.post('/v1/vms', { id, hostId, vcpus: 4, memoryGiB }),
      202,
      vmAndJobSchema,
    );
    assert.equal(created.vm.state, 'booting');
    assert.equal(created.job.action, 'boot');
    const job = await api.waitForJob(created.job.id);
    assert.equal(job.state, 'succeeded', JSON.stringify(job.error));
    return vm(id);
  }

  async function reboot(vmId: string, strategy: string) {
    const { job } = await api.expect(
      api.post(`/v1/vms/${vmId}/reboot`, { strategy }),
      202,
      jobEnvelopeSchema,
    );
    assert.equal(job.action, 'reboot');
    assert.equal(job.strategy, strategy);
    return api.waitForJob(job.id);
  }

  it('creates hosts with different kernels and lists them', async () => {
    for (const [name, kernel] of Object.entries(KERNELS)) {
      const created = await api.expect(
        api.post('/v1/hosts', { id: `host-${name}`, memoryGiB: 64, hkids: 8, kernel }),
        201,
        hostViewSchema,
      );
      assert.deepEqual(created.kernel, kernel);
      assert.equal(created.capacity.memoryBytes, 64 * GIB);
      assert.equal(created.capacity.hkids, 8);
      assert.equal(created.capacity.packages, 2);
      assert.equal(created.capacity.cpus, 128);
      assert.deepEqual(created.usage.hkids, { used: 0, total: 8, zombies: 0, leaked: 0 });
      assert.equal(created.usage.memory.freeBytes, 64 * GIB);
    }
    const defaults = await api.expect(
      api.post('/v1/hosts', { memoryGiB: 0.5 }),
      201,
      hostViewSchema,
    );
    assert.match(defaults.id, /^host-/);
    assert.deepEqual(defaults.kernel, KERNELS.mainline);
    assert.equal(defaults.capacity.memoryBytes, GIB / 2);

    const { hosts } = await api.expect(api.get('/v1/hosts'), 200, hostListSchema);
    assert.deepEqual(
      hosts.map((h) => h.id).sort(),
      [defaults.id, 'host-mainline', 'host-reuse', 'host-v4'].sort(),
    );
    assert.equal((await host('host-v4')).kernel.terminateVm, 'v4');
    assertError(
      await api.post('/v1/hosts', { id: 'host-v4', memoryGiB: 8 }),
      409,
      'already_exists',
    );
  });

  it('boots VMs to running and accounts their memory and HKIDs on the host', async () => {
    const booted = await bootVm('vm-main', 'host-mainline');
    assert.equal(booted.state, 'running');
    assert.equal(booted.generation, 1);
    assert.equal(booted.hostId, 'host-mainline');
    assert.equal(booted.memoryBytes, 8 * GIB);
    assert.equal(typeof booted.hkid, 'number');
    assert.equal(booted.activeJob, null);
    assert.equal(booted.guestMemfds.length, 1);
    assert.equal(booted.guestMemfds[0]?.firstBootGeneration, 1);
    assert.equal(booted.guestMemfds[0]?.allocatedBytes, 8 * GIB);
    assert.ok(booted.memslots.length > 0);

    const usage = (await host('host-mainline')).usage;
    assert.deepEqual(usage.hkids, { used: 1, total: 8, zombies: 0, leaked: 0 });
    assert.equal(usage.memory.privateBytes, 8 * GIB);
    assert.ok(usage.memory.controlBytes > 0);
    assert.equal(
      usage.memory.freeBytes + usage.memory.privateBytes + usage.memory.controlBytes,
      64 * GIB,
    );

    await bootVm('vm-v4', 'host-v4');
    await bootVm('vm-reuse', 'host-reuse');
    await bootVm('vm-reuse-2', 'host-reuse', 0.25);
    const { vms } = await api.expect(api.get('/v1/vms?hostId=host-reuse'), 200, vmListSchema);
    assert.deepEqual(
      vms.map((v) => v.id),
      ['vm-reuse', 'vm-reuse-2'],
    );
    const running = await api.expect(api.get('/v1/vms?state=running'), 200, vmListSchema);
    assert.equal(running.vms.length, 4);
    const stopped = await api.expect(api.get('/v1/vms?state=stopped'), 200, vmListSchema);
    assert.equal(stopped.vms.length, 0);
  });

  it('places a VM without hostId on a host that has room', async () => {
    const created = await api.expect(
      api.post('/v1/vms', { vcpus: 2, memoryGiB: 1 }),
      202,
      vmAndJobSchema,
    );
    assert.match(created.vm.id, /^vm-/);
    assert.ok(created.vm.hostId.length > 0);
    assert.equal((await api.waitForJob(created.job.id)).state, 'succeeded');
    await api.waitForJob(
      (
        await api.expect(
          api.post(`/v1/vms/${created.vm.id}/terminate`, { strategy: 'close' }),
          202,
          jobEnvelopeSchema,
        )
      ).job.id,
    );
  });

  it('reboots cold: new generation, new guest_memfds, memory and HKIDs as before', async () => {
    const before = await vm('vm-main');
    const job = await reboot('vm-main', 'cold');
    assert.equal(job.state, 'succeeded', JSON.stringify(job.error));
    const names = job.steps.map((s) => s.name);
    assert.ok(names.includes('close-guest-memfd'));
    assert.ok(names.includes('create-guest-memfd'));
    assert.ok(!names.includes('terminate-vm'));
    assert.ok(job.steps.every((s) => s.state === 'done'));
    assert.deepEqual(job.progress, {
      stepsDone: job.steps.length,
      stepsTotal: job.steps.length,
      fraction: 1,
    });
    assert.ok(job.result !== undefined);
    // Its times on its host's clock: it started on arrival (the host was idle) and ran its total.
    assert.equal(job.virtualStartedAt, job.virtualArrivedAt);
    assert.ok(job.virtualStartedAt !== null && job.virtualFinishedAt !== null);
    assert.ok(
      Math.abs(job.virtualFinishedAt - job.virtualStartedAt - job.result.totalSeconds) < 1e-6,
      `${job.virtualStartedAt} to ${job.virtualFinishedAt}: ${job.result.totalSeconds} s`,
    );
    assert.ok(job.result.reclaimSeconds > 0);
    assert.ok(job.result.downtimeSeconds > 0);
    assert.equal(job.result.bytesReused, 0);
    assert.equal(job.result.bytesAllocated, 8 * GIB);
    assert.ok(job.result.bytesReclaimed >= 8 * GIB);

    const afterwards = await vm('vm-main');
    assert.equal(afterwards.state, 'running');
    assert.equal(afterwards.generation, before.generation + 1);
    assert.equal(afterwards.activeJob, null);
    assert.notDeepEqual(
      afterwards.guestMemfds.map((g) => g.id),
      before.guestMemfds.map((g) => g.id),
    );
    assert.ok(afterwards.guestMemfds.every((g) => g.firstBootGeneration === 2));

    const idle = await host('host-mainline');
    assert.deepEqual([idle.activeJobs, idle.runningJobs, idle.queuedJobs], [0, 0, 0]);
    const usage = idle.usage;
    assert.deepEqual(usage.hkids, { used: 1, total: 8, zombies: 0, leaked: 0 });
    assert.equal(usage.memory.privateBytes, 8 * GIB);
    assert.equal(usage.memory.retainedBytes, 0);
    assert.equal(usage.memory.orphanedBytes, 0);
    assert.equal(usage.memory.inFlightBytes, 0);
  });

  it('reboots with terminate on a TERMINATE_VM kernel', async () => {
    const before = await vm('vm-v4');
    const job = await reboot('vm-v4', 'terminate');
    assert.equal(job.state, 'succeeded', JSON.stringify(job.error));
    assert.ok(job.steps.some((s) => s.name === 'terminate-vm' && s.virtualSeconds > 0));
    const afterwards = await vm('vm-v4');
    assert.equal(afterwards.generation, before.generation + 1);
    assert.notEqual(afterwards.guestMemfds[0]?.id, before.guestMemfds[0]?.id);
    assert.deepEqual((await host('host-v4')).usage.hkids, {
      used: 1,
      total: 8,
      zombies: 0,
      leaked: 0,
    });
  });

  it('reboots with reuse: the same guest_memfds carry over to the new generation', async () => {
    const before = await vm('vm-reuse');
    const job = await reboot('vm-reuse', 'reuse');
    assert.equal(job.state, 'succeeded', JSON.stringify(job.error));
    assert.ok(job.steps.some((s) => s.name === 'link-guest-memfd'));
    assert.ok(!job.steps.some((s) => s.name === 'create-guest-memfd'));
    assert.equal(job.result?.bytesReused, 8 * GIB);
    assert.equal(job.result?.bytesAllocated, 0);

    const afterwards = await vm('vm-reuse');
    assert.equal(afterwards.state, 'running');
    assert.equal(afterwards.generation, before.generation + 1);
    assert.deepEqual(afterwards.guestMemfds, before.guestMemfds);
    assert.ok(afterwards.guestMemfds.every((g) => g.firstBootGeneration === 1));
    const usage = (await host('host-reuse')).usage;
    assert.equal(usage.hkids.used, 2);
    assert.equal(usage.memory.privateBytes, 8 * GIB + GIB / 4);
    assert.equal(usage.memory.orphanedBytes, 0);
  });

  it('refuses a strategy the kernel cannot run with 409 naming the feature, VM untouched', async () => {
    const before = await vm('vm-main');
    const missingTerminate = assertError(
      await api.post('/v1/vms/vm-main/reboot', { strategy: 'terminate' }),
      409,
      'kernel_feature_missing',
    );
    assert.equal(missingTerminate.details?.['feature'], 'KVM_TDX_TERMINATE_VM');
    assert.match(missingTerminate.message, /KVM_TDX_TERMINATE_VM/);
    assertError(
      await api.post('/v1/vms/vm-main/terminate', { strategy: 'terminate' }),
      409,
      'kernel_feature_missing',
    );
    const missingLink = assertError(
      await api.post('/v1/vms/vm-v4/reboot', { strategy: 'reuse' }),
      409,
      'kernel_feature_missing',
    );
    assert.equal(missingLink.details?.['feature'], 'KVM_LINK_GUEST_MEMFD');
    assert.equal(missingLink.details?.['switch'], 'linkGuestMemfd');
    assert.deepEqual(await vm('vm-main'), before);
  });

  it('answers 422 when no host can take the VM', async () => {
    const onHost = assertError(
      await api.post('/v1/vms', { hostId: 'host-mainline', vcpus: 2, memoryGiB: 128 }),
      422,
      'no_capacity',
    );
    assert.match(onHost.message, /host-mainline/);
    const anywhere = assertError(
      await api.post('/v1/vms', { vcpus: 2, memoryGiB: 1024 }),
      422,
      'no_capacity',
    );
    assert.match(anywhere.message, /no host can take the VM/);
    const tooManyVcpus = assertError(
      await api.post('/v1/vms', { hostId: 'host-v4', vcpus: 1000, memoryGiB: 1 }),
      422,
      'no_capacity',
    );
    assert.match(tooManyVcpus.message, /vCPUs/);
  });

  it('answers 404 for unknown ids on every route', async () => {
    const cases: Array<[string, string, unknown]> = [
      ['GET', '/v1/hosts/nope', undefined],
      ['GET', '/v1/vms/nope', undefined],
      ['GET', '/v1/vms?hostId=nope', undefined],
      ['POST', '/v1/vms', { hostId: 'nope', vcpus: 1, memoryGiB: 1 }],
      ['POST', '/v1/vms/nope/reboot', { strategy: 'cold' }],
      ['POST', '/v1/vms/nope/terminate', { strategy: 'close' }],
      ['GET', '/v1/jobs/nope', undefined],
      ['DELETE', '/v1/jobs/nope', undefined],
      ['GET', '/v1/batches/nope', undefined],
    ];
    for (const [method, path, body] of cases) {
      const answer = await api.request(method, path, body === undefined ? {} : { body });
      const error = assertError(answer, 404, 'not_found');
      assert.match(error.message, /nope/, `${method} ${path}`);
    }
  });

  it('replays an Idempotency-Key request and refuses the key for another request', async () => {
    const headers = { 'idempotency-key': 'reboot-vm-v4-once' };
    const first = await api.post('/v1/vms/vm-v4/reboot', { strategy: 'cold' }, headers);
    const { job } = await api.expect(first, 202, jobEnvelopeSchema);
    assert.equal(first.headers.get('idempotent-replayed'), null);
    await api.waitForJob(job.id);

    const replay = await api.post('/v1/vms/vm-v4/reboot', { strategy: 'cold' }, headers);
    const replayed = await api.expect(replay, 202, jobEnvelopeSchema);
    assert.equal(replay.headers.get('idempotent-replayed'), 'true');
    assert.equal(replayed.job.id, job.id);
    assert.equal((await vm('vm-v4')).generation, 3, 'the replay did not reboot again');

    const conflict = assertError(
      await api.post('/v1/vms/vm-v4/reboot', { strategy: 'terminate' }, headers),
      409,
      'idempotency_conflict',
    );
    assert.equal(conflict.details?.['jobId'], job.id);
    assertError(
      await api.post('/v1/vms/vm-main/reboot', { strategy: 'cold' }, headers),
      409,
      'idempotency_conflict',
    );

    // Creating a VM: the replay answers the same VM and boot job.
    const createHeaders = { 'idempotency-key': 'create-vm-idem' };
    const body = { id: 'vm-idem', hostId: 'host-v4', vcpus: 1, memoryGiB: 0.5 };
    const created = await api.expect(api.post('/v1/vms', body, createHeaders), 202, vmAndJobSchema);
    const again = await api.post(
      '/v1/vms',
      { memoryGiB: 0.5, vcpus: 1, hostId: 'host-v4', id: 'vm-idem' },
      createHeaders,
    );
    const repeated = await api.expect(again, 202, vmAndJobSchema);
    assert.equal(again.headers.get('idempotent-replayed'), 'true');
    assert.equal(repeated.job.id, created.job.id);
    assert.equal(repeated.vm.id, 'vm-idem');
    await api.waitForJob(created.job.id);
    assertError(
      await api.post('/v1/vms', { ...body, vcpus: 2 }, createHeaders),
      409,
      'idempotency_conflict',
    );
    assertError(await api.post('/v1/vms', body), 409, 'already_exists');
  });

  it('runs a batch in which one member is refused and the others succeed', async () => {
    const before = await Promise.all(['vm-reuse', 'vm-reuse-2', 'vm-main'].map(vm));
    const created = await api.expect(
      api.post('/v1/batches', {
        selector: { vmIds: ['vm-reuse', 'vm-reuse-2', 'vm-main', 'vm-ghost'] },
        action: 'reboot',
        strategy: 'reuse',
        maxConcurrency: 2,
        ratePerSecond: 100,
      }),
      202,
      batchViewSchema,
    );
    assert.equal(created.spec.maxConcurrency, 2);
    assert.equal(created.spec.ratePerSecond, 100);
    const batch = await api.waitForBatch(created.id);
    const byVm = new Map(batch.members.map((m) => [m.vmId, m]));
    assert.equal(byVm.get('vm-reuse')?.state, 'succeeded');
    assert.equal(byVm.get('vm-reuse-2')?.state, 'succeeded');
    assert.equal(byVm.get('vm-main')?.state, 'rejected');
    assert.equal(byVm.get('vm-main')?.error?.code, 'kernel_feature_missing');
    assert.equal(byVm.get('vm-ghost')?.state, 'rejected');
    assert.equal(byVm.get('vm-ghost')?.error?.code, 'not_found');
    assert.deepEqual(
      { succeeded: batch.counts.succeeded, rejected: batch.counts.rejected },
      { succeeded: 2, rejected: 2 },
    );
    const jobId = byVm.get('vm-reuse')?.jobId;
    assert.ok(jobId !== null && jobId !== undefined);
    const job = await api.expect(api.get(`/v1/jobs/${jobId}`), 200, jobViewSchema);
    assert.equal(job.batchId, batch.id);
    const afterwards = await Promise.all(['vm-reuse', 'vm-reuse-2', 'vm-main'].map(vm));
    assert.equal(afterwards[0]?.generation, (before[0]?.generation ?? 0) + 1);
    assert.deepEqual(afterwards[0]?.guestMemfds, before[0]?.guestMemfds);
    assert.equal(afterwards[1]?.generation, (before[1]?.generation ?? 0) + 1);
    assert.deepEqual(afterwards[2], before[2]);
  });

  it('terminates VMs and gives their memory and HKIDs back', async () => {
    const closed = await api.expect(
      api.post('/v1/vms/vm-main/terminate', { strategy: 'close' }),
      202,
      jobEnvelopeSchema,
    );
    assert.equal(closed.job.action, 'terminate');
    assert.equal((await api.waitForJob(closed.job.id)).state, 'succeeded');
    const terminated = await vm('vm-main');
    assert.equal(terminated.state, 'terminated');
    assert.equal(terminated.hkid, null);
    const usage = (await host('host-mainline')).usage;
    assert.deepEqual(usage.hkids, { used: 0, total: 8, zombies: 0, leaked: 0 });
    assert.equal(usage.memory.freeBytes, 64 * GIB);
    assert.equal((await host('host-mainline')).vms, 0);

    const viaTerminate = await api.expect(
      api.post('/v1/vms/vm-v4/terminate', { strategy: 'terminate' }),
      202,
      jobEnvelopeSchema,
    );
    const job = await api.waitForJob(viaTerminate.job.id);
    assert.equal(job.state, 'succeeded');
    assert.ok(job.steps.some((s) => s.name === 'terminate-vm'));
    assert.equal((await vm('vm-v4')).state, 'terminated');

    const conflict = assertError(
      await api.post('/v1/vms/vm-main/reboot', { strategy: 'cold' }),
      409,
      'vm_state_conflict',
    );
    assert.equal(conflict.details?.['state'], 'terminated');
    assertError(await api.delete(`/v1/jobs/${closed.job.id}`), 409, 'job_finished');

    // A terminated VM has left its host, but lists show it as GET does, for 7 days (earlier
    // tests terminated other VMs too).
    const list = async (query: string) =>
      (await api.expect(api.get(`/v1/vms?${query}`), 200, vmListSchema)).vms
        .map((v) => `${v.id} ${v.state}`)
        .filter((v) => v.startsWith('vm-main ') || v.startsWith('vm-v4 '))
        .sort();
    assert.deepEqual(await list('hostId=host-mainline'), ['vm-main terminated']);
    assert.deepEqual(await list('state=terminated'), ['vm-main terminated', 'vm-v4 terminated']);
    assert.deepEqual(await list('hostId=host-mainline&state=running'), []);
    // Its id may be used again: the new VM is the one shown.
    const again = await api.expect(
      api.post('/v1/vms', { id: 'vm-main', hostId: 'host-mainline', vcpus: 2, memoryGiB: 4 }),
      202,
      vmAndJobSchema,
    );
    assert.equal((await api.waitForJob(again.job.id)).state, 'succeeded');
    const reborn = await vm('vm-main');
    assert.equal(reborn.state, 'running');
    assert.equal(reborn.generation, 1);
    assert.deepEqual(await list('hostId=host-mainline'), ['vm-main running']);
    assert.deepEqual(await list('state=terminated'), ['vm-v4 terminated']);
  });

  it('tells the settings that time operations at /v1/info', async () => {
    const info = await api.expect(api.get('/v1/info'), 200, daemonInfoSchema);
    assert.deepEqual(info, {
      timeScale: 0,
      hostConcurrency: 4,
      globalConcurrency: null,
      stepWaitTimeoutMs: 600_000,
    });
  });

  it('documents every route with its schemas at /docs-json', async () => {
    const answer = await api.get('/docs-json');
    assert.equal(answer.status, 200);
    const document = answer.body as {
      paths: Record<
        string,
        Record<
          string,
          {
            requestBody?: { content: Record<string, { schema: unknown }> };
            responses: Record<string, { content?: Record<string, { schema: unknown }> }>;
          }
        >
      >;
    };
    const expected: Array<[string, string, string]> = [
      ['/v1/hosts', 'post', '201'],
      ['/v1/hosts', 'get', '200'],
      ['/v1/hosts/{id}', 'get', '200'],
      ['/v1/vms', 'post', '202'],
      ['/v1/vms', 'get', '200'],
      ['/v1/vms/{id}', 'get', '200'],
      ['/v1/vms/{id}/reboot', 'post', '202'],
      ['/v1/vms/{id}/terminate', 'post', '202'],
      ['/v1/jobs/{id}', 'get', '200'],
      ['/v1/jobs/{id}', 'delete', '202'],
      ['/v1/batches', 'post', '202'],
      ['/v1/batches/{id}', 'get', '200'],
      ['/v1/events', 'get', '200'],
      ['/v1/info', 'get', '200'],
    ];
    for (const [path, method, status] of expected) {
      const operation = document.paths[path]?.[method];
      assert.ok(operation !== undefined, `${method} ${path} is documented`);
      const content = operation.responses[status]?.content;
      assert.ok(content !== undefined, `${method} ${path} documents its ${status}`);
      assert.ok(Object.values(content).every((c) => typeof c.schema === 'object'));
      if (method === 'post') {
        const schema = operation.requestBody?.content['application/json']?.schema as
          { additionalProperties?: boolean } | undefined;
        assert.equal(schema?.additionalProperties, false, `${method} ${path} body schema`);
      }
    }
  });
});
