import { type DynamicModule, Global, Module } from '@nestjs/common';
import { type Logger } from 'pino';
import { LOGGER } from './create-logger.js';

/** Provides the process's pino logger under `LOGGER` to every module. */
@Global()
@Module({})
export class LoggingModule {
  static forRoot(logger: Logger): DynamicModule {
    return {
      module: LoggingModule,
      providers: [{ provide: LOGGER, useValue: logger }],
      exports: [LOGGER],
    };
  }
}
