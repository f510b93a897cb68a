import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Body, Controller, Get, HttpCode, Module, Post } from '@nestjs/common';
import { z } from 'zod';
import { startTestApp, type TestApp } from '../../../test/support/http-app.js';
import { startTestRedis, type TestRedis } from '../../../test/support/redis.js';

const TOKEN = 'test-token-0123456789';

/** A route that only these tests have, to exercise the guard and the error mapping. */
@Controller('test')
class ProbeController {
  @Post('echo')
  @HttpCode(200)
  echo(@Body() body: unknown): { received: unknown } {
    return { received: body };
  }

  @Post('validate')
  validate(@Body() body: unknown): { name: string } {
    return z.object({ name: z.string() }).parse(body);
  }

  @Get('boom')
  boom(): never {
    throw new Error('secret internals');
  }
}

@Module({ controllers: [ProbeController] })
class ProbeModule {}

interface Answer {
  readonly status: number;
  readonly headers: Headers;
  readonly body: unknown;
}

async function call(
  baseUrl: string,
  path: string,
  init: { method?: string; body?: string; headers?: Record<string, string> } = {},
): Promise<Answer> {
  const response = await fetch(`${baseUrl}${path}`, init);
  const text = await response.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: keep the text
  }
  return { status: response.status, headers: response.headers, body };
}

function postJson(token?: string): {
  method: string;
  body: string;
  headers: Record<string, string>;
} {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (token !== undefined) headers['authorization'] = `Bearer ${token}`;
  return { method: 'POST', body: JSON.stringify({ hello: 'fleet' }), headers };
}

function assertErrorShape(answer: Answer, status: number, code: string): void {
  assert.equal(answer.status, status, JSON.stringify(answer.body));
  const body = answer.body as { error?: { code?: unknown; message?: unknown } };
  assert.equal(body.error?.code, code);
  assert.equal(typeof body.error?.message, 'string');
  assert.deepEqual(Object.keys(body), ['error']);
}

