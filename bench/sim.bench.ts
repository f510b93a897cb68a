// Benchmark of the pure simulator: the full lifecycle of one VM (boot with all memory faulted
// in, a reboot with each strategy, terminate) for a small and a large VM, medians over repeated
// runs. Memory is kept as page ranges, so the large VM should cost about as much as the small.
//   npm run -s bench:sim -- [--json] [--runs N]
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { createHost, makeHostConfig, MAINLINE_KERNEL } from '#tdx-sim';
import {
  type Intent,
  type PlanRun,
  REBOOT_STRATEGIES,
  handlesAfter,
  planFor,
  runPlan,
  shapeOfGiB,
} from '#vmm';

const CASES = [
  { vcpus: 4, memoryGiB: 4 },
  { vcpus: 64, memoryGiB: 400 },
];

const LIFECYCLE: Intent[] = [
  ...REBOOT_STRATEGIES.map((strategy): Intent => ({ action: 'reboot', strategy })),
  { action: 'terminate', strategy: 'terminate' },
];

function lifecycle(vcpus: number, memoryGiB: number): void {
  const kernel = {
    ...MAINLINE_KERNEL,
    terminateVm: 'aug2025',
    linkGuestMemfd: true,
    privatePageSize: '4K',
  } as const;
  const shape = shapeOfGiB(vcpus, memoryGiB);
  const host = createHost(makeHostConfig({ memoryGiB: 2 * memoryGiB + 8, kernel }));
  const planned = planFor({ action: 'boot' }, kernel, shape);
  if (!planned.ok) throw new Error(planned.refusal.message);
  let run: PlanRun = runPlan(host, planned.plan);
  for (const intent of LIFECYCLE) {
    if (!run.ok) throw new Error(`lifecycle step failed: ${run.failure?.message ?? ''}`);
    const next = planFor(intent, kernel, shape, handlesAfter(shape, run.bindings));
    if (!next.ok) throw new Error(next.refusal.message);
    run = runPlan(run.state, next.plan);
  }
  if (!run.ok) throw new Error(`terminate failed: ${run.failure?.message ?? ''}`);
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[mid] ?? 0)
    : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

const { values } = parseArgs({ options: { json: { type: 'boolean' }, runs: { type: 'string' } } });
const runs = Number(values.runs ?? 200);
if (!Number.isSafeInteger(runs) || runs < 1) {
  process.stderr.write('bench:sim: --runs must be a positive integer\n');
  process.exit(2);
}

const cases = CASES.map(({ vcpus, memoryGiB }) => {
  for (let i = 0; i < Math.min(50, runs); i += 1) lifecycle(vcpus, memoryGiB); // warm-up
  const samples: number[] = [];
  for (let i = 0; i < runs; i += 1) {
    const start = performance.now();
    lifecycle(vcpus, memoryGiB);
    samples.push(performance.now() - start);
  }
  return { vcpus, memoryGiB, medianMs: Number(median(samples).toFixed(4)) };
});
const [small, large] = cases;
const ratio = small && large ? Number((large.medianMs / small.medianMs).toFixed(2)) : NaN;
const report = { runs, cases, ratio };

if (values.json === true) {
  process.stdout.write(`${JSON.stringify(report)}\n`);
} else {
  process.stdout.write(
    'lifecycle: boot + fault in all memory, reboot cold, terminate, reuse, terminate\n',
  );
  for (const c of cases) {
    process.stdout.write(
      `${String(c.vcpus).padStart(3)} vCPUs ${String(c.memoryGiB).padStart(4)} GiB: median ${c.medianMs.toFixed(3)} ms over ${runs} runs\n`,
    );
  }
  process.stdout.write(
    `ratio large/small: ${ratio} (target <= 2); large lifecycle target < 5 ms\n`,
  );
}
