import { type ChildProcess, spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';

/** A spawned process of ours, with its output collected. */
export interface ServiceProcess {
  readonly child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves with the exit code (or the signal name) once it exits, or rejects after `ms`. */
  exited(ms: number): Promise<number | string>;
  /**
   * SIGKILLs its whole process group (it leads one), so a failed test leaves no grandchild
   * behind holding the output pipes open.
   */
  killGroup(): void;
}

/**
 * Runs `node <script> [args]` with exactly `env` (plus PATH and HOME), so that nothing from the test
 * runner's environment (a REDIS_URL, say) leaks in.
 */
export function spawnService(
  script: string,
  env: Record<string, string>,
  args: readonly string[] = [],
): ServiceProcess {
  return spawnCommand(process.execPath, [script, ...args], env);
}

/** Runs any command like `spawnService` does. */
export function spawnCommand(
  command: string,
  args: readonly string[],
  env: Record<string, string>,
): ServiceProcess {
  const child = spawn(command, args, {
    env: { PATH: process.env['PATH'] ?? '', HOME: process.env['HOME'] ?? '/', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let out = '';
  let err = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
  const exit = new Promise<number | string>((resolve) => {
    child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown'));
  });
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    exited: async (ms) => {
      const timeout = sleep(ms, undefined, { ref: false }).then(() => {
        throw new Error(`process did not exit within ${ms} ms\n${out}\n${err}`);
      });
      return Promise.race([exit, timeout]);
    },
    killGroup: () => {
      if (child.pid === undefined) return;
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // the group is already gone
      }
    },
  };
}

/** Polls `url` until it answers `status`, failing after `ms` (or when `alive()` turns false). */
export async function waitForStatus(
  url: string,
  status: number,
  ms: number,
  alive: () => boolean = () => true,
): Promise<void> {
  const deadline = performance.now() + ms;
  let last = 'no answer';
  while (performance.now() < deadline) {
    if (!alive()) throw new Error(`process exited while waiting for ${url} (last: ${last})`);
    try {
      const response = await fetch(url);
      await response.body?.cancel();
      if (response.status === status) return;
      last = `status ${response.status}`;
    } catch (error) {
      last = error instanceof Error ? error.message : String(error);
    }
    await sleep(100);
  }
  throw new Error(`${url} did not answer ${status} within ${ms} ms (last: ${last})`);
}
