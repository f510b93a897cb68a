// A hand-built experiment result for the report renderers' tests: two variants (cold and reuse
// reboots) over two phases and two VM groups, the same bytes every time. The numbers are made up
// but keep the result's promises: the breakdown's parts add up to the completion time, every
// series column is as long as `t`, a variant passed when its runs' thresholds held.
import {
  type Breakdown,
  type Distribution,
  type Estimate,
  type ExperimentResult,
  type GroupStats,
  HEADLINE_METRICS,
  METRIC_NAMES,
  type PhaseSpan,
  RESULT_SCHEMA,
  type RunResult,
  type SeriesColumns,
  type SlowOperation,
  type ThresholdOutcome,
  type VariantResult,
} from '#experiments';

const GIB = 1024 ** 3;
const TIB = 1024 * GIB;

export interface ResultFixtureOptions {
  /** Runs of each variant (default 2). */
  repetitions?: number;
  /** The scenario's name; tests put markup in it. */
  scenario?: string;
  /** A daemon run, with the live-against-offline table (default false). */
  agreement?: boolean;
  /** Names of more variants, run like `reuse` (for many runs). */
  extraVariants?: readonly string[];
}

/** A small seeded generator (mulberry32): the fixture's noise, the same for the same seed. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let mixed = Math.imul(state ^ (state >>> 15), 1 | state);
    mixed ^= mixed + Math.imul(mixed ^ (mixed >>> 7), 61 | mixed);
    return ((mixed ^ (mixed >>> 14)) >>> 0) / 4294967296;
  };
}

const round = (value: number, digits = 3) => Number(value.toFixed(digits));

function distribution(count: number, p50: number): Distribution {
  return {
    count,
    mean: round(p50 * 1.1),
    p50: round(p50),
    p95: round(p50 * 1.6),
    p99: round(p50 * 1.9),
    max: round(p50 * 2.1),
  };
}

function breakdownOf(total: number, strategy: string, random: () => number): Breakdown {
  const queue = round(total * (0.1 + 0.1 * random()));
  const hkidWait = round(total * (strategy === 'cold' ? 0.2 : 0.05));
  const memoryWait = round(total * (strategy === 'cold' ? 0.15 : 0.02));
  const lockWait = round(total * 0.03);
  const reclaim = round(total * (strategy === 'cold' ? 0.2 : 0.01));
  const work = round(total - queue - hkidWait - memoryWait - lockWait - reclaim);
  return { queue, hkidWait, memoryWait, lockWait, reclaim, work };
}

const VM_GROUPS = [
  { vmGroup: 'small', vcpus: 4, memoryGiB: 16, downtime: 40 },
  { vmGroup: 'large', vcpus: 32, memoryGiB: 256, downtime: 60 },
] as const;

function phasesOf(random: () => number): PhaseSpan[] {
  const stormEnd = round(380 + 40 * random(), 1);
  return [
    { name: 'storm', kind: 'storm', startedAt: 0, endedAt: stormEnd, operations: 120 },
    {
      name: 'rolling',
      kind: 'rolling',
      startedAt: stormEnd,
      endedAt: round(stormEnd + 650 + 50 * random(), 1),
      operations: 96,
    },
  ];
}

function groupsOf(phases: PhaseSpan[], strategy: string, random: () => number): GroupStats[] {
  const slower = strategy === 'cold' ? 2.2 : 1;
  return phases.flatMap((phase) =>
    VM_GROUPS.map((group) => {
      const operations = phase.operations / 2;
      const failed = strategy === 'cold' && group.vmGroup === 'large' ? 2 : 0;
      const downtimeP50 = group.downtime * slower * (phase.kind === 'storm' ? 1.2 : 0.9);
      const completion = distribution(operations - failed, downtimeP50 * 1.3 + 5 * random());
      return {
        phase: phase.name,
        vmGroup: group.vmGroup,
        action: 'reboot',
        strategy,
        vcpus: group.vcpus,
        memoryGiB: group.memoryGiB,
        operations,
        succeeded: operations - failed,
        failed,
        cancelled: 0,
        downtime: distribution(operations - failed, downtimeP50 + 3 * random()),
        completion,
        reclaim: distribution(operations - failed, strategy === 'cold' ? 12 : 0.4),
        hkidHeld: distribution(operations - failed, 6),
        breakdown: breakdownOf(completion.mean, strategy, random),
      };
    }),
  );
}

function slowestOf(
  phases: PhaseSpan[],
  strategy: string,
  random: () => number,
  runIndex: number,
): SlowOperation[] {
  return Array.from({ length: 8 }, (_, index) => {
    const group = VM_GROUPS[index % 2 === 0 ? 1 : 0] ?? VM_GROUPS[0];
    const phase = phases[index < 5 ? 0 : 1] ?? phases[0];
    if (phase === undefined) throw new Error('the fixture has phases');
    const completion = round(
      (strategy === 'cold' ? 320 : 150) * (1 - index * 0.07) + 10 * random(),
    );
    const breakdown = breakdownOf(completion, strategy, random);
    return {
      vmId: `vm-${String(runIndex * 100 + index * 7 + 3).padStart(4, '0')}`,
      hostId: `host-${index % 8}`,
      phase: phase.name,
      vmGroup: group.vmGroup,
      action: 'reboot',
      strategy,
      memoryGiB: group.memoryGiB,
      requestedAt: round(phase.startedAt + 20 * index * random()),
      downtime: round(completion - breakdown.queue),
      completion,
      breakdown,
    };
  }).sort((a, b) => b.completion - a.completion);
}

function seriesOf(phases: PhaseSpan[], strategy: string, random: () => number): SeriesColumns {
  const everySeconds = 10;
  const end = phases.at(-1)?.endedAt ?? 0;
  const t = Array.from({ length: Math.floor(end / everySeconds) + 2 }, (_, i) => i * everySeconds);
  // Load rises and falls within each phase; the cold strategy frees late and orphans a little.
  const load = t.map((time) => {
    const phase = phases.find((p) => time >= p.startedAt && time < p.endedAt);
    if (phase === undefined) return 0;
    const progress = (time - phase.startedAt) / Math.max(1, phase.endedAt - phase.startedAt);
    return Math.sin(Math.PI * progress) * (phase.kind === 'storm' ? 1 : 0.5);
  });
  const retained = load.map((l) => (strategy === 'reuse' ? Math.round(l * 900 * GIB) : 0));
  const orphaned = load.map((l, i) =>
    strategy === 'cold' && i > 5 ? Math.round(Math.max(0, l - 0.6) * 300 * GIB) : 0,
  );
  const privateBytes = load.map((l) => Math.round((5 + l * 0.3) * TIB));
  const free = t.map((_, i) =>
    Math.round(
      8 * TIB -
        (privateBytes[i] ?? 0) -
        (retained[i] ?? 0) -
        (orphaned[i] ?? 0) -
        (strategy === 'cold' ? (load[i] ?? 0) * 1.1 * TIB : 0) -
        random() * 8 * GIB,
    ),
  );
  return {
    everySeconds,
    t,
    freeBytes: free,
    privateBytes,
    retainedBytes: retained,
    orphanedBytes: orphaned,
    hkidsInUse: load.map((l) => Math.round(320 + l * (strategy === 'cold' ? 150 : 60))),
    hkidsZombie: load.map((l) => (strategy === 'cold' ? Math.round(l * 12) : 0)),
    hkidsLeaked: load.map(() => 0),
    running: load.map((l) => Math.round(300 - l * 40)),
    waiting: load.map((l) => Math.round(l * 30)),
  };
}

function metricsOf(groups: GroupStats[], phases: PhaseSpan[], series: SeriesColumns) {
  const metrics: Record<string, number> = Object.fromEntries(METRIC_NAMES.map((name) => [name, 0]));
  const max = (pick: (g: GroupStats) => number) => Math.max(...groups.map(pick));
  for (const [quantity, pickDistribution] of [
    ['downtime', (g: GroupStats) => g.downtime],
    ['completion', (g: GroupStats) => g.completion],
    ['reclaim', (g: GroupStats) => g.reclaim],
    ['hkidHeld', (g: GroupStats) => g.hkidHeld],
  ] as const) {
    for (const stat of ['mean', 'p50', 'p95', 'p99', 'max'] as const) {
      metrics[`${quantity}.${stat}`] = max((g) => pickDistribution(g)[stat]);
    }
  }
  for (const stat of ['mean', 'p50', 'p95', 'p99', 'max'] as const) {
    metrics[`queue.${stat}`] = round(max((g) => g.breakdown.queue) * (stat === 'max' ? 2 : 1));
    metrics[`hkidWait.${stat}`] = round(max((g) => g.breakdown.hkidWait));
    metrics[`memoryWait.${stat}`] = round(max((g) => g.breakdown.memoryWait));
  }
  const failed = groups.reduce((sum, g) => sum + g.failed, 0);
  const total = groups.reduce((sum, g) => sum + g.operations, 0);
  const minFree = Math.min(...series.freeBytes);
  const firstFree = series.freeBytes[0] ?? 0;
  Object.assign(metrics, {
    makespan: phases.at(-1)?.endedAt ?? 0,
    'operations.total': total,
    'operations.succeeded': total - failed,
    'operations.failed': failed,
    'operations.cancelled': 0,
    'operations.refused': 0,
    'operations.failedFraction': round(failed / total, 5),
    'memory.free.minBytes': minFree,
    'memory.free.minFraction': round(minFree / (8 * TIB), 5),
    'memory.headroomBytes': firstFree - minFree,
    'memory.retained.peakBytes': Math.max(...series.retainedBytes),
    'memory.orphaned.peakBytes': Math.max(...series.orphanedBytes),
    'memory.orphaned.endBytes': series.orphanedBytes.at(-1) ?? 0,
    'memory.free.driftBytes': (series.freeBytes.at(-1) ?? 0) - firstFree,
    'hkids.inUse.peak': Math.max(...series.hkidsInUse),
    'hkids.zombie.peak': Math.max(...series.hkidsZombie),
    'hkids.zombie.end': series.hkidsZombie.at(-1) ?? 0,
  });
  return metrics;
}

function thresholdsOf(metrics: Record<string, number>, groups: GroupStats[]): ThresholdOutcome[] {
  const largeP99 = Math.max(
    ...groups.filter((g) => g.vmGroup === 'large').map((g) => g.downtime.p99),
  );
  const outcome = (
    label: string,
    metric: string,
    value: number | null,
    bound: 'max' | 'min',
    limit: number,
    abortOnFail = false,
  ): ThresholdOutcome => ({
    label,
    metric,
    value,
    limit,
    bound,
    abortOnFail,
    passed: value === null || (bound === 'max' ? value <= limit : value >= limit),
  });
  return [
    outcome('downtime.p99 <= 150 (vmGroup=large)', 'downtime.p99', largeP99, 'max', 150),
    outcome(
      'operations.failed <= 2',
      'operations.failed',
      metrics['operations.failed'] ?? 0,
      'max',
      2,
    ),
    outcome(
      'memory.free.minFraction >= 0.1',
      'memory.free.minFraction',
      metrics['memory.free.minFraction'] ?? 0,
      'min',
      0.1,
      true,
    ),
    // No operation matches: the value is missing and the threshold holds vacuously.
    outcome('queue.p99 <= 60 (strategy=terminate)', 'queue.p99', null, 'max', 60),
  ];
}

function runOf(variant: string, strategy: string, repetition: number, runIndex: number): RunResult {
  const seed = 42 + runIndex;
  const random = seededRandom(seed);
  const phases = phasesOf(random);
  const groups = groupsOf(phases, strategy, random);
  const series = seriesOf(phases, strategy, random);
  const metrics = metricsOf(groups, phases, series);
  const cold = strategy === 'cold';
  return {
    variant,
    repetition,
    seed,
    phases,
    metrics,
    groups,
    slowest: slowestOf(phases, strategy, random, runIndex),
    waits: [
      {
        cause: 'ENOSPC',
        step: 'tdh-mng-create',
        count: cold ? 48 : 9,
        seconds: cold ? 1290.5 : 88.2,
      },
      {
        cause: 'ENOMEM',
        step: 'memfd-allocate',
        count: cold ? 31 : 4,
        seconds: cold ? 870.25 : 12.5,
      },
      { cause: 'hkid-release-lock', step: null, count: 17, seconds: 3.4 },
    ],
    failures: cold ? [{ cause: 'EIO', step: 'reclaim', count: 4, seconds: 0 }] : [],
    series,
    capacity: { hosts: 8, vms: 300, memoryBytes: 8 * TIB, hkids: 512 },
    thresholds: thresholdsOf(metrics, groups),
    references: cold
      ? [
          {
            label: '4 vCPUs, 18 GiB: mainline',
            metric: 'reclaim.p50',
            reference: 72,
            value: 70.9,
            relativeDifference: (70.9 - 72) / 72,
            source: 'the seed',
          },
        ]
      : [],
  };
}

/** The mean and a made-up but ordered interval around it: enough for a report to draw. */
function estimateOf(values: number[]): Estimate {
  const mean = values.reduce((sum, v) => sum + v, 0) / Math.max(1, values.length);
  return { mean, low: Math.min(...values), high: Math.max(...values), values };
}

