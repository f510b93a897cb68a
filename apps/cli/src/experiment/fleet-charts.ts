// The fleet over time in report.html: free memory, memory retained for reuse and orphaned memory
// (GiB) and HKIDs in use, one chart per run with its phases shaded. A page cannot carry every
// sample of every run of a large sweep: it takes at most MAX_EMBEDDED_RUNS runs and at most about
// MAX_POINTS_PER_SERIES points per series, keeping each interval's extremes.
import type { EChartsOption, LineSeriesOption } from 'echarts';
import type { ExperimentResult, PhaseSpan, RunResult } from '#experiments';
import { BASE_OPTION, type ChartSpec, roundTo } from './chart-spec.js';
import { downsampleMinMax, type Point } from './downsample.js';
import { runLabel, runsByVariant } from './result-runs.js';

export const MAX_EMBEDDED_RUNS = 20;
export const MAX_POINTS_PER_SERIES = 1200;

const GIB = 1024 ** 3;

export interface FleetRunChart {
  readonly run: RunResult;
  readonly label: string;
  readonly chart: ChartSpec;
}

export interface FleetCharts {
  readonly runs: readonly FleetRunChart[];
  /** Runs in the result: more than `runs.length` when the page leaves some out. */
  readonly totalRuns: number;
  /** Whether some series lost samples to the cap on points. */
  readonly downsampled: boolean;
}

/**
 * The runs to embed: the first repetition of every variant, then the second of every variant,
 * and so on, so that a capped page still shows every variant (up to the cap).
 */
export function runsToEmbed(result: ExperimentResult, cap: number): RunResult[] {
  const queues = [...runsByVariant(result).values()];
  const picked: RunResult[] = [];
  for (let round = 0; picked.length < cap; round += 1) {
    const thisRound = queues.flatMap((runs) => runs.slice(round, round + 1));
    if (thisRound.length === 0) break;
    picked.push(...thisRound.slice(0, cap - picked.length));
  }
  return picked;
}

const GRIDS = [
  { top: 50, height: 150 },
  { top: 250, height: 130 },
  { top: 430, height: 110 },
] as const;

const CHART_HEIGHT = 640;

/** The phases as shaded bands; the top chart also names them. */
function phaseAreas(phases: readonly PhaseSpan[], named: boolean): LineSeriesOption['markArea'] {
  return {
    silent: true,
    label: { show: named, position: 'insideTop', color: '#3b3b3b' },
    data: phases.map((phase, index) => [
      {
        name: phase.name,
        xAxis: phase.startedAt,
        itemStyle: {
          color: index % 2 === 0 ? 'rgba(31, 95, 168, 0.07)' : 'rgba(194, 87, 26, 0.07)',
        },
      },
      { xAxis: phase.endedAt },
    ]),
  };
}

/** The HKIDs the hosts have: how close the fleet came to running out. */
function hkidCapacityLine(hkids: number): LineSeriesOption['markLine'] {
  return {
    silent: true,
    symbol: 'none',
    lineStyle: { color: '#7b3fa0', type: 'dashed' },
    label: { formatter: `{c} on the hosts`, position: 'insideEndTop', color: '#3b3b3b' },
    data: [{ yAxis: hkids }],
  };
}

function lineSeries(
  name: string,
  grid: number,
  color: string,
  data: Point[],
  markArea?: LineSeriesOption['markArea'],
  markLine?: LineSeriesOption['markLine'],
): LineSeriesOption {
  return {
    type: 'line',
    name,
    xAxisIndex: grid,
    yAxisIndex: grid,
    showSymbol: false,
    lineStyle: { width: 1.5 },
    itemStyle: { color },
    data,
    ...(markArea === undefined ? {} : { markArea }),
    ...(markLine === undefined ? {} : { markLine }),
  };
}

function fleetChart(run: RunResult, id: string): { chart: ChartSpec; downsampled: boolean } {
  const { t } = run.series;
  const points = (values: readonly number[], scale: number, digits: number): Point[] =>
    downsampleMinMax(t, values, MAX_POINTS_PER_SERIES).map(([time, value]) => [
      time,
      roundTo(value / scale, digits),
    ]);
  const end = Math.max(t.at(-1) ?? 0, run.phases.at(-1)?.endedAt ?? 0);
  const option: EChartsOption = {
    ...BASE_OPTION,
    tooltip: { trigger: 'axis' },
    axisPointer: { link: [{ xAxisIndex: 'all' }] },
    legend: { top: 0 },
    grid: GRIDS.map((grid) => ({ left: 80, right: 40, ...grid })),
    xAxis: GRIDS.map((_, index) => ({
      gridIndex: index,
      type: 'value',
      min: 0,
      max: end,
      axisLabel: { formatter: '{value} s', show: index === GRIDS.length - 1 },
    })),
    yAxis: [
      { gridIndex: 0, type: 'value', name: 'free (GiB)' },
      { gridIndex: 1, type: 'value', name: 'retained, orphaned (GiB)' },
      {
        gridIndex: 2,
        type: 'value',
        name: 'HKIDs in use',
        minInterval: 1,
        // Up to the hosts' HKIDs, so that their line shows how close the fleet came.
        max: Math.max(run.capacity.hkids, ...run.series.hkidsInUse),
      },
    ],
    dataZoom: [
      { type: 'inside', xAxisIndex: [0, 1, 2] },
      { type: 'slider', xAxisIndex: [0, 1, 2], bottom: 15, height: 20 },
    ],
    series: [
      lineSeries(
        'free memory',
        0,
        '#1f5fa8',
        points(run.series.freeBytes, GIB, 2),
        phaseAreas(run.phases, true),
      ),
      lineSeries(
        'retained for reuse',
        1,
        '#2e7d32',
        points(run.series.retainedBytes, GIB, 2),
        phaseAreas(run.phases, false),
      ),
      lineSeries('orphaned', 1, '#b3261e', points(run.series.orphanedBytes, GIB, 2)),
      lineSeries(
        'HKIDs in use',
        2,
        '#7b3fa0',
        points(run.series.hkidsInUse, 1, 0),
        phaseAreas(run.phases, false),
        hkidCapacityLine(run.capacity.hkids),
      ),
    ],
  };
  return {
    chart: { id, option, height: CHART_HEIGHT },
    downsampled: t.length > MAX_POINTS_PER_SERIES,
  };
}

/** A chart per embedded run, in the result's order, named by the run's position in it. */
export function fleetCharts(result: ExperimentResult): FleetCharts {
  const embedded = new Set(runsToEmbed(result, MAX_EMBEDDED_RUNS));
  let downsampled = false;
  const runs = result.runs.flatMap((run, index) => {
    if (!embedded.has(run)) return [];
    const built = fleetChart(run, `fleet-${index}`);
    downsampled ||= built.downsampled;
    return [{ run, label: `${runLabel(run)} (seed ${run.seed})`, chart: built.chart }];
  });
  return { runs, totalRuns: result.runs.length, downsampled };
}
