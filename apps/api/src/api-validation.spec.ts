import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { type TestApp } from '../../../test/support/http-app.js';
import { startTestRedis, type TestRedis } from '../../../test/support/redis.js';
import { hostViewSchema } from './host.dto.js';
import { ApiClient, assertError, startApiApp } from './testing/api-test-client.js';
import { vmAndJobSchema } from './vm.dto.js';

interface Issue {
  location: string;
  field: string;
  message: string;
}

/** [what, method, path, body, the field the 400 must name (location.field)] */
type BadRequest = [string, string, string, unknown, string];

const HOST = { memoryGiB: 64 };
const VM = { hostId: 'host-a', vcpus: 2, memoryGiB: 1 };
const BATCH = { selector: { all: true }, action: 'reboot', strategy: 'cold', maxConcurrency: 4 };

const BAD_REQUESTS: BadRequest[] = [
  ['no host body', 'POST', '/v1/hosts', undefined, 'body'],
  ['a host body that is an array', 'POST', '/v1/hosts', [HOST], 'body'],
  ['no memoryGiB', 'POST', '/v1/hosts', {}, 'body.memoryGiB'],
  ['memoryGiB as a string', 'POST', '/v1/hosts', { memoryGiB: '64' }, 'body.memoryGiB'],
  ['memoryGiB zero', 'POST', '/v1/hosts', { memoryGiB: 0 }, 'body.memoryGiB'],
  ['memoryGiB too large', 'POST', '/v1/hosts', { memoryGiB: 65537 }, 'body.memoryGiB'],
  ['memoryGiB not whole pages', 'POST', '/v1/hosts', { memoryGiB: 1e-9 }, 'body.memoryGiB'],
  ['hkids zero', 'POST', '/v1/hosts', { ...HOST, hkids: 0 }, 'body.hkids'],
  ['hkids fractional', 'POST', '/v1/hosts', { ...HOST, hkids: 1.5 }, 'body.hkids'],
  ['hkids too many', 'POST', '/v1/hosts', { ...HOST, hkids: 1025 }, 'body.hkids'],
  ['packages zero', 'POST', '/v1/hosts', { ...HOST, packages: 0 }, 'body.packages'],
  ['cpus negative', 'POST', '/v1/hosts', { ...HOST, cpus: -1 }, 'body.cpus'],
  [
    'a bad cgroup limit',
    'POST',
    '/v1/hosts',
    { ...HOST, hkidCgroupLimit: -1 },
    'body.hkidCgroupLimit',
  ],
  [
    'an unknown kernel',
    'POST',
    '/v1/hosts',
    { ...HOST, kernel: { terminateVm: 'v5' } },
    'body.kernel.terminateVm',
  ],
  [
    'a kernel switch as a string',
    'POST',
    '/v1/hosts',
    { ...HOST, kernel: { linkGuestMemfd: 'yes' } },
    'body.kernel.linkGuestMemfd',
  ],
  [
    'a bad page size',
    'POST',
    '/v1/hosts',
    { ...HOST, kernel: { privatePageSize: '1G' } },
    'body.kernel.privatePageSize',
  ],
  [
    'an unknown kernel switch',
    'POST',
    '/v1/hosts',
    { ...HOST, kernel: { turbo: true } },
    'body.kernel.turbo',
  ],
  ['an unknown cost model', 'POST', '/v1/hosts', { ...HOST, costModel: 'magic' }, 'body.costModel'],
  ['an unknown host field', 'POST', '/v1/hosts', { ...HOST, color: 'red' }, 'body.color'],
  ['a host id with braces', 'POST', '/v1/hosts', { ...HOST, id: '{x}' }, 'body.id'],
  ['an empty host id', 'POST', '/v1/hosts', { ...HOST, id: '' }, 'body.id'],
  ['no VM body', 'POST', '/v1/vms', undefined, 'body'],
  ['no vcpus', 'POST', '/v1/vms', { memoryGiB: 1 }, 'body.vcpus'],
  ['vcpus zero', 'POST', '/v1/vms', { ...VM, vcpus: 0 }, 'body.vcpus'],
  ['vcpus too many', 'POST', '/v1/vms', { ...VM, vcpus: 1025 }, 'body.vcpus'],
  ['vcpus fractional', 'POST', '/v1/vms', { ...VM, vcpus: 2.5 }, 'body.vcpus'],
  ['VM memoryGiB negative', 'POST', '/v1/vms', { ...VM, memoryGiB: -1 }, 'body.memoryGiB'],
  ['VM memoryGiB too large', 'POST', '/v1/vms', { ...VM, memoryGiB: 70000 }, 'body.memoryGiB'],
  [
    'VM memory not in 2 MiB steps',
    'POST',
    '/v1/vms',
    { ...VM, memoryGiB: 1.001 },
    'body.memoryGiB',
  ],
  ['VM memoryGiB null', 'POST', '/v1/vms', { ...VM, memoryGiB: null }, 'body.memoryGiB'],
  ['a VM id with a colon', 'POST', '/v1/vms', { ...VM, id: 'a:b' }, 'body.id'],
  ['a hostId that is a number', 'POST', '/v1/vms', { ...VM, hostId: 7 }, 'body.hostId'],
  ['an unknown VM field', 'POST', '/v1/vms', { ...VM, gpus: 1 }, 'body.gpus'],
  ['an unknown VM state filter', 'GET', '/v1/vms?state=sleeping', undefined, 'query.state'],
  ['an unknown VM filter', 'GET', '/v1/vms?owner=me', undefined, 'query.owner'],
  ['no reboot body', 'POST', '/v1/vms/vm-a/reboot', undefined, 'body'],
  ['no reboot strategy', 'POST', '/v1/vms/vm-a/reboot', {}, 'body.strategy'],
  [
    'an unknown reboot strategy',
    'POST',
    '/v1/vms/vm-a/reboot',
    { strategy: 'warm' },
    'body.strategy',
  ],
  [
    'a terminate strategy for a reboot',
    'POST',
    '/v1/vms/vm-a/reboot',
    { strategy: 'close' },
    'body.strategy',
  ],
  [
    'an unknown reboot field',
    'POST',
    '/v1/vms/vm-a/reboot',
    { strategy: 'cold', force: true },
    'body.force',
  ],
  [
    'an unknown terminate strategy',
    'POST',
    '/v1/vms/vm-a/terminate',
    { strategy: 'cold' },
    'body.strategy',
  ],
  ['no terminate body', 'POST', '/v1/vms/vm-a/terminate', undefined, 'body'],
  ['no batch body', 'POST', '/v1/batches', undefined, 'body'],
  ['no selector', 'POST', '/v1/batches', { ...BATCH, selector: undefined }, 'body.selector'],
  ['an empty selector', 'POST', '/v1/batches', { ...BATCH, selector: {} }, 'body.selector'],
  [
    'two selectors',
    'POST',
    '/v1/batches',
    { ...BATCH, selector: { all: true, vmIds: ['x'] } },
    'body.selector',
  ],
  [
    'all: false',
    'POST',
    '/v1/batches',
    { ...BATCH, selector: { all: false } },
    'body.selector.all',
  ],
  [
    'an empty vmIds',
    'POST',
    '/v1/batches',
    { ...BATCH, selector: { vmIds: [] } },
    'body.selector.vmIds',
  ],
  [
    'a hostIds that is a string',
    'POST',
    '/v1/batches',
    { ...BATCH, selector: { hostIds: 'host-a' } },
    'body.selector.hostIds',
  ],
  [
    'an unknown selector',
    'POST',
    '/v1/batches',
    { ...BATCH, selector: { tag: 'x' } },
    'body.selector.tag',
  ],
  ['an unknown action', 'POST', '/v1/batches', { ...BATCH, action: 'pause' }, 'body.action'],
  [
    'a strategy of the other action',
    'POST',
    '/v1/batches',
    { ...BATCH, action: 'terminate', strategy: 'reuse' },
    'body.strategy',
  ],
  [
    'maxConcurrency zero',
    'POST',
    '/v1/batches',
    { ...BATCH, maxConcurrency: 0 },
    'body.maxConcurrency',
  ],
  [
    'maxConcurrency too large',
    'POST',
    '/v1/batches',
    { ...BATCH, maxConcurrency: 10001 },
    'body.maxConcurrency',
  ],
  [
    'no maxConcurrency',
    'POST',
    '/v1/batches',
    { ...BATCH, maxConcurrency: undefined },
    'body.maxConcurrency',
  ],
  [
    'ratePerSecond zero',
    'POST',
    '/v1/batches',
    { ...BATCH, ratePerSecond: 0 },
    'body.ratePerSecond',
  ],
  [
    'ratePerSecond as text',
    'POST',
    '/v1/batches',
    { ...BATCH, ratePerSecond: 'fast' },
    'body.ratePerSecond',
  ],
  ['an unknown batch field', 'POST', '/v1/batches', { ...BATCH, dryRun: true }, 'body.dryRun'],
  ['an unknown event filter', 'GET', '/v1/events?kind=job', undefined, 'query.kind'],
];

