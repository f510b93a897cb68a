import { spawn } from 'node:child_process';
import { constants } from 'node:fs';
import { access, mkdir, readFile } from 'node:fs/promises';
import { delimiter, isAbsolute, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { findFreePort } from './free-port.js';
import { pingRedis } from './ping-redis.js';
import { RedisServerNotFoundError, RedisServerStartError } from './redis-errors.js';
import { type RedisLog, silentRedisLog } from './redis-log.js';

/** How to run a `redis-server` of our own. */
export interface RedisServerOptions {
  /** Working directory for its append-only file, log and pid file; created if missing. */
  readonly dir: string;
  /** Program to run; looked up on PATH unless it is a path. Default `redis-server`. */
  readonly binary?: string;
  /** Port on 127.0.0.1; default: a free one. */
  readonly port?: number;
  /** Persist with an append-only file (the default); tests turn it off. */
  readonly appendOnly?: boolean;
  /** Time allowed until it answers PING. Default 10 s. */
  readonly startTimeoutMs?: number;
  readonly log?: RedisLog;
}

/** A running `redis-server` that we started (or adopted) and must stop. */
export interface RedisServerHandle {
  readonly url: string;
  readonly port: number;
  readonly pid: number;
  /** SHUTDOWN through a client, then signals if it does not go; idempotent. */
  stop(): Promise<void>;
}

export const DEFAULT_REDIS_SERVER_BINARY = 'redis-server';
const LOG_FILE = 'redis-server.log';
const PID_FILE = 'redis-server.pid';
const PORT_ATTEMPTS = 3;

/** Whether `binary` can be executed: a path that is executable, or a name found on PATH. */
export async function isExecutableAvailable(
  binary: string,
  path = process.env['PATH'] ?? '',
): Promise<boolean> {
  const candidates = binary.includes('/')
    ? [binary]
    : path
        .split(delimiter)
        .filter((dir) => dir !== '')
        .map((dir) => join(dir, binary));
  for (const candidate of candidates) {
    try {
      await access(candidate, constants.X_OK);
      return true;
    } catch {
      // try the next directory
    }
  }
  return false;
}

/** Whether a process with this pid exists. */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function waitUntil(condition: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (!condition()) {
    if (performance.now() > deadline) return false;
    await sleep(25);
  }
  return true;
}

async function sendShutdown(url: string): Promise<void> {
  const client = new Redis(url, {
    lazyConnect: true,
    connectTimeout: 1000,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  client.on('error', () => undefined);
  try {
    await client.connect();
    // The server closes the connection instead of answering, so the call rejects.
    await client.call('SHUTDOWN').catch(() => undefined);
  } catch {
    // Not answering: the signals below take over.
  } finally {
    client.disconnect();
  }
}

/**
 * Stops the server at `url` whose process is `pid`: SHUTDOWN (which flushes the append-only file),
 * then SIGTERM, then SIGKILL, each given a few seconds.
 */
export async function stopRedisServer(
  url: string,
  pid: number,
  exited: () => boolean,
): Promise<void> {
  if (exited()) return;
  await sendShutdown(url);
  if (await waitUntil(exited, 5000)) return;
  process.kill(pid, 'SIGTERM');
  if (await waitUntil(exited, 3000)) return;
  process.kill(pid, 'SIGKILL');
  await waitUntil(exited, 3000);
}

async function logTail(dir: string): Promise<string> {
  try {
    const text = await readFile(join(dir, LOG_FILE), 'utf8');
    return text.trim().split('\n').slice(-5).join('\n');
  } catch {
    return '(no log written)';
  }
}

async function startOnce(
  binary: string,
  dir: string,
  port: number,
  options: RedisServerOptions,
): Promise<RedisServerHandle | 'port-taken'> {
  const args = [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--protected-mode',
    'yes',
    '--dir',
    dir,
    '--appendonly',
    options.appendOnly === false ? 'no' : 'yes',
    '--save',
    '',
    '--maxmemory-policy',
    'noeviction',
    '--daemonize',
    'no',
    '--logfile',
    join(dir, LOG_FILE),
    '--pidfile',
    join(dir, PID_FILE),
  ];
  // Its own process group: a Ctrl-C in the terminal must not stop Redis before the processes
  // that still need it have shut down; they stop it themselves, last.
  const child = spawn(binary, args, { cwd: dir, stdio: 'ignore', detached: true });
  // Written by the child's events; an object so that the reads below are not narrowed away.
  const outcome: { exitCode?: number | null; spawnError?: NodeJS.ErrnoException } = {};
  child.once('exit', (code) => (outcome.exitCode = code));
  child.once('error', (error) => {
    outcome.spawnError = error;
    outcome.exitCode = null;
  });
  const exited = (): boolean => outcome.exitCode !== undefined;
  const url = `redis://127.0.0.1:${port}`;
  const timeoutMs = options.startTimeoutMs ?? 10_000;
  const deadline = performance.now() + timeoutMs;
  while (!exited()) {
    if ((await pingRedis(url, 500)).ok) {
      if (child.pid === undefined) break;
      const pid = child.pid;
      let stopping: Promise<void> | undefined;
      return {
        url,
        port,
        pid,
        stop: () => (stopping ??= stopRedisServer(url, pid, exited)),
      };
    }
    if (performance.now() > deadline) {
      child.kill('SIGKILL');
      throw new RedisServerStartError(
        `redis-server on port ${port} did not answer PING within ${timeoutMs} ms; ` +
          `its log (${join(dir, LOG_FILE)}) ends with:\n${await logTail(dir)}`,
      );
    }
    await sleep(50);
  }
  const { exitCode, spawnError } = outcome;
  if (spawnError?.code === 'ENOENT') {
    throw new RedisServerNotFoundError(binary);
  }
  const tail = await logTail(dir);
  if (/address already in use/i.test(tail)) return 'port-taken';
  throw new RedisServerStartError(
    `redis-server exited with code ${String(exitCode)} before answering PING` +
      (spawnError === undefined ? '' : ` (${spawnError.message})`) +
      `; its log (${join(dir, LOG_FILE)}) ends with:\n${tail}`,
  );
}

/**
 * Starts a `redis-server` bound to 127.0.0.1 only, with `noeviction`, no RDB snapshots and (unless
 * turned off) an append-only file under `dir`, and waits until it answers PING.
 * @throws RedisServerNotFoundError when the binary is not installed.
 * @throws RedisServerStartError when it starts but does not come up.
 */
export async function startRedisServer(options: RedisServerOptions): Promise<RedisServerHandle> {
  const binary = options.binary ?? DEFAULT_REDIS_SERVER_BINARY;
  if (!(await isExecutableAvailable(binary))) throw new RedisServerNotFoundError(binary);
  const dir = isAbsolute(options.dir) ? options.dir : resolve(options.dir);
  await mkdir(dir, { recursive: true });
  const log = options.log ?? silentRedisLog;
  for (let attempt = 1; ; attempt++) {
    const port = options.port ?? (await findFreePort());
    const started = await startOnce(binary, dir, port, options);
    if (started !== 'port-taken') {
      log.info({ url: started.url, pid: started.pid, dir }, 'started a private redis-server');
      return started;
    }
    if (options.port !== undefined || attempt >= PORT_ATTEMPTS) {
      throw new RedisServerStartError(`redis-server could not bind 127.0.0.1:${port}: in use`);
    }
  }
}

/** Wraps a server left running by an earlier process so it can be stopped like our own. */
export function adoptRedisServer(url: string, port: number, pid: number): RedisServerHandle {
  let stopping: Promise<void> | undefined;
  return {
    url,
    port,
    pid,
    stop: () => (stopping ??= stopRedisServer(url, pid, () => !isAlive(pid))),
  };
}
