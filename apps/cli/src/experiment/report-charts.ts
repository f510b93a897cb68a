// The bar charts of report.html, built on the server as plain ECharts options: downtime
// percentiles per group, where the slowest operations' time went, the mean breakdown per group,
// and waits and failures by cause. Where a variant ran several times, a chart shows the mean over
// its repetitions.
import type { BarSeriesOption, EChartsOption } from 'echarts';
import type { Breakdown, ExperimentResult, GroupStats, RunResult } from '#experiments';
import {
  BASE_OPTION,
  type ChartSpec,
  lighten,
  paletteColor,
  roundTo,
  weightedMean,
} from './chart-spec.js';
import { runLabel, runsByVariant } from './result-runs.js';

const PERCENTILES = ['p50', 'p95', 'p99'] as const;
/** How much lighter each percentile's bar is than its strategy's colour. */
const PERCENTILE_SHADE: Record<(typeof PERCENTILES)[number], number> = {
  p50: 0.6,
  p95: 0.3,
  p99: 0,
};

/** The parts of an operation's time, in the order they happen, each with its colour. */
export const BREAKDOWN_PARTS: readonly { key: keyof Breakdown; label: string; color: string }[] = [
  { key: 'queue', label: 'queue', color: '#8a8f98' },
  { key: 'hkidWait', label: 'HKID wait', color: '#c2571a' },
  { key: 'memoryWait', label: 'memory wait', color: '#b3261e' },
  { key: 'lockWait', label: 'lock wait', color: '#7b3fa0' },
  { key: 'reclaim', label: 'reclaim', color: '#1f5fa8' },
  { key: 'work', label: 'work', color: '#2e7d32' },
];

/** Rows of a horizontal bar chart: pixels per category, plus room for the legend and the axis. */
function horizontalHeight(categories: number): number {
  return Math.max(220, 90 + categories * 30);
}

function mean(values: readonly number[]): number | null {
  return values.length === 0 ? null : values.reduce((sum, v) => sum + v, 0) / values.length;
}

function pushTo<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  const values = map.get(key);
  if (values === undefined) map.set(key, [value]);
  else values.push(value);
}

const whatRan = (group: Pick<GroupStats, 'action' | 'strategy'>) =>
  group.strategy === null ? group.action : `${group.action} ${group.strategy}`;

/**
 * The series of a chart per variant and strategy: named by what tells them apart (the variant
 * when there are several, the strategy when a variant has several), empty when nothing does.
 */
function legLabels(
  result: ExperimentResult,
  groupsOf: (run: RunResult) => readonly Pick<GroupStats, 'action' | 'strategy'>[],
) {
  const byVariant = runsByVariant(result);
  const strategiesByVariant = new Map<string, Set<string>>();
  for (const [variant, runs] of byVariant) {
    strategiesByVariant.set(variant, new Set(runs.flatMap((run) => groupsOf(run).map(whatRan))));
  }
  const allStrategies = new Set([...strategiesByVariant.values()].flatMap((s) => [...s]));
  const showVariant = byVariant.size > 1;
  const showStrategy = showVariant
    ? [...strategiesByVariant.values()].some((strategies) => strategies.size > 1)
    : allStrategies.size > 1;
  return {
    only: allStrategies.size === 1 ? [...allStrategies][0] : undefined,
    label(variant: string, strategy: string): string {
      return [showVariant ? variant : '', showStrategy ? strategy : ''].filter(Boolean).join(' · ');
    },
  };
}

