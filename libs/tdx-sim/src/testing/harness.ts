/**
 * Spec helpers for tdx-sim: small hosts, a driver that applies calls and fails loudly when a
 * setup call is refused, kernel-switch combinations, and independent conservation checks.
 * Not exported from the library's index; used by the `*.spec.ts` files only.
 */
import type { CallOutcome, CallSuccess, CallValue, SimCall } from '../calls.js';
import { type HostConfigInput, makeHostConfig } from '../config.js';
import type { KernelFeatures } from '../kernel-switches.js';

export { ALL_KERNELS, kernelLabel } from '../kernel-switches.js';
import { applyCall, createHost, settleAll } from '../host.js';
import { countPages } from '../ranges.js';
import type { HostState, VmState } from '../state.js';
import { GIB_BYTES, PAGE_BYTES } from '../units.js';

/** Bytes in one MiB. */
export const MIB = 1024 * 1024;
/** Bytes in one 2 MiB leaf. */
export const TWO_MIB = 2 * MIB;

/** A small host: 8 GiB, 4 HKIDs, 2 packages, 8 CPUs unless told otherwise. */
export function smallHost(kernel: KernelFeatures, input: HostConfigInput = {}): HostState {
  return createHost(
    makeHostConfig({
      memoryBytes: 8 * GIB_BYTES,
      hkids: 4,
      packages: 2,
      cpus: 8,
      ...input,
      kernel,
    }),
  );
}

/** Describes a call for error messages. */
export function describeCall(call: SimCall): string {
  return JSON.stringify(call);
}

/**
 * Drives one host call by call. `ok` applies a call that must succeed (a refused setup call is
 * a broken test, so it throws); `settle` returns every in-flight release to the host.
 */
export class Driver {
  constructor(public state: HostState) {}

  get config(): HostState['config'] {
    return this.state.config;
  }

  /** Applies `call`, which must succeed; returns its value. */
  ok(call: SimCall): CallValue {
    return this.okOutcome(call).value;
  }

  /** Applies `call`, which must succeed; returns its whole outcome. */
  okOutcome(call: SimCall): CallSuccess {
    const { state, outcome } = applyCall(this.state, call);
    if (!outcome.ok) {
      throw new Error(`setup call ${describeCall(call)} failed: ${outcome.message}`);
    }
    this.state = state;
    return outcome;
  }

  /** Applies `call` whatever its outcome. */
  try(call: SimCall): CallOutcome {
    const { state, outcome } = applyCall(this.state, call);
    this.state = state;
    return outcome;
  }

  /** Every in-flight release goes back to the host. */
  settle(): void {
    this.state = settleAll(this.state);
  }

  vm(id: number): VmState {
    const vm = this.state.vms[id];
    if (vm === undefined) throw new Error(`VM ${id} is not on the host`);
    return vm;
  }
}

/** How far {@link bootTd} takes a TD. Each stage includes the ones before it. */
export type TdStage =
  'created' | 'initVm' | 'vcpu' | 'vcpuInit' | 'memRegion' | 'finalized' | 'running' | 'exited';

const STAGES: readonly TdStage[] = [
  'created',
  'initVm',
  'vcpu',
  'vcpuInit',
  'memRegion',
  'finalized',
  'running',
  'exited',
];

/** The fds and ids of one TD built by {@link bootTd}; absent where the stage did not get there. */
export interface Td {
  vmFd: number;
  vmId: number;
  gmemFd?: number;
  inode?: number;
  vcpuFd?: number;
}

/** Options of {@link bootTd}. */
export interface BootOptions {
  /** guest_memfd size (and slot 0 size); 0 for no guest_memfd and no memslot. Default 64 MiB. */
  memoryBytes?: number;
  /** Bytes added by `KVM_TDX_INIT_MEM_REGION` at GPA 0 (stage `memRegion`). Default 2 MiB. */
  initialBytes?: number;
  /** Bytes faulted in by the first `KVM_RUN`, right after the initial region. Default 4 MiB. */
  faultBytes?: number;
}

/**
 * Builds one TD up to `stage`: create VM, (guest_memfd + slot 0 at GPA 0), INIT_VM, a vCPU,
 * INIT_VCPU, INIT_MEM_REGION, FINALIZE, KVM_RUN (with a fault-in), vcpu_exit.
 */
