import { setTimeout as sleep } from 'node:timers/promises';
import { ExperimentError } from '#experiments';
import { type DaemonClient, DaemonRefusal } from './daemon-client.js';

// What a run leaves on a daemon: every VM it created is terminated (a busy one's job cancelled
// first) and waited for a while. The API deletes neither hosts nor VMs, so the run's hosts, and
// its VMs as terminated, stay under the run's prefix.

/** How long cleaning up waits for the run's VMs to be terminated. */
const WAIT_MS = 120_000;
const POLL_MS = 100;

/** Terminates the VMs `vmIds` (as the daemon names them), those that exist and are not yet. */
export async function terminateAll(client: DaemonClient, vmIds: readonly string[]): Promise<void> {
  const deadline = performance.now() + WAIT_MS;
  const jobs = await Promise.all(vmIds.map((id) => terminate(client, id, deadline)));
  await waitEnded(
    client,
    jobs.filter((id): id is string => id !== null),
    deadline,
  );
}

/** Terminates a VM; its job, or null when there is nothing to terminate. */
async function terminate(
  client: DaemonClient,
  vmId: string,
  deadline: number,
): Promise<string | null> {
  for (let attempt = 0; attempt < 3; attempt += 1) {
    try {
      return (await client.submit(vmId, 'terminate', 'close')).id;
    } catch (error) {
      if (!(error instanceof DaemonRefusal)) throw error;
      // Never created, or terminated already.
      if (error.code === 'not_found' || error.code === 'vm_state_conflict') return null;
      if (error.code !== 'vm_busy') throw error;
      const busyWith = String(error.details['jobId']);
      try {
        await client.cancel(busyWith);
      } catch (cancelError) {
        // It ended meanwhile: the terminate goes through now.
        if (!(cancelError instanceof DaemonRefusal) || cancelError.code !== 'job_finished') {
          throw cancelError;
        }
      }
      await waitEnded(client, [busyWith], deadline);
    }
  }
  throw new ExperimentError(`VM ${vmId} stayed busy: it could not be terminated`);
}

/** Polls jobs until each has ended or the monotonic time `deadline` has passed. */
async function waitEnded(
  client: DaemonClient,
  jobIds: readonly string[],
  deadline: number,
): Promise<void> {
  let left = [...jobIds];
  while (left.length > 0 && performance.now() < deadline) {
    const jobs = await Promise.all(left.map((id) => client.job(id)));
    left = jobs.filter((job) => job.state === 'queued' || job.state === 'running').map((j) => j.id);
    if (left.length > 0) await sleep(POLL_MS);
  }
}
