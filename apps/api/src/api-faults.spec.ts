import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { type TestApp } from '../../../test/support/http-app.js';
import { startTestRedis, type TestRedis } from '../../../test/support/redis.js';
import { hostViewSchema } from './host.dto.js';
import { ApiClient, assertError, startApiApp } from './testing/api-test-client.js';
import { vmAndJobSchema } from './vm.dto.js';

/** [what, the body, the field the 400 must name] */
const BAD_SETTINGS: Array<[string, unknown, string]> = [
  ['an unknown step', { KEYID: { failNext: 1 } }, 'KEYID'],
  ['an empty rule', { FREEID: {} }, 'FREEID'],
  ['failNext negative', { FREEID: { failNext: -1 } }, 'FREEID'],
  ['everyNth zero', { VPFLUSHDONE: { everyNth: 0 } }, 'VPFLUSHDONE'],
  ['a fractional count', { FREEID: { everyNth: 1.5 } }, 'FREEID'],
  ['two rules for a step', { FREEID: { failNext: 1, everyNth: 2 } }, 'FREEID'],
  ['a rule as text', { FREEID: 'always' }, 'FREEID'],
];

describe('API: HKID release faults (API and workers in one process, TIME_SCALE=0)', () => {
  let redis: TestRedis;
  let app: TestApp;
  let api: ApiClient;

  before(async () => {
    redis = await startTestRedis();
    app = await startApiApp({
      redisUrl: redis.url,
      keyPrefix: 'api-faults',
      workers: true,
      env: { TIME_SCALE: '0' },
    });
    api = new ApiClient(app.baseUrl);
    await api.expect(api.post('/v1/hosts', { id: 'host-bad', memoryGiB: 8 }), 201, hostViewSchema);
  });
  after(async () => {
    await app?.close();
    await redis?.stop();
  });

  for (const [what, faults, field] of BAD_SETTINGS) {
    it(`answers 400 to ${what}, at creation and on an existing host`, async () => {
      const created = await api.post('/v1/hosts', { memoryGiB: 8, hkidReleaseFaults: faults });
      assert.ok(
        assertError(created, 400, 'invalid_request').message.includes(
          `body.hkidReleaseFaults.${field}`,
        ),
      );
      const put = await api.request('PUT', '/v1/hosts/host-bad/faults', { body: faults });
      assert.ok(assertError(put, 400, 'invalid_request').message.includes(`body.${field}`));
    });
  }

  it('answers 404 to a setting for a host that does not exist', async () => {
    assertError(await api.request('PUT', '/v1/hosts/nope/faults', { body: {} }), 404, 'not_found');
  });

  it('a failed KEY.FREEID leaks the HKID: the host view shows it apart from zombies', async () => {
    const created = await api.expect(
      api.post('/v1/hosts', {
        id: 'host-leaky',
        memoryGiB: 8,
        hkids: 2,
        hkidReleaseFaults: { FREEID: { failNext: 1 } },
      }),
      201,
      hostViewSchema,
    );
    assert.deepEqual(created.hkidReleaseFaults, { FREEID: { failNext: 1 } });
    assert.deepEqual(created.usage.hkids, { used: 0, total: 2, zombies: 0, leaked: 0 });
    const boot = await api.expect(
      api.post('/v1/vms', { id: 'vm-leaky', hostId: 'host-leaky', vcpus: 2, memoryGiB: 1 }),
      202,
      vmAndJobSchema,
    );
    assert.equal((await api.waitForJob(boot.job.id)).state, 'succeeded');
    const terminate = await api.post('/v1/vms/vm-leaky/terminate', { strategy: 'close' });
    assert.equal(terminate.status, 202, JSON.stringify(terminate.body));
    const jobId = (terminate.body as { job: { id: string } }).job.id;
    // The kernel only logs the failure: the terminate succeeds, and the host has an HKID less.
    assert.equal((await api.waitForJob(jobId)).state, 'succeeded');
    const host = await api.expect(api.get('/v1/hosts/host-leaky'), 200, hostViewSchema);
    assert.deepEqual(host.usage.hkids, { used: 0, total: 2, zombies: 0, leaked: 1 });
    assert.ok(host.usage.memory.leakedBytes > 0, 'the BLOCKED TD keeps its pages');
    assert.deepEqual(host.hkidReleaseAttempts, { VPFLUSHDONE: 1, FREEID: 1 });
  });

  it('PUT /v1/hosts/{id}/faults replaces the setting; the same setting again changes nothing', async () => {
    await api.expect(api.post('/v1/hosts', { id: 'host-set', memoryGiB: 8 }), 201, hostViewSchema);
    const faults = { VPFLUSHDONE: { everyNth: 3 }, FREEID: { failNext: 2 } };
    const first = await api.expect(
      api.request('PUT', '/v1/hosts/host-set/faults', { body: faults }),
      200,
      hostViewSchema,
    );
    assert.deepEqual(first.hkidReleaseFaults, faults);
    assert.deepEqual(first.hkidReleaseAttempts, { VPFLUSHDONE: 0, FREEID: 0 });
    const again = await api.expect(
      api.request('PUT', '/v1/hosts/host-set/faults', { body: faults }),
      200,
      hostViewSchema,
    );
    assert.deepEqual(again, first);
    const cleared = await api.expect(
      api.request('PUT', '/v1/hosts/host-set/faults', { body: {} }),
      200,
      hostViewSchema,
    );
    assert.deepEqual(cleared.hkidReleaseFaults, {});
  });
});