export function bootTd(d: Driver, stage: TdStage, options: BootOptions = {}): Td {
  const memoryBytes = options.memoryBytes ?? 64 * MIB;
  const initialBytes = options.initialBytes ?? TWO_MIB;
  const faultBytes = options.faultBytes ?? 2 * TWO_MIB;
  const upTo = STAGES.indexOf(stage);
  const reached = (s: TdStage): boolean => STAGES.indexOf(s) <= upTo;

  const created = d.ok({ op: 'KVM_CREATE_VM' });
  const td: Td = { vmFd: need(created.fd), vmId: need(created.vm) };
  if (memoryBytes > 0) {
    const gmem = d.ok({ op: 'KVM_CREATE_GUEST_MEMFD', vm: td.vmFd, bytes: memoryBytes });
    td.gmemFd = need(gmem.fd);
    td.inode = need(gmem.inode);
    d.ok({
      op: 'KVM_SET_USER_MEMORY_REGION2',
      vm: td.vmFd,
      slot: 0,
      gpa: 0,
      bytes: memoryBytes,
      gmem: td.gmemFd,
      gmemOffset: 0,
    });
  }
  if (reached('initVm')) d.ok({ op: 'KVM_TDX_INIT_VM', vm: td.vmFd });
  if (reached('vcpu')) td.vcpuFd = need(d.ok({ op: 'KVM_CREATE_VCPU', vm: td.vmFd }).fd);
  const vcpu = td.vcpuFd ?? -1;
  if (reached('vcpuInit')) d.ok({ op: 'KVM_TDX_INIT_VCPU', vcpu });
  if (reached('memRegion') && memoryBytes > 0 && initialBytes > 0) {
    d.ok({ op: 'KVM_TDX_INIT_MEM_REGION', vcpu, gpa: 0, bytes: initialBytes });
  }
  if (reached('finalized')) d.ok({ op: 'KVM_TDX_FINALIZE_VM', vm: td.vmFd });
  if (reached('running')) {
    const faultIn =
      memoryBytes > 0 && faultBytes > 0 ? { gpa: initialBytes, bytes: faultBytes } : undefined;
    d.ok(faultIn === undefined ? { op: 'KVM_RUN', vcpu } : { op: 'KVM_RUN', vcpu, faultIn });
  }
  if (reached('exited')) d.ok({ op: 'vcpu_exit', vcpu });
  return td;
}

function need(value: number | undefined): number {
  if (value === undefined) throw new Error('a successful call returned no id');
  return value;
}

/** Non-null `value`, or a thrown error naming `what`. */
export function defined<T>(value: T | undefined | null, what: string): T {
  if (value === undefined || value === null) throw new Error(`${what} is missing`);
  return value;
}

/**
 * Memory conservation computed directly from the state, without {@link memoryUsage}: every
 * page is free, in flight, control, S-EPT, or held by an inode. Returns the difference from
 * the total (0 when conserved).
 */
export function memoryImbalance(state: HostState): number {
  let held = state.freePages;
  for (const release of state.inFlight) held += release.pages;
  held += state.leakedPages;
  for (const vm of Object.values(state.vms)) {
    held += vm.controlPages + vm.septPages;
    for (const vcpu of vm.vcpus) held += vcpu.controlPages;
  }
  for (const inode of Object.values(state.inodes)) held += countPages(inode.allocated);
  return held - state.totalPages;
}

/**
 * HKID conservation computed directly from the state: the free, in-flight, leaked and owned HKIDs
 * are exactly 1..pool, each once. Returns the problems found.
 */
export function hkidProblems(state: HostState): string[] {
  const all = [
    ...state.freeHkids,
    ...state.inFlight.flatMap((r) => r.hkids),
    ...state.leakedHkids,
    ...Object.values(state.vms).flatMap((vm) => (vm.hkid === null ? [] : [vm.hkid])),
  ].sort((a, b) => a - b);
  const expected = Array.from({ length: state.config.hkids }, (_, i) => i + 1);
  return JSON.stringify(all) === JSON.stringify(expected)
    ? []
    : [`HKIDs ${JSON.stringify(all)} are not the pool ${JSON.stringify(expected)}`];
}

/** Pages in bytes, for readable expectations. */
export function pages(bytes: number): number {
  return bytes / PAGE_BYTES;
}