/** Downtime p50/p95/p99 per VM group (and phase), one series per percentile and variant. */
export function downtimeChart(result: ExperimentResult): ChartSpec | null {
  const groups = result.runs.flatMap((run) =>
    run.groups.filter((g) => g.downtime.count > 0).map((g) => ({ run, group: g })),
  );
  if (groups.length === 0) return null;
  const withPhase = new Set(groups.map(({ group }) => group.phase)).size > 1;
  const legs = legLabels(result, (run) => run.groups.filter((g) => g.downtime.count > 0));

  const categories: string[] = [];
  const legNames: string[] = [];
  // leg → category → the percentiles of each repetition.
  const cells = new Map<string, Map<string, GroupStats['downtime'][]>>();
  for (const { run, group } of groups) {
    const category = `${withPhase ? `${group.phase}: ` : ''}${group.vmGroup} (${group.vcpus} vCPU, ${group.memoryGiB} GiB)`;
    if (!categories.includes(category)) categories.push(category);
    const leg = legs.label(run.variant, whatRan(group));
    if (!legNames.includes(leg)) legNames.push(leg);
    const byCategory = cells.get(leg) ?? new Map<string, GroupStats['downtime'][]>();
    cells.set(leg, byCategory);
    pushTo(byCategory, category, group.downtime);
  }

  const series: BarSeriesOption[] = legNames.flatMap((leg, legIndex) =>
    PERCENTILES.map((percentile) => ({
      type: 'bar',
      name: leg === '' ? percentile : `${leg} ${percentile}`,
      itemStyle: { color: lighten(paletteColor(legIndex), PERCENTILE_SHADE[percentile]) },
      data: categories.map((category) => {
        const value = mean((cells.get(leg)?.get(category) ?? []).map((d) => d[percentile]));
        return value === null ? null : roundTo(value, 1);
      }),
    })),
  );
  const option: EChartsOption = {
    ...BASE_OPTION,
    tooltip: { trigger: 'axis', axisPointer: { type: 'shadow' } },
    legend: { top: 0, type: 'scroll' },
    grid: { left: 70, right: 20, top: 60, bottom: 50 },
    xAxis: {
      type: 'category',
      data: categories,
      name: legs.only === undefined ? 'VM group' : `VM group (${legs.only})`,
      nameLocation: 'middle',
      nameGap: 30,
      // Every group named; many of them lean so that their names do not collide.
      axisLabel: { interval: 0, rotate: categories.length > 6 ? 30 : 0 },
    },
    yAxis: {
      type: 'value',
      name: 'downtime',
      axisLabel: { formatter: '{value} s' },
    },
    series,
  };
  return { id: 'downtime', option, height: 420 };
}

function stackedBreakdownSeries(breakdowns: readonly (Breakdown | null)[]): BarSeriesOption[] {
  return BREAKDOWN_PARTS.map((part) => ({
    type: 'bar',
    name: part.label,
    stack: 'time',
    itemStyle: { color: part.color },
    emphasis: { focus: 'series' },
    data: breakdowns.map((breakdown) =>
      breakdown === null ? null : roundTo(breakdown[part.key], 2),
    ),
  }));
}

function horizontalStackOption(categories: string[], series: BarSeriesOption[]): EChartsOption {
  return {
    ...BASE_OPTION,
    tooltip: { trigger: 'axis', axisPointer: { type: 'shadow' } },
    legend: { top: 0 },
    grid: {
      left: 10,
      right: 30,
      top: 40,
      bottom: 40,
      outerBoundsMode: 'same',
      outerBoundsContain: 'axisLabel',
    },
    xAxis: {
      type: 'value',
      name: 'seconds',
      nameLocation: 'middle',
      nameGap: 25,
      axisLabel: { formatter: '{value} s' },
    },
    // The first category (the slowest) on top.
    yAxis: { type: 'category', data: categories, inverse: true },
    series,
  };
}

/** At most this many of the slowest operations are drawn, shared among the variants. */
const SLOWEST_DRAWN = 12;

/** The slowest operations, each a stacked bar of where its time went; per variant when several. */
export function slowestChart(result: ExperimentResult): ChartSpec | null {
  const byVariant = runsByVariant(result);
  const perVariant = Math.max(3, Math.ceil(SLOWEST_DRAWN / Math.max(1, byVariant.size)));
  const severalRuns = result.runs.length > 1;
  const rows = [...byVariant.values()].flatMap((runs) =>
    runs
      .flatMap((run) => run.slowest.map((operation) => ({ run, operation })))
      .sort((a, b) => b.operation.completion - a.operation.completion)
      .slice(0, perVariant),
  );
  if (rows.length === 0) return null;
  const categories = rows.map(({ run, operation }) => {
    const what = `${whatRan(operation)}, ${operation.vmGroup} ${operation.memoryGiB} GiB`;
    return `${operation.vmId} (${what})${severalRuns ? ` · ${runLabel(run)}` : ''}`;
  });
  const option = horizontalStackOption(
    categories,
    stackedBreakdownSeries(rows.map(({ operation }) => operation.breakdown)),
  );
  return { id: 'slowest', option, height: horizontalHeight(categories.length) };
}

