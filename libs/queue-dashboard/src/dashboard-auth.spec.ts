import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  DASHBOARD_COOKIE,
  DashboardAuth,
  type DashboardDecision,
  type DashboardRequest,
} from './dashboard-auth.js';

const TOKEN = 'dashboard-token-0123';

function request(
  url: string,
  headers: Record<string, string> = {},
  method = 'GET',
  secure = false,
): DashboardRequest {
  return { method, url, headers, secure };
}

/** The cookie a valid `?token=` hands out, as a browser sends it back. */
function sessionCookie(auth: DashboardAuth): string {
  const decision = auth.decide(request(`/admin/queues?token=${TOKEN}`));
  assert.equal(decision.kind, 'login');
  return decision.setCookie.split(';')[0] ?? '';
}

describe('DashboardAuth', () => {
  it('lets everything through without API_TOKEN (the server is on loopback then)', () => {
    const auth = new DashboardAuth(undefined);
    for (const url of ['/admin/queues', '/admin/queues/api/queues', '/admin/queues?token=x']) {
      assert.deepEqual(auth.decide(request(url)), { kind: 'allow' });
    }
  });

  const auth = new DashboardAuth(TOKEN);
  const cookie = sessionCookie(auth);
  // [what, request, decision kind, text the refusal must contain]
  const cases: Array<[string, DashboardRequest, DashboardDecision['kind'], string?]> = [
    ['no credentials', request('/admin/queues'), 'refuse', '?token=<API_TOKEN>'],
    ['no credentials on an API route', request('/admin/queues/api/queues'), 'refuse'],
    ['the bearer token', request('/admin/queues', { authorization: `Bearer ${TOKEN}` }), 'allow'],
    [
      'the bearer token, any case of the scheme',
      request('/admin/queues/api/queues', { authorization: `bearer ${TOKEN}` }),
      'allow',
    ],
    [
      'a wrong bearer token',
      request('/admin/queues', { authorization: `Bearer ${TOKEN}x` }),
      'refuse',
      'not valid',
    ],
    [
      'a wrong bearer token with a good cookie',
      request('/admin/queues', { authorization: 'Bearer nope', cookie }),
      'refuse',
    ],
    ['Basic auth', request('/admin/queues', { authorization: `Basic ${TOKEN}` }), 'refuse'],
    ['the session cookie', request('/admin/queues/api/queues', { cookie }), 'allow'],
    [
      'the session cookie among others',
      request('/admin/queues', { cookie: `a=1; ${cookie}; b=2` }),
      'allow',
    ],
    [
      'the raw token as the cookie',
      request('/admin/queues', { cookie: `${DASHBOARD_COOKIE}=${TOKEN}` }),
      'refuse',
    ],
    ['an empty cookie', request('/admin/queues', { cookie: `${DASHBOARD_COOKIE}=` }), 'refuse'],
    ['the token in the query', request(`/admin/queues?token=${TOKEN}`), 'login'],
    ['a wrong token in the query', request('/admin/queues?token=guess'), 'refuse', 'not valid'],
    [
      'the token in the query of a POST',
      request(`/admin/queues/api/queues/pause?token=${TOKEN}`, {}, 'PUT'),
      'refuse',
    ],
  ];
  for (const [what, req, kind, text] of cases) {
    it(`${kind}s ${what}`, () => {
      const decision = auth.decide(req);
      assert.equal(decision.kind, kind);
      if (text !== undefined && decision.kind === 'refuse') {
        assert.ok(decision.message.includes(text), decision.message);
      }
      if (decision.kind === 'refuse') assert.ok(!decision.message.includes(TOKEN));
    });
  }

  it('logs a browser in with an HttpOnly SameSite=Strict cookie and drops the token from the URL', () => {
    const decision = auth.decide(request(`/admin/queues/queue/operations?token=${TOKEN}&page=2`));
    assert.equal(decision.kind, 'login');
    assert.equal(decision.location, '/admin/queues/queue/operations?page=2');
    const [pair, ...attributes] = decision.setCookie.split('; ');
    assert.deepEqual(attributes, ['Path=/admin/queues', 'HttpOnly', 'SameSite=Strict']);
    assert.ok(pair?.startsWith(`${DASHBOARD_COOKIE}=`));
    assert.ok(!decision.setCookie.includes(TOKEN), 'the cookie is not the token');
    const secure = auth.decide(request(`/admin/queues?token=${TOKEN}`, {}, 'GET', true));
    assert.equal(secure.kind, 'login');
    assert.match(secure.setCookie, /; Secure$/);
    assert.equal(secure.location, '/admin/queues');
  });

  it('gives a cookie that only opens the dashboard of the same token', () => {
    const other = new DashboardAuth(`${TOKEN}-other`);
    assert.equal(other.decide(request('/admin/queues', { cookie })).kind, 'refuse');
  });
});
