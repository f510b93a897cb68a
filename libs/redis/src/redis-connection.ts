import { Inject, Injectable, type OnApplicationShutdown, type OnModuleInit } from '@nestjs/common';
import { LOGGER } from '#logging';
import { Redis } from 'ioredis';
import { type Logger } from 'pino';
import { type PingResult, redactRedisUrl } from './ping-redis.js';
import { type ResolvedRedis } from './resolve-redis.js';

/** Injection token of the `ResolvedRedis` the process runs against. */
export const RESOLVED_REDIS = Symbol('RESOLVED_REDIS');

const QUIT_TIMEOUT_MS = 2000;

/**
 * The process's shared Redis client, and the owner of the Redis lease: on shutdown it closes the
 * client and then stops the private redis-server, if this process started one. Its module is the
 * deepest of the tree, so Nest shuts it down after every module that uses Redis.
 */
@Injectable()
export class RedisConnection implements OnModuleInit, OnApplicationShutdown {
  private readonly redis: Redis;
  private closed = false;

  constructor(
    @Inject(RESOLVED_REDIS) private readonly resolved: ResolvedRedis,
    @Inject(LOGGER) private readonly log: Logger,
  ) {
    // Only the client object: it connects in onModuleInit, so other providers can hold it from
    // their constructors while no I/O happens before the application starts.
    this.redis = new Redis(resolved.url, {
      lazyConnect: true,
      enableOfflineQueue: false,
      connectTimeout: 2000,
      commandTimeout: 2000,
      maxRetriesPerRequest: 1,
      retryStrategy: (attempt) => Math.min(attempt * 200, 2000),
    });
    let lastError = '';
    this.redis.on('error', (error: Error) => {
      // Logged once per distinct failure: a Redis that is down would otherwise flood the log.
      if (error.message === lastError) return;
      lastError = error.message;
      this.log.warn({ err: error, url: redactRedisUrl(resolved.url) }, 'Redis connection error');
    });
    this.redis.on('ready', () => (lastError = ''));
  }

  get url(): string {
    return this.resolved.url;
  }

  /**
   * The shared client (connected once the module has initialised). It has no offline queue:
   * while Redis is unreachable, commands fail fast instead of piling up.
   */
  get client(): Redis {
    return this.redis;
  }

  async onModuleInit(): Promise<void> {
    await this.redis.connect();
  }

  /** One PING within the command timeout. */
  async ping(): Promise<PingResult> {
    try {
      await this.client.ping();
      return { ok: true };
    } catch (error) {
      return { ok: false, reason: error instanceof Error ? error.message : String(error) };
    }
  }

  async onApplicationShutdown(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const quit = this.redis.quit().catch(() => undefined);
    const timer = new Promise<void>((resolve) => setTimeout(resolve, QUIT_TIMEOUT_MS).unref());
    await Promise.race([quit, timer]);
    this.redis.disconnect();
    if (this.resolved.source === 'private') this.log.info('stopping the private redis-server');
    await this.resolved.stop();
  }
}
