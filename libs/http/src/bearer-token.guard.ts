import { createHash, timingSafeEqual } from 'node:crypto';
import { type CanActivate, type ExecutionContext, Inject, Injectable } from '@nestjs/common';
import { APP_CONFIG, type AppConfig } from '#config';
import { ApiError } from './api-error.js';

const MUTATING_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

interface RequestLike {
  readonly method: string;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
}

function digest(token: string): Buffer {
  // Equal-length digests let timingSafeEqual compare tokens of any length.
  return createHash('sha256').update(token).digest();
}

/**
 * With API_TOKEN set, every mutating request needs `Authorization: Bearer <API_TOKEN>`; reads stay
 * open. Without API_TOKEN the server only listens on loopback (enforced by the configuration).
 */
@Injectable()
export class BearerTokenGuard implements CanActivate {
  private readonly expected: Buffer | undefined;

  constructor(@Inject(APP_CONFIG) config: AppConfig) {
    this.expected = config.apiToken === undefined ? undefined : digest(config.apiToken);
  }

  canActivate(context: ExecutionContext): boolean {
    if (this.expected === undefined || context.getType() !== 'http') return true;
    const request = context.switchToHttp().getRequest<RequestLike>();
    if (!MUTATING_METHODS.has(request.method.toUpperCase())) return true;
    const header = request.headers['authorization'];
    const token = typeof header === 'string' ? /^Bearer +(\S+) *$/i.exec(header)?.[1] : undefined;
    if (token === undefined || !timingSafeEqual(digest(token), this.expected)) {
      throw new ApiError(
        401,
        'unauthorized',
        token === undefined
          ? 'this call needs an Authorization: Bearer token'
          : 'the bearer token is not valid',
        undefined,
        { 'WWW-Authenticate': 'Bearer' },
      );
    }
    return true;
  }
}
