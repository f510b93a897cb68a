import { type DynamicModule, Global, Module } from '@nestjs/common';
import { APP_CONFIG, type AppConfig } from '#config';
import { LoggingModule } from '#logging';
import { RedisModule, type ResolvedRedis } from '#redis';
import { type Logger } from 'pino';
import { HttpModule } from './http.module.js';

/** What a process has before Nest starts: its configuration, logger and Redis. */
export interface ProcessContext {
  readonly config: AppConfig;
  readonly logger: Logger;
  readonly redis: ResolvedRedis;
}

/**
 * The root of every app's module tree: configuration, logging, Redis and the shared HTTP module.
 * Feature modules of an app sit above it and inject `APP_CONFIG`, `LOGGER` and `RedisConnection`.
 */
@Global()
@Module({})
export class CoreModule {
  static forRoot(context: ProcessContext): DynamicModule {
    return {
      module: CoreModule,
      imports: [
        LoggingModule.forRoot(context.logger),
        RedisModule.forRoot(context.redis),
        HttpModule,
      ],
      providers: [{ provide: APP_CONFIG, useValue: context.config }],
      exports: [APP_CONFIG, HttpModule],
    };
  }
}
