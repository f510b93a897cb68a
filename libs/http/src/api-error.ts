/** The one JSON shape of every error response. */
export interface ErrorBody {
  readonly error: {
    readonly code: string;
    readonly message: string;
    readonly details?: unknown;
  };
}

/**
 * An error that already knows its HTTP answer. Only the HTTP layer (guards, the health
 * controller) throws it; services throw domain errors, which the filter maps by code.
 */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details?: unknown,
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** The process is up but cannot serve yet: Redis (or another dependency) does not answer. */
export class NotReadyError extends Error {
  readonly code = 'not_ready';

  constructor(
    message: string,
    readonly details: unknown,
  ) {
    super(message);
    this.name = 'NotReadyError';
  }
}