/** A deterministic ExperimentResult for the reports' tests. */
export function buildResultFixture(options: ResultFixtureOptions = {}): ExperimentResult {
  const repetitions = options.repetitions ?? 2;
  const variantStrategies = [
    { name: 'strategy=cold', strategy: 'cold' },
    { name: 'strategy=reuse', strategy: 'reuse' },
    ...(options.extraVariants ?? []).map((name) => ({ name, strategy: 'reuse' })),
  ];
  const runs: RunResult[] = [];
  const variants: VariantResult[] = variantStrategies.map(({ name, strategy }) => {
    const variantRuns = Array.from({ length: repetitions }, (_, repetition) =>
      runOf(name, strategy, repetition + 1, runs.length + repetition),
    );
    runs.push(...variantRuns);
    return {
      name,
      assignment: { strategy },
      estimates: Object.fromEntries(
        HEADLINE_METRICS.map((metric) => [
          metric,
          estimateOf(variantRuns.map((run) => run.metrics[metric] ?? 0)),
        ]),
      ),
      passed: variantRuns.every((run) => run.thresholds.every((outcome) => outcome.passed)),
    };
  });
  const daemon = options.agreement ?? false;
  return {
    schema: RESULT_SCHEMA,
    provenance: {
      scenario: options.scenario ?? 'reboot-storm',
      scenarioHash: '9f2c4b1de0a7c3f58e6d2b1a0c9f8e7d6c5b4a39281706f5e4d3c2b1a0f9e8d7',
      scenarioDocument: { name: options.scenario ?? 'reboot-storm' },
      seed: 42,
      repeat: repetitions,
      target: daemon ? 'daemon' : 'offline',
      api: daemon ? 'http://127.0.0.1:3000' : null,
      version: '0.1.0',
      gitRevision: '4bcbe63',
    },
    variants,
    runs,
    passed: variants.every((variant) => variant.passed),
    aborted: null,
    skipped: [
      {
        name: 'strategy=reuse kernel={linkGuestMemfd:false}',
        reason: "phase storm: reboot reuse does not run on host group h's kernel",
      },
    ],
    kernelEffects: [
      {
        basis: 'best strategy',
        switch: 'terminateVm',
        from: 'none',
        to: 'v4',
        pairs: 1,
        strategies: ['cold -> terminate'],
        change: { 'downtime.p99': -12.5, makespan: -300, 'memory.headroomBytes': 0 },
      },
    ],
    agreement: daemon
      ? [
          { metric: 'downtime.p99', live: 181.2, offline: 176.4, relativeDifference: 0.02721 },
          { metric: 'makespan', live: 1080, offline: 1092, relativeDifference: -0.01099 },
          { metric: 'operations.failed', live: 0, offline: 0, relativeDifference: 0 },
        ]
      : null,
  };
}
