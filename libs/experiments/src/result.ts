// What an experiment run gives: the shape of result.json. Everything a report, a comparison or
// a threshold reads is here, so that the reports never need the engine. Times are virtual
// seconds from the start of the run; memory is in bytes.

/** The result file's schema, versioned: a reader refuses a version it does not know. */
export const RESULT_SCHEMA = 'tdx-fleet/experiment-result@1';

/** Where a run ran. */
export type TargetName = 'offline' | 'daemon';

/** The value of one swept variable in a variant. */
export type VariableValue = string | number | boolean;

/** Where the result came from: enough to run it again and get the same bytes (offline). */
export interface Provenance {
  /** The scenario's name (a built-in's, or the file's `name`). */
  scenario: string;
  /** sha256 of the scenario as validated, in canonical JSON. */
  scenarioHash: string;
  /** The scenario as validated (defaults filled in). */
  scenarioDocument: unknown;
  seed: number;
  repeat: number;
  target: TargetName;
  /** The daemon's API URL (daemon target only). */
  api: string | null;
  /** The project's version (package.json). */
  version: string;
  /** The git revision the tool was built from, when known. */
  gitRevision: string | null;
}

/** Where one operation's time went, in seconds; the parts add up to its completion time. */
export interface Breakdown {
  /** From the request until its first step: waiting for admission and for a host slot. */
  queue: number;
  /** Steps waiting for a free HKID (ENOSPC on a key ID). */
  hkidWait: number;
  /** Steps waiting for free memory (ENOMEM). */
  memoryWait: number;
  /** Steps waiting for the host's HKID release lock. */
  lockWait: number;
  /** Reclaim calls on the way: the operation's reclaim seconds, capped by what is left. */
  reclaim: number;
  /** The rest of the work until the VM runs again (or is gone). */
  work: number;
}

/** Distribution of a quantity over operations. */
export interface Distribution {
  count: number;
  mean: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
}

/** Operations of one VM group, action and strategy within one phase. */
export interface GroupStats {
  phase: string;
  vmGroup: string;
  action: string;
  strategy: string | null;
  /** Representative size of the group's VMs (the mix's most common size). */
  vcpus: number;
  memoryGiB: number;
  operations: number;
  succeeded: number;
  failed: number;
  cancelled: number;
  /** Seconds the VM did not run (succeeded operations). */
  downtime: Distribution;
  /** Seconds from the request to the end (succeeded operations). */
  completion: Distribution;
  reclaim: Distribution;
  hkidHeld: Distribution;
  /** Mean breakdown of the succeeded operations. */
  breakdown: Breakdown;
}

/** One of the slowest operations, for the per-VM breakdown. */
export interface SlowOperation {
  vmId: string;
  hostId: string | null;
  phase: string;
  vmGroup: string;
  action: string;
  strategy: string | null;
  memoryGiB: number;
  requestedAt: number;
  downtime: number;
  completion: number;
  breakdown: Breakdown;
}

/** A phase as it ran. */
export interface PhaseSpan {
  name: string;
  kind: 'storm' | 'rolling' | 'arrivals' | 'closed-loop';
  startedAt: number;
  /** When its last operation ended (its start, if it had none). */
  endedAt: number;
  operations: number;
}

/** Waits and failures counted by errno (or error code). */
export interface CountByCause {
  /** The errno (ENOSPC, ENOMEM...), `hkid-release-lock`, or a failure's code. */
  cause: string;
  /** The step that waited or failed, when there is one. */
  step: string | null;
  count: number;
  seconds: number;
}

/** The fleet over time, one column per quantity (the same length as `t`). */
export interface SeriesColumns {
  everySeconds: number;
  t: number[];
  freeBytes: number[];
  privateBytes: number[];
  retainedBytes: number[];
  orphanedBytes: number[];
  hkidsInUse: number[];
  hkidsZombie: number[];
  hkidsLeaked: number[];
  running: number[];
  waiting: number[];
}

/** One run: one variant, one repetition. */
export interface RunResult {
  variant: string;
  repetition: number;
  seed: number;
  phases: PhaseSpan[];
  /** Every metric of METRICS over the whole run, by name. */
  metrics: Record<string, number>;
  groups: GroupStats[];
  slowest: SlowOperation[];
  waits: CountByCause[];
  failures: CountByCause[];
  series: SeriesColumns;
  /** The fleet's memory and HKIDs, for fractions in the report. */
  capacity: { hosts: number; vms: number; memoryBytes: number; hkids: number };
  /** Threshold outcomes of this run. */
  thresholds: ThresholdOutcome[];
  /** The scenario's published figures beside this run's. */
  references: ReferenceOutcome[];
  /** Wall-clock seconds the run took (not part of the numbers; left out of offline bytes). */
  wallSeconds?: number;
}

/** A headline metric over a variant's repetitions. */
export interface Estimate {
  mean: number;
  /** 95% confidence interval of the mean (bootstrap); equal to the mean with one repetition. */
  low: number;
  high: number;
  values: number[];
}

/** One combination of the swept variables. */
export interface VariantResult {
  name: string;
  assignment: Record<string, VariableValue>;
  /** Every metric of the runs over the repetitions. */
  estimates: Record<string, Estimate>;
  passed: boolean;
}

/** One threshold checked on one run. */
export interface ThresholdOutcome {
  /** As written in the scenario, e.g. `downtime.p99 <= 150 (vmGroup=large)`. */
  label: string;
  metric: string;
  value: number | null;
  limit: number;
  bound: 'max' | 'min';
  passed: boolean;
  abortOnFail: boolean;
}

/** A published figure beside the simulated one. */
export interface ReferenceOutcome {
  label: string;
  metric: string;
  /** The published figure. */
  reference: number;
  /** This run's. */
  value: number;
  /** (value - reference) / reference. */
  relativeDifference: number;
  source: string;
}

/** What one kernel switch changes, from one value to another, over the variant pairs seen. */
export interface KernelEffect {
  /**
   * `same strategy`: variants that differ in the switch alone. `best strategy`: each kernel with
   * the strategy of least p99 downtime it can run (a feature that enables a strategy shows here).
   */
  basis: 'same strategy' | 'best strategy';
  switch: string;
  from: string;
  to: string;
  /** Pairs of variants compared. */
  pairs: number;
  /** The strategies of the pairs, `from -> to`. */
  strategies: string[];
  /** Mean change (to minus from) of downtime.p99, makespan and memory.headroomBytes. */
  change: Record<string, number>;
}

/** How live and offline differ on the same scenario (daemon target only). */
export interface Agreement {
  metric: string;
  live: number;
  offline: number;
  /** (live - offline) / offline; 0 when both are 0. */
  relativeDifference: number;
}

/** result.json. */
export interface ExperimentResult {
  schema: typeof RESULT_SCHEMA;
  provenance: Provenance;
  variants: VariantResult[];
  runs: RunResult[];
  /** True when every threshold held on every run. */
  passed: boolean;
  /** Set when a threshold with abortOnFail failed and the remaining runs were skipped. */
  aborted: { run: string; threshold: string } | null;
  /** Variants of the sweep that cannot run (a strategy a kernel refuses), and why. */
  skipped: { name: string; reason: string }[];
  /** What each kernel switch changes, when the sweep varies kernels (else empty). */
  kernelEffects: KernelEffect[];
  /** Daemon target: live against offline on the same scenario. */
  agreement: Agreement[] | null;
}
