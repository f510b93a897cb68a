import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startRedisServer } from '#redis';

/** A throwaway redis-server for one test file. */
export interface TestRedis {
  readonly url: string;
  readonly port: number;
  readonly pid: number;
  /** Stops the server and removes its directory. */
  stop(): Promise<void>;
}

/** Starts a redis-server on a free loopback port with a temporary directory and no persistence. */
export async function startTestRedis(): Promise<TestRedis> {
  const dir = await mkdtemp(join(tmpdir(), 'tdxfleet-test-redis-'));
  try {
    const server = await startRedisServer({ dir, appendOnly: false });
    return {
      url: server.url,
      port: server.port,
      pid: server.pid,
      stop: async () => {
        await server.stop();
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}
