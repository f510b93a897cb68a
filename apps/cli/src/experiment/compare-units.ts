// A metric's value as a person reads it, by the metric's declared unit: seconds (ms below one),
// bytes in binary units, fractions as percents, counts as they are. Three significant figures:
// enough to see a change, few enough to line up in a column.
import { METRICS, isMetricName, type MetricUnit } from '#experiments';

const KIB = 1024;
const MIB = 1024 ** 2;
const GIB = 1024 ** 3;

/** `value` of metric `name` with its unit, e.g. `1.5 s`, `2.25 GiB`, `12.5%`, `3`. */
export function formatMetric(name: string, value: number): string {
  const unit = unitOf(name);
  switch (unit) {
    case 'seconds':
      return value !== 0 && Math.abs(value) < 1
        ? `${significant(value * 1000)} ms`
        : `${significant(value)} s`;
    case 'bytes':
      return formatBytes(value);
    case 'fraction':
      return `${significant(value * 100)}%`;
    case 'count':
      return significant(value);
    case undefined:
      return significant(value);
  }
}

/**
 * A change of metric `name`, signed, e.g. `+1.5 s`, `-512 MiB`; a change of a fraction is in
 * percentage points (`+2.5 pp`), since a percent of a percent would read as a relative change.
 */
export function formatMetricChange(name: string, change: number): string {
  const sign = change > 0 ? '+' : change < 0 ? '-' : '';
  const size = Math.abs(change);
  const magnitude =
    unitOf(name) === 'fraction' ? `${significant(size * 100)} pp` : formatMetric(name, size);
  return `${sign}${magnitude}`;
}

/** A relative change as a signed percent, e.g. `+12.5%`. */
export function formatRelativeChange(relative: number): string {
  const sign = relative > 0 ? '+' : relative < 0 ? '-' : '';
  return `${sign}${significant(Math.abs(relative) * 100)}%`;
}

function unitOf(name: string): MetricUnit | undefined {
  return isMetricName(name) ? METRICS[name].unit : undefined;
}

function formatBytes(value: number): string {
  const size = Math.abs(value);
  if (size >= GIB) return `${significant(value / GIB)} GiB`;
  if (size >= MIB) return `${significant(value / MIB)} MiB`;
  if (size >= KIB) return `${significant(value / KIB)} KiB`;
  return `${significant(value)} B`;
}

/** Three significant figures without an exponent or trailing zeros; whole above 1000. */
function significant(value: number): string {
  if (value === 0 || !Number.isFinite(value)) return String(value === 0 ? 0 : value);
  const magnitude = Math.floor(Math.log10(Math.abs(value)));
  const decimals = Math.min(12, Math.max(0, 2 - magnitude));
  const fixed = value.toFixed(decimals);
  const trimmed = fixed.includes('.') ? fixed.replace(/\.?0+$/, '') : fixed;
  return trimmed === '-0' ? '0' : trimmed;
}
