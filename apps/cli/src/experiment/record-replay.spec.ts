// Record and replay end to end: a daemon on a private Redis at TIME_SCALE=0 takes a storm of
// reboots while `experiment record` follows it; the recorded fleet file runs with `sim fleet`,
// `experiment replay` gives each recorded operation the daemon's downtime, and a what-if replay
// (reuse on a kernel that can run it) changes the numbers.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { findFreePort } from '#redis';
import { type TestRedis, startTestRedis } from '../../../../test/support/redis.js';
import {
  type ServiceProcess,
  spawnService,
  waitForStatus,
} from '../../../../test/support/service-process.js';
import { makeTempDir } from '../../../../test/support/temp-dir.js';
import { type RecordedFleetFile } from './recording.js';
import { type ReplayRun, type ReplaySummary } from './replay.js';

const cli = fileURLToPath(new URL('../main.js', import.meta.url));
const fleetd = fileURLToPath(new URL('../../../fleetd/src/main.js', import.meta.url));

interface Job {
  id: string;
  vmId: string;
  hostId: string;
  action: string;
  state: string;
  virtualArrivedAt: number;
  result?: { downtimeSeconds: number };
}

interface ReplayJson {
  recorded: ReplayRun;
  replayed: ReplayRun;
  change: Record<keyof ReplaySummary, { difference: number }>;
}

