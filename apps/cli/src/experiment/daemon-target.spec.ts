// The daemon target is the offline target's live twin: a scenario run on a live daemon (the API
// and worker processes over a real Redis) at TIME_SCALE=0 gives the operations, downtimes and
// metrics the offline engine gives for it, and the API's refusals as the run's.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  BASE_VARIANT,
  type MeasuredOperation,
  type RunRecord,
  type Scenario,
  buildFleet,
  parseScenario,
  runMetrics,
  simulateRun,
} from '#experiments';
import { type WorkerProcess, startWorker } from '../../../../test/support/fleet.js';
import { type TestApp } from '../../../../test/support/http-app.js';
import { type TestRedis, startTestRedis } from '../../../../test/support/redis.js';
import { startApiApp } from '../../../api/src/testing/api-test-client.js';
import { runOnDaemon } from './daemon-target.js';

const KEY_PREFIX = 'daemon-target';
const SEED = 7;

/** Two hosts, six VMs of two sizes: a reuse storm, then a terminate reboot host by host. */
const STORM_THEN_ROLLING: Scenario = parseScenario({
  name: 'storm-then-rolling',
  fleet: {
    hosts: [
      {
        name: 'h',
        count: 2,
        memoryGiB: 96,
        hkids: 8,
        kernel: { terminateVm: 'aug2025', linkGuestMemfd: true },
      },
    ],
    vms: [
      {
        name: 'vm',
        count: 6,
        sizes: [
          { vcpus: 4, memoryGiB: 8 },
          { vcpus: 8, memoryGiB: 16 },
        ],
      },
    ],
  },
  phases: [
    { kind: 'storm', name: 'storm', action: 'reboot', strategy: 'reuse' },
    {
      kind: 'rolling',
      name: 'wave',
      delaySeconds: 30,
      action: 'reboot',
      strategy: 'terminate',
      maxPerHost: 1,
    },
  ],
  sampleEverySeconds: 10,
});

/** A reuse storm on hosts whose kernel cannot link guest_memfds: every request is refused. */
const REFUSED_REUSE: Scenario = parseScenario({
  name: 'refused-reuse',
  fleet: {
    hosts: [{ name: 'h', count: 1, memoryGiB: 32, kernel: { terminateVm: 'aug2025' } }],
    vms: [{ name: 'vm', count: 2, sizes: [{ vcpus: 2, memoryGiB: 2 }] }],
  },
  phases: [{ kind: 'storm', name: 'storm', action: 'reboot', strategy: 'reuse' }],
});

const key = (op: MeasuredOperation) => `${op.vmId} ${op.phase} ${op.action} ${op.strategy}`;

function byKey(run: RunRecord): Map<string, MeasuredOperation> {
  return new Map(run.operations.map((op) => [key(op), op]));
}

/** Within 5% of `expected` (or 1e-6 of it when it is 0). */
function within5(actual: number, expected: number, what: string): void {
  assert.ok(
    Math.abs(actual - expected) <= Math.max(1e-6, 0.05 * Math.abs(expected)),
    `${what}: ${actual} live, ${expected} offline`,
  );
}

/** Within `relative` of `expected` (absolutely, when it is 0). */
function sameWithin(actual: number, expected: number, relative: number, what: string): void {
  assert.ok(
    Math.abs(actual - expected) <= relative * Math.max(1, Math.abs(expected)),
    `${what}: ${actual} live, ${expected} offline`,
  );
}

