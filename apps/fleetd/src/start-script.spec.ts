import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { findFreePort, isAlive } from '#redis';
import {
  spawnCommand,
  spawnService,
  waitForStatus,
} from '../../../test/support/service-process.js';
import { makeTempDir } from '../../../test/support/temp-dir.js';

describe('npm start', () => {
  it('builds, runs fleetd with its own redis-server, and stops both on SIGTERM', async () => {
    const dataDir = await makeTempDir('start');
    const port = await findFreePort();
    // Through npm, as a user runs it: npm passes SIGTERM on to the script it runs.
    const start = spawnCommand('npm', ['start', '--silent'], {
      PORT: String(port),
      LOCAL_REDIS_URL: `redis://127.0.0.1:${await findFreePort()}`,
      DATA_DIR: dataDir.path,
    });
    let redisPid: number | undefined;
    try {
      await waitForStatus(`http://127.0.0.1:${port}/readyz`, 200, 120_000, () => {
        return start.child.exitCode === null;
      });
      const pidFile = join(dataDir.path, 'redis', 'redis-server.pid');
      redisPid = Number((await readFile(pidFile, 'utf8')).trim());
      assert.ok(isAlive(redisPid));
      start.child.kill('SIGTERM');
      assert.equal(await start.exited(15_000), 0, start.stderr());
      assert.equal(isAlive(redisPid), false, 'the private redis-server is gone');
    } finally {
      start.killGroup();
      if (redisPid !== undefined && isAlive(redisPid)) process.kill(redisPid, 'SIGKILL');
      await dataDir.remove();
    }
  });

  it('refuses an unknown process name', async () => {
    const start = spawnService('scripts/start.mjs', {}, ['nope']);
    assert.equal(await start.exited(15_000), 2);
    assert.match(start.stderr(), /unknown process "nope"/);
  });
});