function tdxFleet(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

describe('experiment record and replay against a live daemon at TIME_SCALE=0', () => {
  let redis: TestRedis;
  let daemon: ServiceProcess;
  let api: string;
  let dir: Awaited<ReturnType<typeof makeTempDir>>;
  let recordingPath: string;
  let recording: RecordedFleetFile;
  const stormJobs: Job[] = [];

  async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const response = await fetch(`${api}${path}`, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await response.text();
    assert.ok(response.ok, `${method} ${path}: ${response.status} ${text}`);
    return JSON.parse(text) as T;
  }

  async function finished(jobIds: readonly string[]): Promise<Job[]> {
    const deadline = performance.now() + 30_000;
    for (;;) {
      const jobs = await Promise.all(jobIds.map((id) => call<Job>('GET', `/v1/jobs/${id}`)));
      if (jobs.every((job) => ['succeeded', 'failed', 'cancelled'].includes(job.state))) {
        return jobs;
      }
      assert.ok(performance.now() < deadline, 'the jobs did not end within 30 s');
      await sleep(50);
    }
  }

  const reboot = async (vmId: string): Promise<string> =>
    (await call<{ job: Job }>('POST', `/v1/vms/${vmId}/reboot`, { strategy: 'cold' })).job.id;

  before(async () => {
    redis = await startTestRedis();
    dir = await makeTempDir('record-replay');
    recordingPath = join(dir.path, 'storm.json');
    const port = await findFreePort();
    api = `http://127.0.0.1:${port}`;
    daemon = spawnService(fleetd, {
      REDIS_URL: redis.url,
      PORT: String(port),
      TIME_SCALE: '0',
      LOG_LEVEL: 'warn',
    });
    await waitForStatus(`${api}/readyz`, 200, 30_000, () => daemon.child.exitCode === null);

    // A host the recording leaves out (another prefix), and two it keeps, two VMs each.
    await call('POST', '/v1/hosts', { id: 'other-1', memoryGiB: 64 });
    for (const id of ['rec-1', 'rec-2']) {
      await call('POST', '/v1/hosts', { id, memoryGiB: 64, hkids: 8 });
    }
    const boots: string[] = [];
    for (const [vm, host, vcpus, memoryGiB] of [
      ['vm-1', 'rec-1', 4, 8],
      ['vm-2', 'rec-1', 8, 16],
      ['vm-3', 'rec-2', 4, 8],
      ['vm-4', 'rec-2', 8, 16],
      ['vm-x', 'other-1', 4, 8],
    ] as const) {
      const created = await call<{ job: Job }>('POST', '/v1/vms', {
        id: vm,
        hostId: host,
        vcpus,
        memoryGiB,
      });
      boots.push(created.job.id);
    }
    await finished(boots);

    const recorder = spawnService(cli, {}, [
      'experiment',
      'record',
      '--api',
      api,
      '--host-prefix',
      'rec-',
      '--out',
      recordingPath,
    ]);
    try {
      const ready = performance.now() + 20_000;
      while (!recorder.stderr().includes('recording 2 hosts and 4 VMs')) {
        assert.ok(performance.now() < ready, `record did not start: ${recorder.stderr()}`);
        await sleep(20);
      }
      // The storm, a VM of the other host, then a second wave on the hosts' later clocks.
      const storm = await Promise.all(['vm-1', 'vm-2', 'vm-3', 'vm-4', 'vm-x'].map(reboot));
      stormJobs.push(...(await finished(storm)).filter((job) => job.vmId !== 'vm-x'));
      const wave = await Promise.all(['vm-1', 'vm-3'].map(reboot));
      stormJobs.push(...(await finished(wave)));
      // The last job.finished events are on their way to the recorder.
      await sleep(1000);
      recorder.child.kill('SIGTERM');
      const code = await recorder.exited(20_000);
      assert.equal(code, 0, recorder.stderr());
      assert.match(recorder.stdout(), /^wrote .*storm\.json: 2 hosts, 4 VMs, 6 requests/);
    } finally {
      recorder.killGroup();
    }
    recording = JSON.parse(await readFile(recordingPath, 'utf8')) as RecordedFleetFile;
  });

  after(async () => {
    daemon?.child.kill('SIGTERM');
    await daemon?.exited(10_000).catch(() => undefined);
    daemon?.killGroup();
    await redis?.stop();
    await dir?.remove();
  });

  it('records the hosts with their kernels, the VMs booted at 0 and every reboot', () => {
    assert.deepEqual(
      recording.hosts.map((h) => [h.id, h.memoryGiB, h.hkids, h.kernel.terminateVm]),
      [
        ['rec-1', 64, 8, 'none'],
        ['rec-2', 64, 8, 'none'],
      ],
    );
    assert.deepEqual(
      recording.vms.map((vm) => [vm.id, vm.hostId, vm.bootAt]),
      [
        ['vm-1', 'rec-1', 0],
        ['vm-2', 'rec-1', 0],
        ['vm-3', 'rec-2', 0],
        ['vm-4', 'rec-2', 0],
      ],
    );
    assert.equal(recording.requests.length, 6);
    assert.ok(recording.requests.every((r) => r.action === 'reboot' && r.strategy === 'cold'));
    // Each host's first recorded arrival is the fleet's boot time, the same on both hosts.
    const first = Math.min(...recording.requests.map((r) => r.at));
    assert.ok(first > 0);
    for (const hostId of ['rec-1', 'rec-2']) {
      const vmIds = recording.vms.filter((vm) => vm.hostId === hostId).map((vm) => vm.id);
      const ats = recording.requests.filter((r) => vmIds.includes(r.vmId)).map((r) => r.at);
      assert.equal(Math.min(...ats), first, hostId);
    }
  });

  it('gives a file that sim fleet runs unchanged', () => {
    const run = tdxFleet('sim', 'fleet', recordingPath, '--json');
    assert.equal(run.status, 0, run.stderr);
    const output = JSON.parse(run.stdout) as { totals: { byState: { succeeded: number } } };
    assert.equal(output.totals.byState.succeeded, 4 + 6);
  });

  it("replays every recorded operation with the daemon's downtime", () => {
    const run = tdxFleet('experiment', 'replay', recordingPath, '--json');
    assert.equal(run.status, 0, run.stderr);
    const { recorded, replayed, change } = JSON.parse(run.stdout) as ReplayJson;
    assert.equal(recorded.summary['operations.total'], 6);
    assert.deepEqual(recorded, replayed, 'nothing overridden: the same run twice');
    assert.ok(Object.values(change).every((c) => c.difference === 0));
    // Operations of one VM in order of arrival, beside the daemon's jobs of that VM.
    const inOrder = <T extends { vmId: string }>(items: T[], time: (item: T) => number) =>
      [...items].sort((a, b) => a.vmId.localeCompare(b.vmId) || time(a) - time(b));
    const offline = inOrder(recorded.operations, (op) => op.requestedAt);
    const live = inOrder(stormJobs, (job) => job.virtualArrivedAt);
    assert.equal(offline.length, live.length);
    offline.forEach((op, i) => {
      const job = live[i] as Job;
      assert.equal(op.vmId, job.vmId);
      assert.equal(op.state, job.state);
      const expected = job.result?.downtimeSeconds ?? NaN;
      assert.ok(
        Math.abs((op.downtimeSeconds ?? NaN) - expected) <= 1e-6,
        `${op.vmId} at ${op.requestedAt} s: ${op.downtimeSeconds} s offline, ${expected} s live`,
      );
    });
  });

  it('replays the storm as reuse on a kernel that can run it: the numbers change', () => {
    const run = tdxFleet(
      'experiment',
      'replay',
      recordingPath,
      '--strategy',
      'reuse',
      '--link-guest-memfd',
      'on',
      '--terminate-vm',
      'v4',
      '--json',
    );
    assert.equal(run.status, 0, run.stderr);
    const { recorded, replayed, change } = JSON.parse(run.stdout) as ReplayJson;
    assert.ok(
      replayed.operations.every((op) => op.strategy === 'reuse' && op.state === 'succeeded'),
    );
    assert.equal(replayed.summary['operations.total'], recorded.summary['operations.total']);
    assert.notEqual(change['downtime.p50'].difference, 0);
    // A cold reboot boots on fresh memory while the old is reclaimed; reuse boots on its own.
    assert.ok(recorded.summary['memory.headroomBytes'] > 0);
    assert.equal(replayed.summary['memory.headroomBytes'], 0);
    const table = tdxFleet(
      'experiment',
      'replay',
      recordingPath,
      '--strategy',
      'terminate',
      '--terminate-vm',
      'aug2025',
    );
    assert.equal(table.status, 0, table.stderr);
    assert.match(table.stdout, /^downtime\.p50 +\S+ s +\S+ s +[-+]/m);
  });

  it('refuses up front a strategy the kernel cannot run, naming both', () => {
    const run = tdxFleet(
      'experiment',
      'replay',
      recordingPath,
      '--strategy',
      'reuse',
      '--terminate-vm',
      'v4',
    );
    assert.equal(run.status, 2);
    assert.equal(run.stdout, '');
    assert.match(
      run.stderr,
      /^tdx-fleet experiment: reboot reuse does not run on host rec-1's kernel \(terminate=v4 link=off 4K\)\n$/,
    );
  });

  it('says in one line that a daemon cannot be reached (exit 2)', async () => {
    const port = await findFreePort();
    const run = tdxFleet(
      'experiment',
      'record',
      '--api',
      `http://127.0.0.1:${port}`,
      '--out',
      join(dir.path, 'none.json'),
    );
    assert.equal(run.status, 2);
    assert.match(run.stderr, /^tdx-fleet experiment: cannot reach the daemon at .*\n$/);
  });
});
