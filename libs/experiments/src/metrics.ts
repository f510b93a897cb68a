// The metrics an experiment reports, declared once: thresholds, reports, comparisons and the
// scenario schema's list of names derive from this table.

/** How a metric's value reads. */
export type MetricUnit = 'seconds' | 'bytes' | 'count' | 'fraction';

export interface MetricDeclaration {
  unit: MetricUnit;
  /** Which direction is better, for comparisons. */
  better: 'lower' | 'higher';
  /**
   * What it is computed from: `operations` can be narrowed by a threshold's `where` (phase, VM
   * group, action, strategy); `fleet` only by phase.
   */
  over: 'operations' | 'fleet';
  /** Shown in reports and first in comparisons. */
  headline: boolean;
  description: string;
}

const STATS = ['mean', 'p50', 'p95', 'p99', 'max'] as const;
type Stat = (typeof STATS)[number];

/** The five statistics of a per-operation quantity, e.g. `downtime.p99`. */
function distribution<Q extends string>(
  quantity: Q,
  what: string,
  headline: readonly Stat[],
): Record<`${Q}.${Stat}`, MetricDeclaration> {
  return Object.fromEntries(
    STATS.map((stat) => [
      `${quantity}.${stat}`,
      {
        unit: 'seconds',
        better: 'lower',
        over: 'operations',
        headline: headline.includes(stat),
        description: `${stat} of ${what} (succeeded operations)`,
      } satisfies MetricDeclaration,
    ]),
  ) as Record<`${Q}.${Stat}`, MetricDeclaration>;
}

export const METRICS = {
  ...distribution('downtime', 'seconds each VM did not run', ['p50', 'p99']),
  ...distribution('completion', 'seconds from each request to its end', ['p99']),
  ...distribution('reclaim', 'seconds of reclaim calls per operation', []),
  ...distribution('hkidHeld', 'seconds an old VM kept its HKID', []),
  ...distribution('queue', 'seconds before the first step (admission and host slot)', []),
  ...distribution('hkidWait', 'seconds steps waited for an HKID', []),
  ...distribution('memoryWait', 'seconds steps waited for memory', []),
  makespan: {
    unit: 'seconds',
    better: 'lower',
    over: 'fleet',
    headline: true,
    description: 'from the first request to the end of the last operation',
  },
  'operations.total': {
    unit: 'count',
    better: 'higher',
    over: 'operations',
    headline: false,
    description: 'operations submitted (refused requests not included)',
  },
  'operations.succeeded': {
    unit: 'count',
    better: 'higher',
    over: 'operations',
    headline: false,
    description: 'operations that succeeded',
  },
  'operations.failed': {
    unit: 'count',
    better: 'lower',
    over: 'operations',
    headline: true,
    description: 'operations that failed',
  },
  'operations.cancelled': {
    unit: 'count',
    better: 'lower',
    over: 'operations',
    headline: false,
    description: 'operations cancelled',
  },
  'operations.refused': {
    unit: 'count',
    better: 'lower',
    over: 'operations',
    headline: false,
    description: 'requests refused before anything changed (busy VM, plan the kernel refuses)',
  },
  'operations.failedFraction': {
    unit: 'fraction',
    better: 'lower',
    over: 'operations',
    headline: false,
    description: 'failed and refused over all requests',
  },
  'memory.free.minBytes': {
    unit: 'bytes',
    better: 'higher',
    over: 'fleet',
    headline: false,
    description: 'least free host memory in the fleet at any sample',
  },
  'memory.free.minFraction': {
    unit: 'fraction',
    better: 'higher',
    over: 'fleet',
    headline: true,
    description: 'least free memory as a fraction of all host memory',
  },
  'memory.headroomBytes': {
    unit: 'bytes',
    better: 'lower',
    over: 'fleet',
    headline: true,
    description: 'free memory the phases used up: free at a phase start minus its least free',
  },
  'memory.retained.peakBytes': {
    unit: 'bytes',
    better: 'lower',
    over: 'fleet',
    headline: false,
    description: 'most memory kept in guest_memfds for a reuse reboot at once',
  },
  'memory.orphaned.peakBytes': {
    unit: 'bytes',
    better: 'lower',
    over: 'fleet',
    headline: false,
    description: 'most memory held by guest_memfds no live VM refers to',
  },
  'memory.orphaned.endBytes': {
    unit: 'bytes',
    better: 'lower',
    over: 'fleet',
    headline: false,
    description: 'memory held by guest_memfds no live VM refers to at the end',
  },
  'memory.free.driftBytes': {
    unit: 'bytes',
    better: 'higher',
    over: 'fleet',
    headline: false,
    description: 'free memory at the end minus at the start of the first phase (a leak is < 0)',
  },
  'hkids.inUse.peak': {
    unit: 'count',
    better: 'lower',
    over: 'fleet',
    headline: false,
    description: 'most HKIDs held or being released at once',
  },
  'hkids.zombie.peak': {
    unit: 'count',
    better: 'lower',
    over: 'fleet',
    headline: false,
    description: 'most HKIDs of zombie VMs at once',
  },
  'hkids.zombie.end': {
    unit: 'count',
    better: 'lower',
    over: 'fleet',
    headline: false,
    description: 'HKIDs of zombie VMs at the end',
  },
  'hkids.leaked.end': {
    unit: 'count',
    better: 'lower',
    over: 'fleet',
    headline: false,
    description: 'HKIDs a failed release leaked for good, at the end',
  },
} as const satisfies Record<string, MetricDeclaration>;

export type MetricName = keyof typeof METRICS;

export const METRIC_NAMES = Object.keys(METRICS) as MetricName[];

/** The metrics reports show first and comparisons test. */
export const HEADLINE_METRICS = METRIC_NAMES.filter((name) => METRICS[name].headline);

export function isMetricName(name: string): name is MetricName {
  return Object.hasOwn(METRICS, name);
}