describe('HTTP app', () => {
  let redis: TestRedis;
  before(async () => {
    redis = await startTestRedis();
  });
  after(async () => {
    await redis.stop();
  });

  describe('without API_TOKEN', () => {
    let app: TestApp;
    before(async () => {
      app = await startTestApp({
        redisUrl: redis.url,
        imports: [ProbeModule],
        openApi: { title: 'tdx-fleet test', description: 'test', version: '0.0.0' },
      });
    });
    after(async () => {
      await app.close();
    });

    it('GET /healthz answers ok', async () => {
      const answer = await call(app.baseUrl, '/healthz');
      assert.equal(answer.status, 200);
      assert.deepEqual(answer.body, { status: 'ok' });
    });

    it('GET /readyz answers ok while Redis answers', async () => {
      const answer = await call(app.baseUrl, '/readyz');
      assert.equal(answer.status, 200);
      assert.deepEqual(answer.body, { status: 'ok', checks: { redis: 'ok' } });
    });

    it('an unknown route is a 404 in the error shape', async () => {
      assertErrorShape(await call(app.baseUrl, '/v1/nothing-here'), 404, 'not_found');
      assertErrorShape(await call(app.baseUrl, '/healthz', { method: 'DELETE' }), 404, 'not_found');
    });

    it('a malformed URL is a 400 in the error shape', async () => {
      assertErrorShape(await call(app.baseUrl, '/%'), 400, 'bad_request');
    });

    it('malformed JSON is a 400 in the error shape', async () => {
      const answer = await call(app.baseUrl, '/test/echo', {
        method: 'POST',
        body: '{"hello": ',
        headers: { 'content-type': 'application/json' },
      });
      assertErrorShape(answer, 400, 'invalid_json');
    });

    it('a body that fails validation is a 400 with the issues', async () => {
      const answer = await call(app.baseUrl, '/test/validate', {
        method: 'POST',
        body: JSON.stringify({ name: 42 }),
        headers: { 'content-type': 'application/json' },
      });
      assertErrorShape(answer, 400, 'invalid_request');
      const details = (answer.body as { error: { details: { issues: { path: string }[] } } }).error
        .details;
      assert.equal(details.issues[0]?.path, 'name');
    });

    it('an unexpected error is a 500 that does not leak its message', async () => {
      const answer = await call(app.baseUrl, '/test/boom');
      assertErrorShape(answer, 500, 'internal_error');
      assert.doesNotMatch(JSON.stringify(answer.body), /secret internals/);
    });

    it('mutating calls need no token when API_TOKEN is unset', async () => {
      const answer = await call(app.baseUrl, '/test/echo', postJson());
      assert.equal(answer.status, 200);
      assert.deepEqual(answer.body, { received: { hello: 'fleet' } });
    });

    it('serves a valid OpenAPI document at /docs-json and the UI at /docs', async () => {
      const answer = await call(app.baseUrl, '/docs-json');
      assert.equal(answer.status, 200);
      const document = answer.body as {
        openapi: string;
        info: { title: string; version: string };
        paths: Record<string, Record<string, { responses: Record<string, unknown> }>>;
        components: { securitySchemes: Record<string, { type: string; scheme: string }> };
      };
      assert.match(document.openapi, /^3\.\d+\.\d+$/);
      assert.equal(document.info.title, 'tdx-fleet test');
      assert.equal(typeof document.info.version, 'string');
      assert.ok(document.paths['/healthz']?.['get']?.responses['200']);
      assert.ok(document.paths['/readyz']?.['get']?.responses['503']);
      for (const [path, operations] of Object.entries(document.paths)) {
        assert.ok(path.startsWith('/'), path);
        for (const operation of Object.values(operations)) {
          assert.ok(Object.keys(operation.responses).length > 0, `${path} has responses`);
        }
      }
      assert.deepEqual(
        Object.values(document.components.securitySchemes).map(({ type, scheme }) => [
          type,
          scheme,
        ]),
        [['http', 'bearer']],
      );
      const ui = await fetch(`${app.baseUrl}/docs`);
      assert.equal(ui.status, 200);
      assert.match(ui.headers.get('content-type') ?? '', /text\/html/);
      await ui.body?.cancel();
    });
  });

  describe('with API_TOKEN', () => {
    let app: TestApp;
    before(async () => {
      app = await startTestApp({
        redisUrl: redis.url,
        env: { API_TOKEN: TOKEN },
        imports: [ProbeModule],
      });
    });
    after(async () => {
      await app.close();
    });

    it('refuses a mutating call without a token', async () => {
      const answer = await call(app.baseUrl, '/test/echo', postJson());
      assertErrorShape(answer, 401, 'unauthorized');
      assert.equal(answer.headers.get('www-authenticate'), 'Bearer');
    });

    it('refuses a mutating call with a wrong token', async () => {
      assertErrorShape(
        await call(app.baseUrl, '/test/echo', postJson('wrong')),
        401,
        'unauthorized',
      );
      assertErrorShape(
        await call(app.baseUrl, '/test/echo', postJson(`${TOKEN}x`)),
        401,
        'unauthorized',
      );
      const basic = { ...postJson(), headers: { authorization: `Basic ${TOKEN}` } };
      assertErrorShape(await call(app.baseUrl, '/test/echo', basic), 401, 'unauthorized');
    });

    it('accepts a mutating call with the token', async () => {
      const answer = await call(app.baseUrl, '/test/echo', postJson(TOKEN));
      assert.equal(answer.status, 200);
      assert.deepEqual(answer.body, { received: { hello: 'fleet' } });
    });

    it('leaves reads open', async () => {
      assert.equal((await call(app.baseUrl, '/healthz')).status, 200);
      assert.equal((await call(app.baseUrl, '/readyz')).status, 200);
    });
  });

  describe('when Redis goes away', () => {
    it('GET /readyz is a 503 in the error shape, /healthz stays 200', async () => {
      const doomed = await startTestRedis();
      const app = await startTestApp({ redisUrl: doomed.url });
      try {
        assert.equal((await call(app.baseUrl, '/readyz')).status, 200);
        await doomed.stop();
        const answer = await call(app.baseUrl, '/readyz');
        assertErrorShape(answer, 503, 'not_ready');
        const details = (answer.body as { error: { details: { checks: { redis: string } } } }).error
          .details;
        assert.notEqual(details.checks.redis, 'ok');
        assert.equal((await call(app.baseUrl, '/healthz')).status, 200);
      } finally {
        await app.close();
      }
    });
  });
});
