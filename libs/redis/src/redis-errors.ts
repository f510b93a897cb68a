/** The Redis named by REDIS_URL (or another required Redis) does not answer. */
export class RedisUnavailableError extends Error {
  readonly code = 'redis_unavailable';

  constructor(message: string) {
    super(message);
    this.name = 'RedisUnavailableError';
  }
}

/** No Redis was configured or answering, and no `redis-server` binary can be started. */
export class RedisServerNotFoundError extends Error {
  readonly code = 'redis_server_not_found';

  constructor(binary: string, localRedisUrl?: string) {
    const local = localRedisUrl === undefined ? 'the local default address' : localRedisUrl;
    super(
      `No Redis is available: REDIS_URL is unset, nothing answers on ${local}, ` +
        `and "${binary}" is not on PATH to start a private one. Either install Redis ` +
        `(on Debian or Ubuntu: sudo apt-get install redis-server) or point REDIS_URL at a ` +
        `running Redis (for example REDIS_URL=redis://127.0.0.1:6379).`,
    );
    this.name = 'RedisServerNotFoundError';
  }
}

/** A `redis-server` process was spawned but did not come up. */
export class RedisServerStartError extends Error {
  readonly code = 'redis_server_start_failed';

  constructor(message: string) {
    super(message);
    this.name = 'RedisServerStartError';
  }
}
