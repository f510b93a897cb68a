// Benchmark of load experiments:
//  (a) offline: the reboot-storm built-in scaled to N VMs (one variant: reuse on a kernel with
//      TERMINATE_VM and LINK_GUEST_MEMFD), timed from the scenario to the finished result
//      directory (result.json, summary.md and report.html);
//  (b) live: the same storm on `--live-vms` VMs run through a fleetd process (its own
//      redis-server, TIME_SCALE 1000) by the daemon target; the storm's submissions per second
//      into the daemon, and each operation's latency from its intended start (the storm's start)
//      to its arrival on its host, so that a slow daemon is not hidden behind a fast client.
//   npm run -s bench:experiments -- [--vms N] [--live-vms N] [--no-live] [--json]
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import {
  BASE_VARIANT,
  type Scenario,
  builtinDocument,
  parseScenario,
  runExperiment,
  variantsOf,
} from '#experiments';
import { findFreePort, startRedisServer } from '#redis';
import { runOnDaemon } from '../apps/cli/src/experiment/daemon-target.js';
import { writeResultDirectory } from '../apps/cli/src/experiment/result-files.js';
import { spawnService, waitForStatus } from '../test/support/service-process.js';

/** VMs per host in the reboot-storm built-in. */
const VMS_PER_HOST = 6;

/** The live run's daemon time scale: fast, yet a lag of 1 ms is a virtual second. */
const LIVE_TIME_SCALE = 1000;

const { values } = parseArgs({
  options: {
    vms: { type: 'string' },
    'live-vms': { type: 'string' },
    'no-live': { type: 'boolean' },
    json: { type: 'boolean' },
  },
});

function vmCount(value: string | undefined, option: string, fallback: number): number {
  const n = Number(value ?? fallback);
  if (!Number.isSafeInteger(n) || n < VMS_PER_HOST) {
    process.stderr.write(`bench:experiments: --${option} must be an integer >= ${VMS_PER_HOST}\n`);
    process.exit(2);
  }
  return n;
}
const vms = vmCount(values.vms, 'vms', 100_000);
const liveVms = vmCount(values['live-vms'], 'live-vms', 3_000);

/** The reboot-storm built-in on `count` VMs, one variant. */
function stormOf(count: number): { scenario: Scenario; hosts: number } {
  const document = builtinDocument('reboot-storm') as {
    fleet: { hosts: Array<{ count: number }> };
    sweep: unknown;
  };
  const hosts = Math.ceil(count / VMS_PER_HOST);
  (document.fleet.hosts[0] as { count: number }).count = hosts;
  document.sweep = { strategy: ['reuse'], kernel: [{ terminateVm: 'v4', linkGuestMemfd: true }] };
  return { scenario: parseScenario(document), hosts };
}
const { scenario, hosts } = stormOf(vms);

