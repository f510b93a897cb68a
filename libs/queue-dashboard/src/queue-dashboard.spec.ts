// The queue dashboard on a real app and a real Redis: it lists the fleet's own (prefixed) queues,
// answers only with the API token (header, or the cookie a `?token=` visit gives), refuses in the
// error shape, and changes nothing.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Body, Controller, HttpCode, Module, Post } from '@nestjs/common';
import { connectFleet, type FleetClient } from '../../../test/support/fleet.js';
import { startTestApp, type TestApp } from '../../../test/support/http-app.js';
import { startTestRedis, type TestRedis } from '../../../test/support/redis.js';
import { QueueDashboardModule } from './queue-dashboard.module.js';

const TOKEN = 'queue-dashboard-token-42';
const PREFIX = 'dash';

/** A route of the app besides the dashboard, whose errors must keep the project's shape. */
@Controller('probe')
class ProbeController {
  @Post()
  @HttpCode(200)
  echo(@Body() body: unknown): unknown {
    return body;
  }
}

@Module({ controllers: [ProbeController] })
class ProbeModule {}

interface QueuesAnswer {
  queues: Array<{ name: string; readOnlyMode: boolean; counts: Record<string, number> }>;
}

async function get(
  app: TestApp,
  path: string,
  headers: Record<string, string> = {},
  method = 'GET',
): Promise<Response> {
  return fetch(`${app.baseUrl}${path}`, { method, headers, redirect: 'manual' });
}

async function assertUnauthorized(response: Response): Promise<void> {
  assert.equal(response.status, 401);
  assert.equal(response.headers.get('www-authenticate'), 'Bearer');
  const body = (await response.json()) as { error?: { code?: string; message?: string } };
  assert.deepEqual(Object.keys(body), ['error']);
  assert.equal(body.error?.code, 'unauthorized');
  assert.equal(typeof body.error?.message, 'string');
}

describe('QueueDashboardModule', () => {
  let redis: TestRedis;
  let fleet: FleetClient;
  before(async () => {
    redis = await startTestRedis();
    fleet = connectFleet(redis.url, PREFIX);
    // A job nobody takes (no workers here): the dashboard must count it in the prefixed queue.
    await fleet.queues.addOperation({ opId: 'op-1', hostId: 'h1' });
  });
  after(async () => {
    await fleet.close();
    await redis.stop();
  });

  describe('with API_TOKEN', () => {
    let app: TestApp;
    before(async () => {
      app = await startTestApp({
        redisUrl: redis.url,
        env: { API_TOKEN: TOKEN, KEY_PREFIX: PREFIX },
        imports: [QueueDashboardModule, ProbeModule],
        // The OpenAPI UI registers @fastify/static too: both must coexist.
        openApi: { title: 'tdx-fleet test', description: 'test', version: '0.0.0' },
      });
    });
    after(async () => {
      await app.close();
    });

    it('refuses every dashboard request without the token, in the error shape', async () => {
      for (const path of [
        '/admin/queues',
        '/admin/queues/',
        '/admin/queues/api/queues',
        '/admin/queues/queue/operations',
      ]) {
        await assertUnauthorized(await get(app, path));
      }
      await assertUnauthorized(await get(app, '/admin/queues', { authorization: 'Bearer nope' }));
      await assertUnauthorized(await get(app, '/admin/queues?token=nope'));
    });

    it('lists the fleet queues, with their jobs, for the bearer token', async () => {
      const auth = { authorization: `Bearer ${TOKEN}` };
      const page = await get(app, '/admin/queues', auth);
      assert.equal(page.status, 200);
      assert.match(page.headers.get('content-type') ?? '', /text\/html/);
      const html = await page.text();
      assert.match(html, /<title>tdx-fleet<\/title>/);
      assert.doesNotMatch(
        html,
        /https?:\/\/[^"]*"[^>]*rel="stylesheet"/,
        'no stylesheet from afar',
      );
      const answer = await get(app, '/admin/queues/api/queues', auth);
      assert.equal(answer.status, 200);
      const { queues } = (await answer.json()) as QueuesAnswer;
      assert.deepEqual(queues.map((q) => q.name).sort(), ['batches', 'operations']);
      const operations = queues.find((q) => q.name === 'operations');
      assert.equal(operations?.counts['waiting'], 1, 'the job added under the fleet prefix');
      assert.ok(queues.every((q) => q.readOnlyMode));
    });

    it('gives a browser a cookie for ?token= and then serves it', async () => {
      const login = await get(app, `/admin/queues?token=${TOKEN}`);
      assert.equal(login.status, 303);
      assert.equal(login.headers.get('location'), '/admin/queues');
      const setCookie = login.headers.get('set-cookie') ?? '';
      assert.match(setCookie, /; Path=\/admin\/queues; HttpOnly; SameSite=Strict$/);
      assert.ok(!setCookie.includes(TOKEN));
      const cookie = setCookie.split(';')[0] ?? '';
      const page = await get(app, '/admin/queues', { cookie });
      assert.equal(page.status, 200);
      await page.body?.cancel();
      const queues = await get(app, '/admin/queues/api/queues', { cookie });
      assert.equal(queues.status, 200);
      await queues.body?.cancel();
      const asset = /src="(static\/js\/[^"]+)"/.exec(
        await (await get(app, '/admin/queues', { cookie })).text(),
      );
      assert.ok(asset?.[1], 'the page names its scripts');
      await assertUnauthorized(await get(app, `/admin/queues/${asset[1]}`));
      const script = await get(app, `/admin/queues/${asset[1]}`, { cookie });
      assert.equal(script.status, 200);
      await script.body?.cancel();
    });

    it('changes nothing: the queues are read-only', async () => {
      const auth = { authorization: `Bearer ${TOKEN}` };
      const pause = await get(app, '/admin/queues/api/queues/operations/pause', auth, 'PUT');
      assert.equal(pause.status, 405);
      await pause.body?.cancel();
      const clean = await get(app, '/admin/queues/api/queues/operations/empty', auth, 'PUT');
      assert.equal(clean.status, 405);
      await clean.body?.cancel();
      assert.equal(await fleet.queues.operations.isPaused(), false);
      assert.equal(await fleet.queues.operations.getWaitingCount(), 1);
    });

    it('leaves the rest of the app as it was', async () => {
      assert.equal((await get(app, '/healthz')).status, 200);
      const docs = await get(app, '/docs');
      assert.equal(docs.status, 200);
      await docs.body?.cancel();
      const missing = await get(app, '/admin/other');
      assert.equal(missing.status, 404);
      assert.deepEqual(Object.keys((await missing.json()) as object), ['error']);
      // The app's own routes still answer their errors in the error shape.
      const malformed = await fetch(`${app.baseUrl}/probe`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` },
        body: '{"oops": ',
      });
      assert.equal(malformed.status, 400);
      const body = (await malformed.json()) as { error?: { code?: string } };
      assert.deepEqual(Object.keys(body), ['error']);
      assert.equal(body.error?.code, 'invalid_json');
    });
  });

  describe('without API_TOKEN', () => {
    it('is open, like mutating calls (the server is on loopback then)', async () => {
      const app = await startTestApp({
        redisUrl: redis.url,
        env: { KEY_PREFIX: PREFIX },
        imports: [QueueDashboardModule],
      });
      try {
        const answer = await get(app, '/admin/queues/api/queues');
        assert.equal(answer.status, 200);
        const { queues } = (await answer.json()) as QueuesAnswer;
        assert.deepEqual(queues.map((q) => q.name).sort(), ['batches', 'operations']);
      } finally {
        await app.close();
      }
    });
  });
});