describe('API input validation (API only)', () => {
  let redis: TestRedis;
  let app: TestApp;
  let api: ApiClient;

  before(async () => {
    redis = await startTestRedis();
    app = await startApiApp({ redisUrl: redis.url, keyPrefix: 'api-validation', workers: false });
    api = new ApiClient(app.baseUrl);
    await api.expect(api.post('/v1/hosts', { id: 'host-a', memoryGiB: 64 }), 201, hostViewSchema);
    await api.expect(api.post('/v1/vms', { ...VM, id: 'vm-a' }), 202, vmAndJobSchema);
  });
  after(async () => {
    await app?.close();
    await redis?.stop();
  });

  for (const [what, method, path, body, field] of BAD_REQUESTS) {
    it(`answers 400 naming ${field} for ${what}`, async () => {
      const answer = await api.request(method, path, body === undefined ? {} : { body });
      const error = assertError(answer, 400, 'invalid_request');
      const issues = (error.details as { issues: Issue[] }).issues;
      const named = issues.map((i) => (i.field === '' ? i.location : `${i.location}.${i.field}`));
      assert.ok(named.includes(field), `${field} among ${named.join(', ')}`);
      assert.ok(error.message.includes(field), error.message);
    });
  }

  it('answers 400 to malformed JSON on every POST', async () => {
    for (const path of ['/v1/hosts', '/v1/vms', '/v1/vms/vm-a/reboot', '/v1/batches']) {
      const answer = await api.request('POST', path, { rawBody: '{"strategy": ' });
      assertError(answer, 400, 'invalid_json');
    }
  });

  it('refuses a body that is not JSON without a 500', async () => {
    const answer = await api.request('POST', '/v1/hosts', {
      rawBody: 'memoryGiB=64',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
    });
    assert.ok(answer.status >= 400 && answer.status < 500, String(answer.status));
    assert.ok(typeof (answer.body as { error?: unknown }).error === 'object');
  });

  it('answers 400 to a malformed Idempotency-Key', async () => {
    for (const key of ['', 'x'.repeat(201), 'tab\there', 'caf\u00e9']) {
      const answer = await api.post(
        '/v1/vms/vm-a/reboot',
        { strategy: 'cold' },
        { 'idempotency-key': key },
      );
      const error = assertError(answer, 400, 'invalid_request');
      assert.match(error.message, /Idempotency-Key/);
    }
    const vm = await api.get('/v1/vms/vm-a');
    assert.equal((vm.body as { state: string }).state, 'booting', 'nothing was submitted');
  });

  it('leaves the fleet unchanged after bad requests', async () => {
    const hosts = (await api.get('/v1/hosts')).body as { hosts: Array<{ id: string }> };
    assert.deepEqual(
      hosts.hosts.map((h) => h.id),
      ['host-a'],
    );
  });
});

describe('API when Redis goes away', () => {
  it('answers 503 redis_unavailable, not 500', async () => {
    const doomed = await startTestRedis();
    const app = await startApiApp({ redisUrl: doomed.url, keyPrefix: 'api-down', workers: false });
    try {
      const api = new ApiClient(app.baseUrl);
      await api.expect(api.post('/v1/hosts', { id: 'h', memoryGiB: 8 }), 201, hostViewSchema);
      await doomed.stop();
      for (const path of ['/v1/hosts', '/v1/jobs/j']) {
        assertError(await api.get(path), 503, 'redis_unavailable');
      }
      assertError(
        await api.post('/v1/vms', { hostId: 'h', vcpus: 1, memoryGiB: 1 }),
        503,
        'redis_unavailable',
      );
    } finally {
      await app.close();
      await doomed.stop();
    }
  });
});