const directory = await mkdtemp(join(tmpdir(), 'tdx-fleet-bench-'));
try {
  const started = performance.now();
  let lastLine = started;
  const result = runExperiment(
    scenario,
    { scenario: scenario.name, scenarioHash: 'bench', version: 'bench', gitRevision: null },
    {
      onProgress: (p) => {
        const now = performance.now();
        if (values.json === true || now - lastLine < 5000) return;
        lastLine = now;
        process.stderr.write(
          `  ${p.ended}/${p.issued} operations, virtual ${p.virtualTime.toFixed(0)} s\n`,
        );
      },
    },
  );
  const ran = performance.now();
  await writeResultDirectory(directory, result);
  const reported = performance.now();
  const run = result.runs[0];
  const live = values['no-live'] === true ? null : await liveStorm(liveVms);
  const report = {
    vms: run?.capacity.vms ?? 0,
    hosts,
    operations: run?.metrics['operations.total'] ?? 0,
    runSeconds: (ran - started) / 1000,
    reportSeconds: (reported - ran) / 1000,
    totalSeconds: (reported - started) / 1000,
    targetSeconds: 5,
    peakRssMiB: process.resourceUsage().maxRSS / 1024,
    live,
  };
  if (values.json === true) {
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  } else {
    process.stdout.write(
      `reboot-storm offline, ${report.vms} VMs on ${hosts} hosts: run ${report.runSeconds.toFixed(2)} s, ` +
        `reports ${report.reportSeconds.toFixed(2)} s, total ${report.totalSeconds.toFixed(2)} s ` +
        `(target <= ${report.targetSeconds} s), peak RSS ${report.peakRssMiB.toFixed(0)} MiB\n`,
    );
    if (live !== null) {
      process.stdout.write(
        `reboot-storm live, ${live.operations} operations on ${live.hosts} hosts (TIME_SCALE ${LIVE_TIME_SCALE}): ` +
          `${live.submissionsPerSecond.toFixed(0)} submissions/s (target >= ${live.targetPerSecond}), ` +
          `latency from the intended start p50 ${live.latencyMs.p50.toFixed(0)} ms, ` +
          `p99 ${live.latencyMs.p99.toFixed(0)} ms, max ${live.latencyMs.max.toFixed(0)} ms\n`,
      );
    }
  }
} finally {
  await rm(directory, { recursive: true, force: true });
}

/**
 * (b) The storm on a live daemon: fleetd on a private redis-server, the daemon target runs the
 * scenario. Each operation's lag (arrival minus request on the run's clock) divided by the time
 * scale is the real time from the storm's start to its arrival on its host.
 */
async function liveStorm(count: number) {
  const { scenario: live, hosts: liveHosts } = stormOf(count);
  const redisDir = await mkdtemp(join(tmpdir(), 'tdxfleet-bench-redis-'));
  const redis = await startRedisServer({ dir: redisDir, appendOnly: false });
  const port = await findFreePort();
  const base = `http://127.0.0.1:${port}`;
  const fleetd = spawnService('dist/apps/fleetd/src/main.js', {
    REDIS_URL: redis.url,
    PORT: String(port),
    TIME_SCALE: String(LIVE_TIME_SCALE),
    LOG_LEVEL: 'warn',
    SHUTDOWN_TIMEOUT_MS: '5000',
  });
  try {
    await waitForStatus(`${base}/readyz`, 200, 30_000, () => fleetd.child.exitCode === null);
    const variant = variantsOf(live)[0] ?? BASE_VARIANT;
    let lastLine = performance.now();
    const record = await runOnDaemon(live, variant, live.seed, {
      api: base,
      runPrefix: 'bench-',
      onProgress: (p) => {
        const now = performance.now();
        if (values.json === true || now - lastLine < 5000) return;
        lastLine = now;
        process.stderr.write(`  live: ${p.ended}/${p.issued} operations\n`);
      },
    });
    const lagsMs = record.operations.map((op) => lagOf(op) * 1000).sort((a, b) => a - b);
    const at = (q: number): number =>
      lagsMs[Math.min(lagsMs.length - 1, Math.floor(q * lagsMs.length))] ?? 0;
    const lastArrivalMs = lagsMs[lagsMs.length - 1] ?? 0;
    return {
      operations: record.operations.length,
      refused: record.refusals.length,
      hosts: liveHosts,
      submissionsPerSecond:
        lastArrivalMs > 0 ? record.operations.length / (lastArrivalMs / 1000) : 0,
      targetPerSecond: 3000,
      latencyMs: { p50: at(0.5), p99: at(0.99), max: lastArrivalMs },
    };
  } finally {
    fleetd.killGroup();
    await redis.stop();
    await rm(redisDir, { recursive: true, force: true });
  }
}

/** Real seconds from an operation's intended start to its arrival on its host. */
function lagOf(op: { requestedAt: number; arrivedAt?: number | null }): number {
  return ((op.arrivedAt ?? op.requestedAt) - op.requestedAt) / LIVE_TIME_SCALE;
}