/** The mean breakdown of each group's succeeded operations, weighted by how many there were. */
export function meanBreakdownChart(result: ExperimentResult): ChartSpec | null {
  const legs = legLabels(result, (run) => run.groups);
  const withPhase = new Set(result.runs.flatMap((run) => run.groups.map((g) => g.phase))).size > 1;
  const byCategory = new Map<string, { group: GroupStats; weight: number }[]>();
  for (const run of result.runs) {
    for (const group of run.groups) {
      if (group.succeeded === 0) continue;
      const leg = legs.label(run.variant, whatRan(group));
      const phase = withPhase ? `${group.phase}: ` : '';
      const category = `${phase}${group.vmGroup} (${group.memoryGiB} GiB)${leg === '' ? '' : ` · ${leg}`}`;
      pushTo(byCategory, category, { group, weight: group.succeeded });
    }
  }
  if (byCategory.size === 0) return null;
  const categories = [...byCategory.keys()];
  const breakdowns = categories.map((category) => {
    const entries = byCategory.get(category) ?? [];
    const weights = entries.map((entry) => entry.weight);
    const part = (key: keyof Breakdown) =>
      weightedMean(
        entries.map((entry) => entry.group.breakdown[key]),
        weights,
      ) ?? 0;
    const breakdown: Breakdown = {
      queue: part('queue'),
      hkidWait: part('hkidWait'),
      memoryWait: part('memoryWait'),
      lockWait: part('lockWait'),
      reclaim: part('reclaim'),
      work: part('work'),
    };
    return breakdown;
  });
  const option = horizontalStackOption(categories, stackedBreakdownSeries(breakdowns));
  return { id: 'mean-breakdown', option, height: horizontalHeight(categories.length) };
}

/** Waits and failures by cause: counts per run, and the seconds the waits took. */
export function causesChart(result: ExperimentResult): ChartSpec | null {
  const byVariant = runsByVariant(result);
  const showVariant = byVariant.size > 1;
  const causeName = (cause: { cause: string; step: string | null }) =>
    cause.step === null ? cause.cause : `${cause.cause} (${cause.step})`;
  const categories = [
    ...new Set(result.runs.flatMap((run) => [...run.waits, ...run.failures].map(causeName))),
  ];
  if (categories.length === 0) return null;

  const series: BarSeriesOption[] = [];
  let variantIndex = 0;
  for (const [variant, runs] of byVariant) {
    if (runs.length === 0) continue;
    const color = paletteColor(variantIndex);
    variantIndex += 1;
    const prefix = showVariant ? `${variant}: ` : '';
    // Mean per run over the repetitions: a cause missing from a run counts 0 there.
    const perRun = (
      pick: (
        run: RunResult,
      ) => readonly { cause: string; step: string | null; count: number; seconds: number }[],
      field: 'count' | 'seconds',
    ) =>
      categories.map((category) => {
        const total = runs.reduce(
          (sum, run) =>
            sum +
            pick(run)
              .filter((cause) => causeName(cause) === category)
              .reduce((s, cause) => s + cause[field], 0),
          0,
        );
        return total === 0 ? null : roundTo(total / runs.length, field === 'count' ? 1 : 2);
      });
    series.push(
      {
        type: 'bar',
        name: `${prefix}waits`,
        xAxisIndex: 0,
        yAxisIndex: 0,
        itemStyle: { color },
        data: perRun((run) => run.waits, 'count'),
      },
      {
        type: 'bar',
        name: `${prefix}failures`,
        xAxisIndex: 0,
        yAxisIndex: 0,
        itemStyle: { color: lighten(color, 0.5), borderColor: color, borderWidth: 1 },
        data: perRun((run) => run.failures, 'count'),
      },
      {
        type: 'bar',
        name: `${prefix}seconds waited`,
        xAxisIndex: 1,
        yAxisIndex: 1,
        itemStyle: { color: lighten(color, 0.25) },
        data: perRun((run) => run.waits, 'seconds'),
      },
    );
  }
  const option: EChartsOption = {
    ...BASE_OPTION,
    tooltip: { trigger: 'axis', axisPointer: { type: 'shadow' } },
    legend: { top: 0, type: 'scroll' },
    grid: [
      {
        left: 10,
        width: '44%',
        top: 50,
        bottom: 40,
        outerBoundsMode: 'same',
        outerBoundsContain: 'axisLabel',
      },
      { right: 30, width: '40%', top: 50, bottom: 40 },
    ],
    xAxis: [
      { gridIndex: 0, type: 'value', name: 'count per run', nameLocation: 'middle', nameGap: 25 },
      {
        gridIndex: 1,
        type: 'value',
        name: 'seconds waited per run',
        nameLocation: 'middle',
        nameGap: 25,
        axisLabel: { formatter: '{value} s' },
      },
    ],
    yAxis: [
      { gridIndex: 0, type: 'category', data: categories, inverse: true },
      {
        gridIndex: 1,
        type: 'category',
        data: categories,
        inverse: true,
        axisLabel: { show: false },
      },
    ],
    series,
  };
  return { id: 'causes', option, height: horizontalHeight(categories.length * 1.5) };
}