describe('a scenario on a live daemon at TIME_SCALE=0: the offline run', () => {
  let redis: TestRedis;
  let app: TestApp;
  const workers: WorkerProcess[] = [];
  const env = { TIME_SCALE: '0' };

  before(async () => {
    redis = await startTestRedis();
    app = await startApiApp({ redisUrl: redis.url, keyPrefix: KEY_PREFIX, workers: false, env });
    for (let i = 0; i < 2; i += 1) workers.push(await startWorker(redis.url, KEY_PREFIX, env));
  });
  after(async () => {
    for (const worker of workers) worker.killGroup();
    await app?.close();
    await redis?.stop();
  });

  describe('a storm then a rolling wave', () => {
    const offline = simulateRun(STORM_THEN_ROLLING, BASE_VARIANT, SEED);
    const expected = byKey(offline);
    let live: RunRecord;
    const progress: number[] = [];

    before(async () => {
      live = await runOnDaemon(STORM_THEN_ROLLING, BASE_VARIANT, SEED, {
        api: app.baseUrl,
        runPrefix: 'r1-',
        onProgress: (p) => progress.push(p.ended),
      });
    });

    /** Each live operation of `phase` beside its offline twin. */
    const pairs = (phase: string) =>
      live.operations
        .filter((op) => op.phase === phase)
        .map((op) => [op, expected.get(key(op)) as MeasuredOperation] as const);

    /** Asserts each operation of `phase` has its twin's downtime; the largest difference. */
    const sameDowntimes = (phase: string): number => {
      let worst = 0;
      for (const [op, twin] of pairs(phase)) {
        const downtime = op.result?.downtimeSeconds ?? NaN;
        const offlineDowntime = twin.result?.downtimeSeconds ?? NaN;
        worst = Math.max(worst, Math.abs(downtime - offlineDowntime));
        assert.ok(
          Math.abs(downtime - offlineDowntime) <= 1e-6,
          `${key(op)}: downtime ${downtime} s live, ${offlineDowntime} s offline`,
        );
      }
      return worst;
    };

    it("issues the offline run's operations, on the same hosts, and every one succeeds", () => {
      assert.deepEqual([...byKey(live).keys()].sort(), [...expected.keys()].sort());
      assert.equal(live.operations.length, 12);
      assert.deepEqual(live.refusals, []);
      for (const op of live.operations) {
        assert.equal(op.state, 'succeeded', `${key(op)}: ${JSON.stringify(op.error)}`);
        assert.equal(op.hostId, expected.get(key(op))?.hostId, key(op));
      }
      assert.deepEqual(
        live.phases.map((p) => [p.name, p.operations]),
        offline.phases.map((p) => [p.name, p.operations]),
      );
      assert.deepEqual(
        progress,
        progress.map((_, i) => i + 1),
      );
    });

    it('gives each operation of the wave its offline downtime; p50 and makespan within 5%', (t) => {
      // One reboot per host at a time: each arrives on a host with nothing else to do.
      t.diagnostic(`worst downtime difference in the wave: ${sameDowntimes('wave')} s`);
      const liveMetrics = runMetrics(live);
      const offlineMetrics = runMetrics(offline);
      for (const name of ['downtime.p50', 'makespan']) {
        within5(liveMetrics[name] ?? NaN, offlineMetrics[name] ?? NaN, name);
        t.diagnostic(`${name}: ${liveMetrics[name]} live, ${offlineMetrics[name]} offline`);
      }
    });

    it('gives each operation of the storm its offline downtime; p99 and makespan equal', (t) => {
      // The storm's requests go as one batch: each host's arrive there together, in the
      // driver's order, and queue for the HKID release lock as offline.
      t.diagnostic(`worst downtime difference in the storm: ${sameDowntimes('storm')} s`);
      const liveMetrics = runMetrics(live);
      const offlineMetrics = runMetrics(offline);
      for (const name of ['downtime.p99', 'makespan']) {
        sameWithin(liveMetrics[name] ?? NaN, offlineMetrics[name] ?? NaN, 1e-9, name);
        t.diagnostic(`${name}: ${liveMetrics[name]} live, ${offlineMetrics[name]} offline`);
      }
      const stormSpan = (run: RunRecord) => {
        const span = run.phases.find((p) => p.name === 'storm');
        return (span?.endedAt ?? NaN) - (span?.startedAt ?? NaN);
      };
      sameWithin(stormSpan(live), stormSpan(offline), 1e-9, "the storm's span");
    });

    it('samples the fleet from the start of the phases to their end', () => {
      const samples = live.series.samples;
      assert.ok(samples.length >= 2);
      assert.equal(samples[0]?.t, live.phases[0]?.startedAt);
      assert.equal(samples.at(-1)?.t, live.phases.at(-1)?.endedAt);
      assert.ok(samples.every((s, i) => i === 0 || (samples[i - 1]?.t ?? 0) <= s.t));
      // The fleet at rest after the run, as offline.
      assert.deepEqual(samples.at(-1), { ...offline.series.samples.at(-1), t: samples.at(-1)?.t });
      assert.equal(live.series.everySeconds, offline.series.everySeconds);
      assert.deepEqual(live.capacity, offline.capacity);
    });

    it('terminates every VM of the run afterwards (the API deletes no host or VM)', async () => {
      const answer = await fetch(`${app.baseUrl}/v1/vms?state=terminated`);
      const { vms } = (await answer.json()) as { vms: Array<{ id: string }> };
      assert.deepEqual(
        vms
          .map((vm) => vm.id)
          .filter((id) => id.startsWith('r1-'))
          .sort(),
        buildFleet(STORM_THEN_ROLLING, BASE_VARIANT, SEED)
          .vms.map((vm) => `r1-${vm.id}`)
          .sort(),
      );
    });
  });

  it("records a refused request as a refusal with the API's code", async () => {
    const offline = simulateRun(REFUSED_REUSE, BASE_VARIANT, SEED);
    const live = await runOnDaemon(REFUSED_REUSE, BASE_VARIANT, SEED, {
      api: app.baseUrl,
      runPrefix: 'r2-',
    });
    assert.deepEqual(live.operations, []);
    assert.deepEqual(
      live.refusals.map((r) => r.code),
      ['kernel_feature_missing', 'kernel_feature_missing'],
    );
    const sorted = (run: RunRecord) =>
      [...run.refusals].sort((a, b) => (a.vmId ?? '').localeCompare(b.vmId ?? ''));
    assert.deepEqual(sorted(live), sorted(offline));
  });

  it('stops when aborted, and terminates what the run created', async () => {
    const abort = new AbortController();
    const reason = new Error('enough');
    await assert.rejects(
      runOnDaemon(STORM_THEN_ROLLING, BASE_VARIANT, SEED, {
        api: app.baseUrl,
        runPrefix: 'r4-',
        signal: abort.signal,
        onProgress: () => abort.abort(reason),
      }),
      (error) => error === reason,
    );
    const answer = await fetch(`${app.baseUrl}/v1/vms`);
    const { vms } = (await answer.json()) as { vms: Array<{ id: string; state: string }> };
    const left = vms.filter((vm) => vm.id.startsWith('r4-'));
    assert.equal(left.length, 6);
    assert.deepEqual(
      left.filter((vm) => vm.state !== 'terminated'),
      [],
    );
  });

  it("refuses to run under limits other than the scenario's", async () => {
    const scenario = { ...REFUSED_REUSE, limits: { ...REFUSED_REUSE.limits, hostConcurrency: 2 } };
    await assert.rejects(
      runOnDaemon(scenario, BASE_VARIANT, SEED, { api: app.baseUrl, runPrefix: 'r3-' }),
      /HOST_CONCURRENCY=4, the scenario \(variant base\) needs 2/,
    );
  });
});
