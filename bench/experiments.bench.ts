// Benchmark of load experiments, offline: the reboot-storm built-in scaled to N VMs (one variant:
// reuse on a kernel with TERMINATE_VM and LINK_GUEST_MEMFD), timed from the scenario to the
// finished result directory (result.json, summary.md and report.html). Prints the wall seconds
// of the run and of the reports, and the peak RSS.
//   npm run -s bench:experiments -- [--vms N] [--json]
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { builtinDocument, parseScenario, runExperiment } from '#experiments';
import { writeResultDirectory } from '../apps/cli/src/experiment/result-files.js';

/** VMs per host in the reboot-storm built-in. */
const VMS_PER_HOST = 6;

const { values } = parseArgs({
  options: { vms: { type: 'string' }, json: { type: 'boolean' } },
});
const vms = Number(values.vms ?? 100_000);
if (!Number.isSafeInteger(vms) || vms < VMS_PER_HOST) {
  process.stderr.write(`bench:experiments: --vms must be an integer >= ${VMS_PER_HOST}\n`);
  process.exit(2);
}

const document = builtinDocument('reboot-storm') as {
  fleet: { hosts: Array<{ count: number }> };
  sweep: unknown;
};
const hosts = Math.ceil(vms / VMS_PER_HOST);
(document.fleet.hosts[0] as { count: number }).count = hosts;
document.sweep = { strategy: ['reuse'], kernel: [{ terminateVm: 'v4', linkGuestMemfd: true }] };
const scenario = parseScenario(document);

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
  const report = {
    vms: run?.capacity.vms ?? 0,
    hosts,
    operations: run?.metrics['operations.total'] ?? 0,
    runSeconds: (ran - started) / 1000,
    reportSeconds: (reported - ran) / 1000,
    totalSeconds: (reported - started) / 1000,
    targetSeconds: 5,
    peakRssMiB: process.resourceUsage().maxRSS / 1024,
  };
  if (values.json === true) {
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  } else {
    process.stdout.write(
      `reboot-storm offline, ${report.vms} VMs on ${hosts} hosts: run ${report.runSeconds.toFixed(2)} s, ` +
        `reports ${report.reportSeconds.toFixed(2)} s, total ${report.totalSeconds.toFixed(2)} s ` +
        `(target <= ${report.targetSeconds} s), peak RSS ${report.peakRssMiB.toFixed(0)} MiB\n`,
    );
  }
} finally {
  await rm(directory, { recursive: true, force: true });
}
