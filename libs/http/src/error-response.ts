import { HttpException } from '@nestjs/common';
import { ZodError } from 'zod';
import { ApiError, type ErrorBody } from './api-error.js';

/**
 * The HTTP status of each domain error code: the one place that maps errors to statuses. A
 * domain error is any Error with a string `code` listed here (and optional `details`).
 */
export const STATUS_BY_ERROR_CODE: Readonly<Record<string, number>> = {
  invalid_request: 400,
  not_found: 404,
  vm_busy: 409,
  vm_state_conflict: 409,
  kernel_feature_missing: 409,
  job_finished: 409,
  already_exists: 409,
  idempotency_conflict: 409,
  no_capacity: 422,
  not_ready: 503,
  redis_unavailable: 503,
};

const CODE_BY_STATUS: Readonly<Record<number, string>> = {
  400: 'bad_request',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  405: 'method_not_allowed',
  406: 'not_acceptable',
  408: 'request_timeout',
  409: 'conflict',
  413: 'payload_too_large',
  415: 'unsupported_media_type',
  422: 'unprocessable',
  429: 'too_many_requests',
  500: 'internal_error',
  503: 'unavailable',
};

/** A response to send: status, body, and any headers it needs. */
export interface ErrorResponse {
  readonly status: number;
  readonly body: ErrorBody;
  readonly headers: Readonly<Record<string, string>>;
  /** Whether this is a fault of ours that deserves an error log line. */
  readonly unexpected: boolean;
}

function response(
  status: number,
  code: string,
  message: string,
  details?: unknown,
  headers: Readonly<Record<string, string>> = {},
): ErrorResponse {
  const error = details === undefined ? { code, message } : { code, message, details };
  return {
    status,
    body: { error },
    headers,
    unexpected: status >= 500 && code === 'internal_error',
  };
}

function codeOf(status: number): string {
  return CODE_BY_STATUS[status] ?? `http_${status}`;
}

function causeCode(exception: HttpException): unknown {
  const cause: unknown = exception.cause;
  return typeof cause === 'object' && cause !== null
    ? (cause as { code?: unknown }).code
    : undefined;
}

function httpExceptionMessage(exception: HttpException): string {
  const payload = exception.getResponse();
  if (typeof payload === 'string') return payload;
  if (typeof payload === 'object' && payload !== null && 'message' in payload) {
    const { message } = payload;
    if (typeof message === 'string') return message;
    if (Array.isArray(message)) return message.map(String).join('; ');
  }
  return exception.message;
}

function domainError(
  exception: unknown,
): { code: string; status: number; message: string; details?: unknown } | undefined {
  if (!(exception instanceof Error)) return undefined;
  const { code, details } = exception as Error & { code?: unknown; details?: unknown };
  if (typeof code !== 'string') return undefined;
  const status = STATUS_BY_ERROR_CODE[code];
  if (status === undefined) return undefined;
  return { code, status, message: exception.message, details };
}

/**
 * ioredis gave up on a command because Redis does not answer (retries exhausted, timed out, or
 * the connection is down): the request could not be served now, which is not a fault of ours.
 */
function isRedisUnreachable(exception: unknown): boolean {
  if (!(exception instanceof Error)) return false;
  if (exception.name === 'MaxRetriesPerRequestError') return true;
  return /^(Connection is closed|Command timed out|Stream isn't writeable)/.test(exception.message);
}

/** Turns anything thrown while serving a request into the one error shape. */
export function toErrorResponse(exception: unknown): ErrorResponse {
  if (exception instanceof ApiError) {
    return response(
      exception.status,
      exception.code,
      exception.message,
      exception.details,
      exception.headers,
    );
  }
  const domain = domainError(exception);
  if (domain !== undefined) {
    return response(domain.status, domain.code, domain.message, domain.details);
  }
  if (isRedisUnreachable(exception)) {
    return response(503, 'redis_unavailable', 'Redis does not answer; try again later');
  }
  if (exception instanceof ZodError) {
    const issues = exception.issues.map((issue) => ({
      path: issue.path.map(String).join('.'),
      message: issue.message,
    }));
    return response(400, 'invalid_request', 'the request is invalid', { issues });
  }
  if (exception instanceof HttpException) {
    const status = exception.getStatus();
    const cause = causeCode(exception);
    if (cause === 'FST_ERR_CTP_INVALID_JSON_BODY' || cause === 'FST_ERR_CTP_EMPTY_JSON_BODY') {
      return response(400, 'invalid_json', httpExceptionMessage(exception));
    }
    if (status >= 500) return response(status, codeOf(status), 'internal error');
    return response(status, codeOf(status), httpExceptionMessage(exception));
  }
  return response(500, 'internal_error', 'internal error');
}
