import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { findFreePort, isAlive, pingRedis } from '#redis';
import { startTestRedis, type TestRedis } from '../../../test/support/redis.js';
import { spawnService, waitForStatus } from '../../../test/support/service-process.js';
import { makeTempDir } from '../../../test/support/temp-dir.js';

const FLEETD = 'dist/apps/fleetd/src/main.js';
const API = 'dist/apps/api/src/main.js';
const WORKER = 'dist/apps/worker/src/main.js';
const START_MS = 20_000;
const SHUTDOWN_TIMEOUT_MS = 5_000;

async function closedRedisUrl(): Promise<string> {
  return `redis://127.0.0.1:${await findFreePort()}`;
}

describe('processes', () => {
  let redis: TestRedis;
  before(async () => {
    redis = await startTestRedis();
  });
  after(async () => {
    await redis.stop();
  });

  const services: Array<[string, string, string]> = [
    ['fleetd', FLEETD, 'PORT'],
    ['api', API, 'PORT'],
    ['worker', WORKER, 'WORKER_PORT'],
  ];
  for (const [name, script, portVariable] of services) {
    it(`${name} with REDIS_URL gets ready and exits 0 on SIGTERM`, async () => {
      const port = await findFreePort();
      const service = spawnService(script, {
        [portVariable]: String(port),
        REDIS_URL: redis.url,
        LOCAL_REDIS_URL: await closedRedisUrl(),
        SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS),
      });
      try {
        await waitForStatus(`http://127.0.0.1:${port}/readyz`, 200, START_MS, () => {
          return service.child.exitCode === null;
        });
        const health = await fetch(`http://127.0.0.1:${port}/healthz`);
        assert.deepEqual(await health.json(), { status: 'ok' });
        service.child.kill('SIGTERM');
        assert.equal(await service.exited(SHUTDOWN_TIMEOUT_MS + 2000), 0, service.stderr());
      } finally {
        service.killGroup();
      }
      assert.ok((await pingRedis(redis.url)).ok, 'a configured Redis is left running');
      const lines = service
        .stdout()
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as { service?: string; msg?: string });
      assert.ok(
        lines.every((line) => line.service === name),
        'JSON log lines on stdout',
      );
      assert.ok(lines.some((line) => line.msg === `${name} is listening`));
    });
  }

  it('fleetd without a Redis starts a private redis-server and stops it on SIGTERM', async () => {
    const dataDir = await makeTempDir('fleetd');
    const port = await findFreePort();
    const service = spawnService(FLEETD, {
      PORT: String(port),
      LOCAL_REDIS_URL: await closedRedisUrl(),
      DATA_DIR: dataDir.path,
      SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS),
    });
    let redisPid: number | undefined;
    try {
      await waitForStatus(`http://127.0.0.1:${port}/readyz`, 200, START_MS, () => {
        return service.child.exitCode === null;
      });
      const redisDir = join(dataDir.path, 'redis');
      redisPid = Number((await readFile(join(redisDir, 'redis-server.pid'), 'utf8')).trim());
      assert.ok(isAlive(redisPid), 'the private redis-server runs');
      assert.ok(existsSync(join(redisDir, 'appendonlydir')), 'with its append-only file');
      service.child.kill('SIGTERM');
      assert.equal(await service.exited(SHUTDOWN_TIMEOUT_MS + 2000), 0, service.stderr());
      assert.equal(isAlive(redisPid), false, 'the private redis-server is gone');
    } finally {
      service.killGroup();
      if (redisPid !== undefined && isAlive(redisPid)) process.kill(redisPid, 'SIGKILL');
      await dataDir.remove();
    }
  });

  it('exits 1 when the shutdown outlasts SHUTDOWN_TIMEOUT_MS', async () => {
    const frozen = await startTestRedis();
    const port = await findFreePort();
    const service = spawnService(FLEETD, {
      PORT: String(port),
      REDIS_URL: frozen.url,
      SHUTDOWN_TIMEOUT_MS: '300',
    });
    const redisPid = frozen.pid;
    try {
      await waitForStatus(`http://127.0.0.1:${port}/readyz`, 200, START_MS, () => {
        return service.child.exitCode === null;
      });
      // A Redis that stops answering makes closing the connection hang past the deadline.
      process.kill(redisPid, 'SIGSTOP');
      service.child.kill('SIGTERM');
      assert.equal(await service.exited(5000), 1);
      assert.match(service.stdout(), /did not finish within SHUTDOWN_TIMEOUT_MS/);
    } finally {
      process.kill(redisPid, 'SIGCONT');
      service.killGroup();
      await frozen.stop();
    }
  });

  it('refuses a bad configuration with exit code 2 and one line naming the variable', async () => {
    const service = spawnService(FLEETD, { PORT: 'eighty' });
    assert.equal(await service.exited(START_MS), 2);
    const lines = service.stderr().trim().split('\n');
    assert.equal(lines.length, 1, service.stderr());
    assert.match(lines[0] ?? '', /PORT="eighty"/);
  });
});
