import {
  type CostModelName,
  type HostConfigInput,
  InvalidHostConfigError,
  type KernelFeatures,
  createHost,
  makeHostConfig,
  settleRelease,
} from '#tdx-sim';
import type { Micros } from '#vmm';
import { InvalidRequestError } from './errors.js';
import type { HostDocument } from './model.js';
import {
  type HkidReleaseFaults,
  checkReleaseFaults,
  noReleaseAttempts,
  sameReleaseFaults,
} from './release-faults.js';

/** What `POST /v1/hosts` accepts. */
export interface HostSpec {
  id: string;
  memoryGiB: number;
  hkids: number;
  packages: number;
  cpus: number;
  hkidCgroupLimit?: number | null;
  kernel: KernelFeatures;
  costModel?: CostModelName;
  /** Which HKID release attempts fail (none when absent): an experiment's faults. */
  hkidReleaseFaults?: HkidReleaseFaults;
}

/** A new host document (version 0: not stored yet). */
export function createHostDocument(spec: HostSpec, nowMs: number): HostDocument {
  const input: HostConfigInput = {
    memoryGiB: spec.memoryGiB,
    hkids: spec.hkids,
    packages: spec.packages,
    cpus: spec.cpus,
    hkidCgroupLimit: spec.hkidCgroupLimit ?? null,
    kernel: spec.kernel,
    costModel: spec.costModel ?? 'calibrated',
  };
  let config;
  try {
    config = makeHostConfig(input);
  } catch (error) {
    if (error instanceof InvalidHostConfigError) throw new InvalidRequestError(error.message);
    throw error;
  }
  const faults =
    spec.hkidReleaseFaults === undefined ? {} : checkReleaseFaults(spec.hkidReleaseFaults);
  return {
    id: spec.id,
    version: 0,
    createdAtMs: nowMs,
    sim: createHost(config),
    vms: {},
    ops: {},
    clock: 0,
    clockAtMs: nowMs,
    arrivals: 0,
    releases: [],
    hkidLockFreeAt: 0,
    hkidReleaseFaults: faults,
    hkidReleaseAttempts: noReleaseAttempts(),
  };
}

/**
 * The host with a new HKID release fault setting, counting attempts afresh. The setting it has
 * already changes nothing (the same document comes back), so setting it again is harmless.
 */
export function setReleaseFaults(doc: HostDocument, faults: HkidReleaseFaults): HostDocument {
  const checked = checkReleaseFaults(faults);
  if (sameReleaseFaults(doc.hkidReleaseFaults ?? {}, checked)) return doc;
  return { ...doc, hkidReleaseFaults: checked, hkidReleaseAttempts: noReleaseAttempts() };
}

/**
 * Returns to the host whatever was freed by steps whose virtual time has passed by `at` (a
 * virtual time of the host, microseconds). Returns the same document when nothing was due.
 */
export function settleDue(doc: HostDocument, at: Micros): HostDocument {
  const due = doc.releases.filter((r) => r.at <= at);
  if (due.length === 0) return doc;
  let sim = doc.sim;
  for (const pending of due) sim = settleRelease(sim, pending.release);
  return { ...doc, sim, releases: doc.releases.filter((r) => r.at > at) };
}

/**
 * The host's virtual time (microseconds) at real time `nowMs`, paced by `timeScale` virtual
 * seconds per real second (0: its clock as it is).
 */
export function hostTimeAt(doc: HostDocument, nowMs: number, timeScale: number): Micros {
  if (timeScale === 0) return doc.clock;
  // Real milliseconds times virtual seconds per real second are virtual milliseconds.
  return doc.clock + Math.round(Math.max(0, nowMs - doc.clockAtMs) * timeScale * 1000);
}

/** The real time at which the host reaches virtual time `at`, paced by `timeScale`. */
export function realTimeOf(doc: HostDocument, at: Micros, timeScale: number): number {
  if (timeScale === 0 || at <= doc.clock) return doc.clockAtMs;
  return doc.clockAtMs + (at - doc.clock) / 1000 / timeScale;
}
