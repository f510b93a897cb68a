// How the reports write a metric's value: by the unit METRICS declares for it, the same way in
// summary.md and report.html. Numbers are grouped the en-US way whatever the machine's locale, so
// that a report's bytes do not depend on where it was rendered.
import { type MetricUnit, isMetricName, METRICS } from '#experiments';

const GIB = 1024 ** 3;
const MIB = 1024 ** 2;
const KIB = 1024;

/** What a report shows for a value it does not have (a threshold over no operations). */
export const MISSING_VALUE = 'n/a';

/** At most `fractionDigits` after the point, trailing zeros dropped: "60 s" rather than "60.0 s". */
function formatNumber(value: number, fractionDigits: number): string {
  return value.toLocaleString('en-US', { maximumFractionDigits: fractionDigits });
}

/** Digits after the point that keep about three significant ones, none past 100. */
function fractionDigitsFor(magnitude: number): number {
  if (magnitude >= 100) return 0;
  if (magnitude >= 10) return 1;
  return 2;
}

/** Seconds: "517 s", "12.3 s", "1.2 s", "0.045 s", "0 s". */
export function formatSeconds(seconds: number): string {
  if (!Number.isFinite(seconds)) return MISSING_VALUE;
  const magnitude = Math.abs(seconds);
  if (magnitude === 0) return '0 s';
  if (magnitude >= 100) return `${formatNumber(seconds, 0)} s`;
  if (magnitude >= 1) return `${formatNumber(seconds, 1)} s`;
  // Under a second, two significant digits: reclaim and lock waits live there.
  return `${Number(seconds.toPrecision(2))} s`;
}

/** Bytes in binary units: "12.5 GiB", "512 MiB", "0 B"; negative for a drift that lost memory. */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes)) return MISSING_VALUE;
  const magnitude = Math.abs(bytes);
  if (magnitude === 0) return '0 B';
  for (const [size, unit] of [
    [GIB, 'GiB'],
    [MIB, 'MiB'],
    [KIB, 'KiB'],
  ] as const) {
    if (magnitude >= size) {
      const scaled = bytes / size;
      return `${formatNumber(scaled, fractionDigitsFor(Math.abs(scaled)))} ${unit}`;
    }
  }
  return `${formatNumber(bytes, 0)} B`;
}

/** A fraction as a percentage: 0.123 → "12.3%"; a tiny non-zero one keeps two digits. */
export function formatFraction(fraction: number): string {
  if (!Number.isFinite(fraction)) return MISSING_VALUE;
  const percent = fraction * 100;
  if (percent !== 0 && Math.abs(percent) < 0.1) return `${Number(percent.toPrecision(2))}%`;
  return `${formatNumber(percent, 1)}%`;
}

/**
 * A count: an integer as one ("1,024"); a mean of counts over repetitions keeps one decimal
 * ("2.5"), since rounding it would hide a failure that happened in some runs only.
 */
export function formatCount(count: number): string {
  if (!Number.isFinite(count)) return MISSING_VALUE;
  return formatNumber(count, Number.isInteger(count) ? 0 : 1);
}

const FORMATTERS: Record<MetricUnit, (value: number) => string> = {
  seconds: formatSeconds,
  bytes: formatBytes,
  fraction: formatFraction,
  count: formatCount,
};

/** The unit METRICS declares for a metric, or undefined for a name it does not know. */
export function metricUnit(name: string): MetricUnit | undefined {
  return isMetricName(name) ? METRICS[name].unit : undefined;
}

/** A value of a metric in its unit; a name METRICS does not know prints as a plain number. */
export function formatMetric(name: string, value: number | null): string {
  if (value === null) return MISSING_VALUE;
  const unit = metricUnit(name);
  if (unit === undefined) return Number.isFinite(value) ? String(value) : MISSING_VALUE;
  return FORMATTERS[unit](value);
}

/**
 * A change of metric `name`, signed, e.g. `+1.5 s`, `-512 MiB`; a change of a fraction is in
 * percentage points (`+2.5 pp`), since a percent of a percent would read as a relative change.
 */
export function formatMetricChange(name: string, change: number): string {
  if (!Number.isFinite(change)) return MISSING_VALUE;
  const sign = change > 0 ? '+' : change < 0 ? '-' : '';
  const size = Math.abs(change);
  const magnitude =
    metricUnit(name) === 'fraction'
      ? `${formatNumber(size * 100, 1)} pp`
      : formatMetric(name, size);
  return `${sign}${magnitude}`;
}

/** A relative change as a signed percent, e.g. `+12.5%`. */
export function formatRelativeChange(relative: number): string {
  if (!Number.isFinite(relative)) return MISSING_VALUE;
  const sign = relative > 0 ? '+' : relative < 0 ? '-' : '';
  return `${sign}${formatNumber(Math.abs(relative) * 100, 1)}%`;
}
