/**
 * Spec helpers for the fleet: small hosts on chosen kernels, and drivers that play the part of
 * the BullMQ workers with a fake clock: one operation driven to its end, or several operations
 * on one host interleaved the way concurrent workers would run them. Not exported from the
 * library's index; used by the `*.spec.ts` files only.
 */
import {
  ALL_KERNELS,
  GIB_BYTES,
  type KernelFeatures,
  kernelLabel,
  MAINLINE_KERNEL,
} from '#tdx-sim';
import type { RebootStrategy, TerminateStrategy } from '#vmm';
import { type ExecutorOptions, type FleetEvent, advanceHost } from '../executor.js';
import { type HostSpec, createHostDocument } from '../host-document.js';
import type { HostDocument, OperationRecord } from '../model.js';
import { createVm } from '../operations.js';

/** Bytes in one MiB. */
export const MIB = 1024 * 1024;
export { ALL_KERNELS, GIB_BYTES, kernelLabel };

/** The mainline kernel: cold reboot and close only. */
export const MAINLINE: KernelFeatures = {
  ...MAINLINE_KERNEL,
  terminateVm: 'none',
  linkGuestMemfd: false,
  privatePageSize: '4K',
};
/** TERMINATE v4 without linking: adds the terminate strategies. */
export const V4: KernelFeatures = {
  ...MAINLINE_KERNEL,
  terminateVm: 'v4',
  linkGuestMemfd: false,
  privatePageSize: '4K',
};
/** TERMINATE v4 with guest_memfd linking: every strategy. */
export const V4_LINK: KernelFeatures = {
  ...MAINLINE_KERNEL,
  terminateVm: 'v4',
  linkGuestMemfd: true,
  privatePageSize: '4K',
};
/** The August 2025 semantics with linking and 2 MiB leaves: every strategy. */
export const AUG_LINK_2M: KernelFeatures = {
  ...MAINLINE_KERNEL,
  terminateVm: 'aug2025',
  linkGuestMemfd: true,
  privatePageSize: '2M',
};

/** Whether a host with `kernel` can reboot with `strategy`. */
export function canReboot(kernel: KernelFeatures, strategy: RebootStrategy): boolean {
  if (strategy === 'cold') return true;
  if (kernel.terminateVm === 'none') return false;
  return strategy === 'terminate' || kernel.linkGuestMemfd;
}

/** Whether a host with `kernel` can terminate with `strategy`. */
export function canTerminate(kernel: KernelFeatures, strategy: TerminateStrategy): boolean {
  return strategy === 'close' || kernel.terminateVm !== 'none';
}

/** A host document: 64 GiB, 8 HKIDs, 2 packages, 16 CPUs unless told otherwise. */
export function makeHost(
  kernel: KernelFeatures,
  spec: Partial<Omit<HostSpec, 'kernel'>> = {},
  nowMs = 0,
): HostDocument {
  return createHostDocument(
    { id: 'h1', memoryGiB: 64, hkids: 8, packages: 2, cpus: 16, ...spec, kernel },
    nowMs,
  );
}

/** How the fake workers run: the executor's options without the clock. */
export type RunOptions = Omit<ExecutorOptions, 'nowMs'>;

/** The daemon's defaults: 1000x, 4 operations per host, 10 s of waiting, 50 ms polls. */
export const DEFAULT_RUN: RunOptions = {
  timeScale: 1000,
  hostConcurrency: 4,
  maxWaitMs: 10_000,
  pollMs: 50,
};

/** The executor's options at `nowMs`. */
export function at(nowMs: number, run: Partial<RunOptions> = {}): ExecutorOptions {
  return { ...DEFAULT_RUN, ...run, nowMs };
}

/** One committed document, as the store would hold it from `atMs` on. */
export interface CommitRecord {
  atMs: number;
  doc: HostDocument;
  events: FleetEvent[];
  /** Operations that ended in this commit. */
  finished: OperationRecord[];
  wakeAtMs: number | null;
}

/** What a drive did. */
export interface DriveResult {
  /** The last committed document. */
  doc: HostDocument;
  /** The fake clock when the drive stopped. */
  nowMs: number;
  /** Operations that finished, by id, as the store would keep them. */
  finished: Record<string, OperationRecord>;
  commits: CommitRecord[];
}

/** Options of {@link driveAll}. */
export interface DriveOptions {
  run?: Partial<RunOptions>;
  /** Called after every commit (for invariant checks). */
  onCommit?: (commit: CommitRecord) => void;
  /** Stop (with operations unfinished) once this returns true after a commit. */
  stopWhen?: (commit: CommitRecord) => boolean;
  /** Stop before advancing anything at a time later than this. */
  untilMs?: number;
  /** Guards against a loop that never ends. */
  maxAdvances?: number;
}

