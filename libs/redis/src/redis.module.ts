import { type DynamicModule, Global, Module } from '@nestjs/common';
import { RedisConnection, RESOLVED_REDIS } from './redis-connection.js';
import { type ResolvedRedis } from './resolve-redis.js';

/** Provides the `RedisConnection` for the Redis that `resolveRedis` found, to every module. */
@Global()
@Module({})
export class RedisModule {
  static forRoot(resolved: ResolvedRedis): DynamicModule {
    return {
      module: RedisModule,
      providers: [{ provide: RESOLVED_REDIS, useValue: resolved }, RedisConnection],
      exports: [RESOLVED_REDIS, RedisConnection],
    };
  }
}
