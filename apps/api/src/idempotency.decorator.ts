import { createParamDecorator, type ExecutionContext } from '@nestjs/common';
import { type Idempotency } from '#queue';
import { z } from 'zod';
import { invalidRequest } from './zod-validation.pipe.js';

/** The request header that makes a job-creating POST safe to retry. */
export const IDEMPOTENCY_KEY_HEADER = 'Idempotency-Key';
/** The response header of an answer replayed for a repeated Idempotency-Key. */
export const IDEMPOTENT_REPLAYED_HEADER = 'Idempotent-Replayed';

export const idempotencyKeySchema = z
  .string()
  .regex(/^[\x20-\x7e]{1,200}$/, 'must be 1 to 200 printable ASCII characters');

interface RequestLike {
  readonly method: string;
  readonly url: string;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
  readonly body?: unknown;
}

/** JSON with object keys sorted at every level: equal values give equal text. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (typeof value === 'object' && value !== null) {
    const entries = Object.entries(value)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`);
    return `{${entries.join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/**
 * The request's Idempotency-Key and what the request was (method, path, canonical body), or
 * undefined without the header; a malformed key is a 400.
 */
export function idempotencyOf(request: RequestLike): Idempotency | undefined {
  const header = request.headers[IDEMPOTENCY_KEY_HEADER.toLowerCase()];
  if (header === undefined) return undefined;
  const parsed = idempotencyKeySchema.safeParse(header);
  if (!parsed.success) {
    throw invalidRequest(
      'header',
      parsed.error.issues.map((issue) => ({ ...issue, path: [IDEMPOTENCY_KEY_HEADER] })),
    );
  }
  const path = request.url.split('?')[0] ?? request.url;
  return {
    key: parsed.data,
    fingerprint: `${request.method.toUpperCase()} ${path} ${canonicalJson(request.body)}`,
  };
}

/** The `Idempotency` of the request (see {@link idempotencyOf}). */
export const IdempotencyKey = createParamDecorator(
  (_data: unknown, context: ExecutionContext): Idempotency | undefined =>
    idempotencyOf(context.switchToHttp().getRequest<RequestLike>()),
);

/** The part of a reply a controller touches: its headers. */
export interface ReplyHeaders {
  header(name: string, value: string): unknown;
}

/** Marks an answer that repeats the one given to the first request with the same key. */
export function markReplayed(reply: ReplyHeaders, replayed: boolean): void {
  if (replayed) reply.header(IDEMPOTENT_REPLAYED_HEADER, 'true');
}
