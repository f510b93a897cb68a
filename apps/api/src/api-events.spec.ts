import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { type TestApp } from '../../../test/support/http-app.js';
import { startTestRedis, type TestRedis } from '../../../test/support/redis.js';
import { fleetEventSchema } from './event.dto.js';
import { EventStreamService } from './event-stream.service.js';
import { hostViewSchema } from './host.dto.js';
import { jobEnvelopeSchema } from './job.dto.js';
import { ApiClient, assertError, startApiApp } from './testing/api-test-client.js';
import { type SseFrame, SseReader } from './testing/sse-reader.js';
import { vmAndJobSchema, vmViewSchema } from './vm.dto.js';

const TOKEN = 'events-and-auth-token';

type EventData = ReturnType<typeof fleetEventSchema.parse>;

function eventOf(frame: SseFrame): EventData | null {
  if (frame.kind !== 'event') return null;
  const data = fleetEventSchema.parse(JSON.parse(frame.data));
  assert.equal(frame.event, data.type, 'the event line names the type');
  return data;
}

describe('server-sent events and auth (API_TOKEN set)', () => {
  let redis: TestRedis;
  let app: TestApp;
  let api: ApiClient;
  let anonymous: ApiClient;

  before(async () => {
    redis = await startTestRedis();
    app = await startApiApp({
      redisUrl: redis.url,
      keyPrefix: 'api-events',
      workers: true,
      env: { TIME_SCALE: '0', API_TOKEN: TOKEN },
      eventStream: { heartbeatMs: 100 },
    });
    api = new ApiClient(app.baseUrl, TOKEN);
    anonymous = new ApiClient(app.baseUrl);
    await api.expect(api.post('/v1/hosts', { id: 'h', memoryGiB: 64 }), 201, hostViewSchema);
    for (const id of ['vm-a', 'vm-b']) {
      const { job } = await api.expect(
        api.post('/v1/vms', { id, hostId: 'h', vcpus: 2, memoryGiB: 2 }),
        202,
        vmAndJobSchema,
      );
      await api.waitForJob(job.id);
    }
  });
  after(async () => {
    await app?.close();
    await redis?.stop();
  });

  const streams = (): number => app.app.get(EventStreamService).streams;

  it('streams the events of a reboot as they happen', async () => {
    const stream = await SseReader.open(`${app.baseUrl}/v1/events`);
    try {
      assert.equal(stream.response.status, 200);
      assert.match(stream.response.headers.get('content-type') ?? '', /^text\/event-stream/);
      await stream.until((f) => f.kind === 'comment' && f.text === 'connected');

      const { job } = await api.expect(
        api.post('/v1/vms/vm-a/reboot', { strategy: 'cold' }),
        202,
        jobEnvelopeSchema,
      );
      const frames = await stream.until((f) => {
        const event = eventOf(f);
        return event?.type === 'vm.state' && event.jobId === job.id;
      });
      const events = frames.flatMap((f) => eventOf(f) ?? []).filter((e) => e.jobId === job.id);
      const types = events.map((e) => e.type);
      assert.equal(types[0], 'job.started');
      assert.ok(types.includes('job.step'));
      const steps = events.filter((e) => e.type === 'job.step').map((e) => e.step);
      assert.ok(steps.includes('close-guest-memfd'), steps.join(', '));
      assert.ok(steps.includes('run'));
      const finished = events.find((e) => e.type === 'job.finished');
      assert.equal(finished?.state, 'succeeded');
      assert.equal(events.at(-1)?.state, 'running');
      assert.ok(events.every((e) => e.vmId === 'vm-a' && e.hostId === 'h'));
    } finally {
      stream.close();
    }
  });

  it('keeps only the events of the VM asked for, with heartbeats in between', async () => {
    const stream = await SseReader.open(`${app.baseUrl}/v1/events?vmId=vm-b`);
    try {
      await stream.until((f) => f.kind === 'comment' && f.text === 'connected');
      const first = await api.expect(
        api.post('/v1/vms/vm-a/reboot', { strategy: 'cold' }),
        202,
        jobEnvelopeSchema,
      );
      await api.waitForJob(first.job.id);
      await api.expect(
        api.post('/v1/vms/vm-b/reboot', { strategy: 'cold' }),
        202,
        jobEnvelopeSchema,
      );
      const frames = await stream.until((f) => eventOf(f)?.type === 'job.finished');
      const events = frames.flatMap((f) => eventOf(f) ?? []);
      assert.ok(events.length > 1);
      assert.ok(events.every((e) => e.vmId === 'vm-b'));
      await stream.until((f) => f.kind === 'comment' && f.text === 'heartbeat', 2000);
    } finally {
      stream.close();
    }
  });

  /** Waits until the server has `count` streams open. */
  async function streamsOpen(count: number): Promise<void> {
    const deadline = performance.now() + 3000;
    while (streams() !== count) {
      assert.ok(performance.now() < deadline, `${streams()} streams open, not ${count}`);
      await sleep(20);
    }
  }

  it('ends a stream when its client goes away', async () => {
    await streamsOpen(0);
    const stream = await SseReader.open(`${app.baseUrl}/v1/events`);
    await stream.until((f) => f.kind === 'comment' && f.text === 'connected');
    assert.equal(streams(), 1);
    stream.close();
    await streamsOpen(0);
  });

  it('answers 400 to a bad filter', async () => {
    assertError(await anonymous.get('/v1/events?vmId='), 400, 'invalid_request');
  });

  it('needs the bearer token on every mutating call and leaves reads open', async () => {
    const before = await anonymous.expect(anonymous.get('/v1/vms/vm-b'), 200, vmViewSchema);
    const jobId = before.activeJob ?? 'no-job';
    const mutating: Array<[string, string, unknown]> = [
      ['POST', '/v1/hosts', { memoryGiB: 1 }],
      ['POST', '/v1/vms', { hostId: 'h', vcpus: 1, memoryGiB: 1 }],
      ['POST', '/v1/vms/vm-b/reboot', { strategy: 'cold' }],
      ['POST', '/v1/vms/vm-b/terminate', { strategy: 'close' }],
      ['DELETE', `/v1/jobs/${jobId}`, undefined],
      [
        'POST',
        '/v1/batches',
        { selector: { all: true }, action: 'reboot', strategy: 'cold', maxConcurrency: 1 },
      ],
    ];
    for (const [method, path, body] of mutating) {
      const options = body === undefined ? {} : { body };
      const missing = await anonymous.request(method, path, options);
      assertError(missing, 401, 'unauthorized');
      assert.equal(missing.headers.get('www-authenticate'), 'Bearer');
      const wrong = await anonymous.request(method, path, {
        ...options,
        headers: { authorization: `Bearer ${TOKEN}-not` },
      });
      assertError(wrong, 401, 'unauthorized');
    }
    const { hosts } = (await anonymous.get('/v1/hosts')).body as { hosts: unknown[] };
    assert.equal(hosts.length, 1, 'no host was created');
    const after = await anonymous.expect(anonymous.get('/v1/vms/vm-b'), 200, vmViewSchema);
    assert.deepEqual(after, before, 'the VM is untouched');
    for (const path of ['/v1/hosts', '/v1/hosts/h', '/v1/vms', '/v1/vms/vm-b', '/docs-json']) {
      assert.equal((await anonymous.get(path)).status, 200, path);
    }
    await api.expect(api.post('/v1/hosts', { id: 'h2', memoryGiB: 1 }), 201, hostViewSchema);
  });
});

describe('server-sent events and shutdown', () => {
  it('ends open streams so that the app closes promptly', async () => {
    const redis = await startTestRedis();
    try {
      const app = await startApiApp({
        redisUrl: redis.url,
        keyPrefix: 'api-sse-close',
        workers: true,
      });
      const stream = await SseReader.open(`${app.baseUrl}/v1/events`);
      await stream.until((f) => f.kind === 'comment' && f.text === 'connected');
      const closing = app.close();
      const closed = await Promise.race([closing.then(() => true), sleep(3000).then(() => false)]);
      if (!closed) {
        // Let the app finish closing before failing, so the test does not hang.
        stream.close();
        await closing;
      }
      assert.ok(closed, 'the app closed within 3 s with a stream open');
      assert.equal(await stream.next(2000), null, 'the stream ended');
    } finally {
      await redis.stop();
    }
  });
});
