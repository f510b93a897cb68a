import { type ArgumentsHost, Catch, type ExceptionFilter, Inject } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import { LOGGER } from '#logging';
import { type Logger } from 'pino';
import { toErrorResponse } from './error-response.js';

/** Answers every failed HTTP request, unknown routes included, with the one error shape. */
@Catch()
export class ErrorResponseFilter implements ExceptionFilter {
  constructor(
    private readonly adapterHost: HttpAdapterHost,
    @Inject(LOGGER) private readonly log: Logger,
  ) {}

  catch(exception: unknown, host: ArgumentsHost): void {
    if (host.getType() !== 'http') throw exception;
    const response = toErrorResponse(exception);
    if (response.unexpected) this.log.error({ err: exception }, 'request failed');
    const adapter = this.adapterHost.httpAdapter;
    const reply: unknown = host.switchToHttp().getResponse();
    for (const [name, value] of Object.entries(response.headers)) {
      adapter.setHeader(reply, name, value);
    }
    adapter.reply(reply, response.body, response.status);
  }
}
