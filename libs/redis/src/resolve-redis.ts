import { readFile, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { type AppConfig } from '#config';
import { Redis } from 'ioredis';
import { pingRedis, redactRedisUrl } from './ping-redis.js';
import { RedisServerNotFoundError, RedisUnavailableError } from './redis-errors.js';
import { type RedisLog } from './redis-log.js';
import {
  adoptRedisServer,
  DEFAULT_REDIS_SERVER_BINARY,
  isAlive,
  type RedisServerHandle,
  startRedisServer,
} from './redis-server.js';

/** Where the Redis in use came from. */
export type RedisSource = 'configured' | 'local' | 'private';

/** The Redis a process uses, and how to give it back when the process stops. */
export interface ResolvedRedis {
  readonly url: string;
  readonly source: RedisSource;
  /** Stops the private redis-server if we started one; a no-op otherwise. Idempotent. */
  stop(): Promise<void>;
}

export interface ResolveRedisOptions {
  /** Program started when no Redis answers. Default `redis-server`. */
  readonly redisServerBinary?: string;
  /** How long REDIS_URL may take to answer, to ride out a Redis that is still starting. */
  readonly configuredWaitMs?: number;
}

type RedisConfig = Pick<AppConfig, 'redisUrl' | 'localRedisUrl' | 'dataDir'>;

const STATE_FILE = 'private-server.json';

async function waitForPing(url: string, waitMs: number): Promise<string | undefined> {
  const deadline = performance.now() + waitMs;
  for (;;) {
    const result = await pingRedis(url, 1000);
    if (result.ok) return undefined;
    if (performance.now() >= deadline) return result.reason;
    await sleep(250);
  }
}

async function serverProcessId(url: string): Promise<number | undefined> {
  const client = new Redis(url, {
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  client.on('error', () => undefined);
  try {
    await client.connect();
    const info = await client.info('server');
    const match = /^process_id:(\d+)/m.exec(info);
    return match?.[1] === undefined ? undefined : Number(match[1]);
  } catch {
    return undefined;
  } finally {
    client.disconnect();
  }
}

/**
 * A private server left running by a process that died without stopping it (SIGKILL) still owns
 * the append-only file in `dir`; a second server on the same files would corrupt them, so we take
 * the running one over instead.
 */
async function adoptLeftover(dir: string): Promise<RedisServerHandle | undefined> {
  let state: unknown;
  try {
    state = JSON.parse(await readFile(join(dir, STATE_FILE), 'utf8'));
  } catch {
    return undefined;
  }
  if (typeof state !== 'object' || state === null) return undefined;
  const { port, pid } = state as Record<string, unknown>;
  if (typeof port !== 'number' || typeof pid !== 'number' || !isAlive(pid)) return undefined;
  const url = `redis://127.0.0.1:${port}`;
  if ((await serverProcessId(url)) !== pid) return undefined;
  return adoptRedisServer(url, port, pid);
}

/**
 * Finds the Redis this process should use: REDIS_URL when set (which must answer), else the local
 * default address when something answers PING there, else a private `redis-server` started under
 * `<DATA_DIR>/redis` with an append-only file.
 * @throws RedisUnavailableError when REDIS_URL is set but does not answer.
 * @throws RedisServerNotFoundError when a private server is needed but not installed.
 */
export async function resolveRedis(
  config: RedisConfig,
  log: RedisLog,
  options: ResolveRedisOptions = {},
): Promise<ResolvedRedis> {
  const noop = (): Promise<void> => Promise.resolve();
  if (config.redisUrl !== undefined) {
    const reason = await waitForPing(config.redisUrl, options.configuredWaitMs ?? 3000);
    if (reason !== undefined) {
      throw new RedisUnavailableError(
        `REDIS_URL=${redactRedisUrl(config.redisUrl)} does not answer PING (${reason}); ` +
          'start that Redis, or unset REDIS_URL to use a local or private one',
      );
    }
    log.info({ url: redactRedisUrl(config.redisUrl) }, 'using Redis from REDIS_URL');
    return { url: config.redisUrl, source: 'configured', stop: noop };
  }
  if ((await pingRedis(config.localRedisUrl, 500)).ok) {
    log.info({ url: redactRedisUrl(config.localRedisUrl) }, 'using the local Redis');
    return { url: config.localRedisUrl, source: 'local', stop: noop };
  }
  const dir = resolve(config.dataDir, 'redis');
  const leftover = await adoptLeftover(dir);
  if (leftover !== undefined) {
    log.warn(
      { url: leftover.url, pid: leftover.pid, dir },
      'taking over a private redis-server left running by an earlier process',
    );
    return { url: leftover.url, source: 'private', stop: () => leftover.stop() };
  }
  const binary = options.redisServerBinary ?? DEFAULT_REDIS_SERVER_BINARY;
  const server = await startRedisServer({ dir, log, binary }).catch((error: unknown) => {
    throw error instanceof RedisServerNotFoundError
      ? new RedisServerNotFoundError(binary, redactRedisUrl(config.localRedisUrl))
      : error;
  });
  await writeFile(join(dir, STATE_FILE), JSON.stringify({ port: server.port, pid: server.pid }));
  return {
    url: server.url,
    source: 'private',
    stop: async () => {
      await server.stop();
      await rm(join(dir, STATE_FILE), { force: true });
    },
  };
}