/**
 * A worker driving the host of one operation with a fake clock: the loop of the executor's
 * contract. Stops when the operation finishes (or `stopWhen`/`untilMs` says so).
 */
export function drive(
  doc: HostDocument,
  opId: string,
  startMs: number,
  options: DriveOptions = {},
): DriveResult {
  return driveAll(doc, [opId], startMs, options);
}

/**
 * Workers on one host with a fake clock: each round advances the host at the fake time, commits
 * what changed, and jumps to the real time the host asks to be woken at. Stops once every
 * operation of `opIds` has finished.
 */
export function driveAll(
  doc: HostDocument,
  opIds: readonly string[],
  startMs: number,
  options: DriveOptions = {},
): DriveResult {
  const maxAdvances = options.maxAdvances ?? 100_000;
  const waiting = new Set(opIds);
  const result: DriveResult = { doc, nowMs: startMs, finished: {}, commits: [] };
  for (let advances = 0; waiting.size > 0; advances++) {
    if (advances >= maxAdvances) {
      throw new Error(
        `operations ${[...waiting].join(', ')} still running after ${advances} advances`,
      );
    }
    const now = result.nowMs;
    if (options.untilMs !== undefined && now > options.untilMs) break;
    const advance = advanceHost(result.doc, at(now, options.run));
    if (advance.changed) {
      result.doc = { ...advance.doc, version: result.doc.version + 1 };
      const commit: CommitRecord = {
        atMs: now,
        doc: result.doc,
        events: advance.events,
        finished: advance.finished,
        wakeAtMs: advance.wakeAtMs,
      };
      result.commits.push(commit);
      for (const op of advance.finished) {
        result.finished[op.id] = op;
        waiting.delete(op.id);
      }
      options.onCommit?.(commit);
      if (options.stopWhen?.(commit) === true) break;
    }
    if (waiting.size === 0) break;
    if (advance.wakeAtMs === null) {
      throw new Error(`operations ${[...waiting].join(', ')} have nothing left to wait for`);
    }
    // Back when told; a wake-up that names no later time is a millisecond on.
    result.nowMs = advance.wakeAtMs > now ? advance.wakeAtMs : now + (advance.changed ? 0 : 1);
  }
  return result;
}

/** The document the store held at `atMs`: the last one committed at or before it. */
export function docAt(
  initial: HostDocument,
  commits: readonly CommitRecord[],
  atMs: number,
): HostDocument {
  let doc = initial;
  for (const commit of commits) if (commit.atMs <= atMs) doc = commit.doc;
  return doc;
}

/** The finished operation `opId` of a drive; throws when it did not finish. */
export function finishedOp(result: DriveResult, opId: string): OperationRecord {
  const op = result.finished[opId];
  if (op === undefined) throw new Error(`operation ${opId} did not finish`);
  return op;
}

/** A host with VMs booted and running (ids vm1, vm2...), each `memoryBytes` with `vcpus`. */
export function hostWithVms(
  host: HostDocument,
  count: number,
  shape: { vcpus: number; memoryBytes: number } = { vcpus: 2, memoryBytes: GIB_BYTES },
  run: Partial<RunOptions> = {},
): { doc: HostDocument; nowMs: number } {
  let doc = host;
  let nowMs = 0;
  for (let i = 1; i <= count; i++) {
    const created = createVm(doc, { vmId: `vm${i}`, opId: `boot-vm${i}`, nowMs, ...shape });
    const driven = drive(created.doc, `boot-vm${i}`, nowMs, { run });
    if (finishedOp(driven, `boot-vm${i}`).state !== 'succeeded') {
      throw new Error(`boot of vm${i} did not succeed`);
    }
    doc = driven.doc;
    nowMs = driven.nowMs;
  }
  return { doc, nowMs };
}

/**
 * Host `hostId` (a kernel that runs every strategy) with `vmIds` of 2 vCPUs / 4 GiB booted
 * together and run to the end of their boots at TIME_SCALE 0: a new document to store.
 */
export function hostWithBootedVms(hostId: string, vmIds: readonly string[]): HostDocument {
  let doc = makeHost(AUG_LINK_2M, { id: hostId });
  for (const vmId of vmIds) {
    doc = createVm(doc, {
      vmId,
      opId: `boot-${vmId}`,
      vcpus: 2,
      memoryBytes: 4 * GIB_BYTES,
      nowMs: 0,
    }).doc;
  }
  return advanceHost(doc, { nowMs: 0, timeScale: 0, hostConcurrency: 4, maxWaitMs: 0, pollMs: 10 })
    .doc;
}
