// What report.html needs to draw a chart: an ECharts option (plain JSON, so that it travels in
// the page's data) and the height of its box. Colours are declared here once so that a strategy
// or a part of the breakdown keeps its colour from chart to chart.
import type { EChartsOption } from 'echarts';

export interface ChartSpec {
  /** The chart's key in the page's data and its box's `data-chart`. */
  readonly id: string;
  readonly option: EChartsOption;
  /** Pixels: horizontal bar charts grow with their categories. */
  readonly height: number;
}

/** Distinct hues, dark enough for white backgrounds. */
export const PALETTE = [
  '#1f5fa8',
  '#c2571a',
  '#2e7d32',
  '#7b3fa0',
  '#b3261e',
  '#00796b',
  '#8d6e00',
  '#455a64',
] as const;

export function paletteColor(index: number): string {
  return PALETTE[index % PALETTE.length] ?? PALETTE[0];
}

/** A colour mixed with white: 0 keeps it, 1 is white. The lighter the shade, the lower the percentile. */
export function lighten(hexColor: string, amount: number): string {
  const channels = [1, 3, 5].map((start) => parseInt(hexColor.slice(start, start + 2), 16));
  return `#${channels
    .map((channel) =>
      Math.round(channel + (255 - channel) * amount)
        .toString(16)
        .padStart(2, '0'),
    )
    .join('')}`;
}

/** A number rounded for the page: the tooltips show the data as it is. */
export function roundTo(value: number, digits: number): number {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}

/** The mean of some numbers weighted by others; null for none (or no weight). */
export function weightedMean(values: readonly number[], weights: readonly number[]): number | null {
  let sum = 0;
  let weight = 0;
  values.forEach((value, index) => {
    const w = weights[index] ?? 0;
    sum += value * w;
    weight += w;
  });
  return weight === 0 ? null : sum / weight;
}

/** The text style shared by every chart: dark on light, the page's font. */
export const BASE_OPTION = {
  animation: false,
  backgroundColor: '#ffffff',
  textStyle: { color: '#1b1b1b', fontFamily: 'system-ui, sans-serif' },
} as const satisfies EChartsOption;
