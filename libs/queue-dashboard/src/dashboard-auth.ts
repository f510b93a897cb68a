import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

/** Where the queue dashboard is served. */
export const QUEUE_DASHBOARD_PATH = '/admin/queues';
/** The cookie a browser gets after opening the dashboard once with `?token=`. */
export const DASHBOARD_COOKIE = 'tdxfleet_queue_dashboard';

/** What the dashboard needs of a request to decide. */
export interface DashboardRequest {
  readonly method: string;
  /** Path and query, as received. */
  readonly url: string;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  /** Whether the request came over TLS (the cookie is then `Secure`). */
  readonly secure: boolean;
}

/** Whether a request may see the dashboard. */
export type DashboardDecision =
  | { readonly kind: 'allow' }
  | { readonly kind: 'refuse'; readonly message: string }
  /** A valid `?token=`: set the cookie and send the browser to the same page without it. */
  | { readonly kind: 'login'; readonly location: string; readonly setCookie: string };

function sha256(value: string): Buffer {
  return createHash('sha256').update(value).digest();
}

function sameDigest(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

function header(request: DashboardRequest, name: string): string | undefined {
  const value = request.headers[name];
  return Array.isArray(value) ? value.join(', ') : value;
}

function cookieValue(request: DashboardRequest, name: string): string | undefined {
  for (const part of (header(request, 'cookie') ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/**
 * The dashboard's auth: the API's rule for mutating calls (with API_TOKEN set, an
 * `Authorization: Bearer <API_TOKEN>`; without it, open, the server being on loopback only),
 * extended for browsers, which cannot add that header: `?token=<API_TOKEN>` once gives an
 * HttpOnly, SameSite=Strict session cookie scoped to the dashboard's path. The cookie holds an
 * HMAC of the token, not the token, so it opens the dashboard and nothing else.
 */
export class DashboardAuth {
  private readonly bearer: Buffer | undefined;
  private readonly session: Buffer | undefined;

  constructor(apiToken: string | undefined) {
    if (apiToken !== undefined) {
      this.bearer = sha256(apiToken);
      this.session = createHmac('sha256', apiToken).update('tdx-fleet queue dashboard').digest();
    }
  }

  decide(request: DashboardRequest): DashboardDecision {
    if (this.bearer === undefined || this.session === undefined) return { kind: 'allow' };
    const authorization = header(request, 'authorization');
    if (authorization !== undefined) {
      const token = /^Bearer +(\S+) *$/i.exec(authorization)?.[1];
      if (token !== undefined && sameDigest(sha256(token), this.bearer)) return { kind: 'allow' };
      return { kind: 'refuse', message: 'the bearer token is not valid' };
    }
    const cookie = cookieValue(request, DASHBOARD_COOKIE);
    if (cookie !== undefined && sameDigest(Buffer.from(cookie, 'base64url'), this.session)) {
      return { kind: 'allow' };
    }
    const url = new URL(request.url, 'http://dashboard.invalid');
    const token = url.searchParams.get('token');
    const method = request.method.toUpperCase();
    if (token !== null && (method === 'GET' || method === 'HEAD')) {
      if (!sameDigest(sha256(token), this.bearer)) {
        return { kind: 'refuse', message: 'the token is not valid' };
      }
      url.searchParams.delete('token');
      const attributes = [
        `${DASHBOARD_COOKIE}=${this.session.toString('base64url')}`,
        `Path=${QUEUE_DASHBOARD_PATH}`,
        'HttpOnly',
        'SameSite=Strict',
        ...(request.secure ? ['Secure'] : []),
      ];
      return {
        kind: 'login',
        location: url.pathname + url.search,
        setCookie: attributes.join('; '),
      };
    }
    return {
      kind: 'refuse',
      message:
        `the queue dashboard needs an Authorization: Bearer token; in a browser, open ` +
        `${QUEUE_DASHBOARD_PATH}?token=<API_TOKEN> once`,
    };
  }
}
