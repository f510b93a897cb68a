import {
  type CostModelName,
  type HostConfigInput,
  InvalidHostConfigError,
  type KernelFeatures,
  createHost,
  makeHostConfig,
  settleRelease,
} from '#tdx-sim';
import { InvalidRequestError } from './errors.js';
import type { HostDocument } from './model.js';

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
  return {
    id: spec.id,
    version: 0,
    createdAtMs: nowMs,
    sim: createHost(config),
    vms: {},
    ops: {},
    settles: [],
    hkidReleaseBusyUntilMs: 0,
  };
}

/**
 * Returns to the host whatever was freed by steps whose virtual time has passed by `nowMs`.
 * Returns the same document when nothing was due.
 */
export function settleDue(doc: HostDocument, nowMs: number): HostDocument {
  const due = doc.settles.filter((s) => s.atMs <= nowMs);
  if (due.length === 0) return doc;
  let sim = doc.sim;
  for (const settle of due) sim = settleRelease(sim, settle.release);
  return { ...doc, sim, settles: doc.settles.filter((s) => s.atMs > nowMs) };
}

/** The earliest time something in flight returns to the host, or null. */
export function nextSettleAt(doc: HostDocument): number | null {
  let next: number | null = null;
  for (const s of doc.settles) if (next === null || s.atMs < next) next = s.atMs;
  return next;
}
