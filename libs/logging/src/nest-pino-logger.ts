import { type LoggerService } from '@nestjs/common';
import { type Logger } from 'pino';

type Level = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace';

/** Sends Nest's own messages (start-up, routes, errors) through the process's pino logger. */
export class NestPinoLogger implements LoggerService {
  constructor(private readonly logger: Logger) {}

  log(message: unknown, ...params: unknown[]): void {
    this.write('info', message, params);
  }

  error(message: unknown, ...params: unknown[]): void {
    // Nest calls error(message, stack?, context?).
    const [stack, ...rest] = params;
    if (typeof stack === 'string' && rest.length > 0) {
      this.write('error', message, rest, { stack });
    } else {
      this.write('error', message, params);
    }
  }

  warn(message: unknown, ...params: unknown[]): void {
    this.write('warn', message, params);
  }

  debug(message: unknown, ...params: unknown[]): void {
    this.write('debug', message, params);
  }

  verbose(message: unknown, ...params: unknown[]): void {
    this.write('trace', message, params);
  }

  fatal(message: unknown, ...params: unknown[]): void {
    this.write('fatal', message, params);
  }

  private write(
    level: Level,
    message: unknown,
    params: unknown[],
    extra: Record<string, unknown> = {},
  ): void {
    // The last string parameter is Nest's context (the class that logged).
    const last = params.at(-1);
    const context = typeof last === 'string' ? last : undefined;
    const fields: Record<string, unknown> = { ...extra };
    if (context !== undefined) fields['context'] = context;
    if (message instanceof Error) {
      this.logger[level]({ ...fields, err: message }, message.message);
    } else if (typeof message === 'string') {
      this.logger[level](fields, message);
    } else {
      this.logger[level]({ ...fields, data: message }, 'log');
    }
  }
}
