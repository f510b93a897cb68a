import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { startTestRedis, type TestRedis } from '../../../test/support/redis.js';
import { makeTempDir } from '../../../test/support/temp-dir.js';
import { findFreePort } from './free-port.js';
import { pingRedis } from './ping-redis.js';
import { RedisServerNotFoundError, RedisUnavailableError } from './redis-errors.js';
import { silentRedisLog } from './redis-log.js';
import { isAlive } from './redis-server.js';
import { resolveRedis } from './resolve-redis.js';

async function closedPortUrl(): Promise<string> {
  return `redis://127.0.0.1:${await findFreePort()}`;
}

describe('resolveRedis', () => {
  let redis: TestRedis;
  before(async () => {
    redis = await startTestRedis();
  });
  after(async () => {
    await redis.stop();
  });

  it('uses REDIS_URL when it answers', async () => {
    const dataDir = await makeTempDir('resolve');
    const resolved = await resolveRedis(
      { redisUrl: redis.url, localRedisUrl: await closedPortUrl(), dataDir: dataDir.path },
      silentRedisLog,
    );
    assert.equal(resolved.url, redis.url);
    assert.equal(resolved.source, 'configured');
    await resolved.stop();
    assert.ok((await pingRedis(redis.url)).ok, 'stop() leaves a configured Redis alone');
    await dataDir.remove();
  });

  it('fails naming REDIS_URL when it does not answer', async () => {
    const url = await closedPortUrl();
    await assert.rejects(
      resolveRedis({ redisUrl: url, localRedisUrl: redis.url, dataDir: '.' }, silentRedisLog, {
        configuredWaitMs: 0,
      }),
      (error: unknown) => {
        assert.ok(error instanceof RedisUnavailableError);
        assert.match(error.message, /REDIS_URL=redis:\/\/127\.0\.0\.1:\d+/);
        return true;
      },
    );
  });

  it('uses the local default Redis when it answers', async () => {
    const resolved = await resolveRedis(
      { redisUrl: undefined, localRedisUrl: redis.url, dataDir: '.' },
      silentRedisLog,
    );
    assert.equal(resolved.source, 'local');
    assert.equal(resolved.url, redis.url);
  });

  it('starts a private redis-server under DATA_DIR when nothing answers, and stops it', async () => {
    const dataDir = await makeTempDir('resolve');
    const resolved = await resolveRedis(
      { redisUrl: undefined, localRedisUrl: await closedPortUrl(), dataDir: dataDir.path },
      silentRedisLog,
    );
    try {
      assert.equal(resolved.source, 'private');
      assert.match(resolved.url, /^redis:\/\/127\.0\.0\.1:\d+$/);
      assert.ok((await pingRedis(resolved.url)).ok);
      assert.ok(
        existsSync(`${dataDir.path}/redis/appendonlydir`),
        'append-only file under DATA_DIR',
      );
    } finally {
      await resolved.stop();
    }
    assert.equal((await pingRedis(resolved.url, 300)).ok, false, 'stopped');
    await dataDir.remove();
  });

  it('takes over a private server left running by an earlier process', async () => {
    const dataDir = await makeTempDir('resolve');
    const config = {
      redisUrl: undefined,
      localRedisUrl: await closedPortUrl(),
      dataDir: dataDir.path,
    };
    const first = await resolveRedis(config, silentRedisLog);
    const second = await resolveRedis(config, silentRedisLog);
    try {
      assert.equal(second.url, first.url);
    } finally {
      await second.stop();
    }
    assert.equal((await pingRedis(first.url, 300)).ok, false, 'stopped by its new owner');
    await first.stop();
    await dataDir.remove();
  });

  it('says how to get a Redis when redis-server is not installed', async () => {
    const dataDir = await makeTempDir('resolve');
    await assert.rejects(
      resolveRedis(
        { redisUrl: undefined, localRedisUrl: await closedPortUrl(), dataDir: dataDir.path },
        silentRedisLog,
        { redisServerBinary: 'redis-server-that-does-not-exist' },
      ),
      (error: unknown) => {
        assert.ok(error instanceof RedisServerNotFoundError);
        assert.match(error.message, /apt-get install redis-server/);
        assert.match(error.message, /REDIS_URL/);
        return true;
      },
    );
    await dataDir.remove();
  });
});

describe('startTestRedis', () => {
  it('starts a server that answers and is gone after stop()', async () => {
    const redis = await startTestRedis();
    assert.ok((await pingRedis(redis.url)).ok);
    await redis.stop();
    assert.equal((await pingRedis(redis.url, 300)).ok, false);
  });

  it('exposes process liveness for the stop checks', () => {
    assert.equal(isAlive(process.pid), true);
  });
});
