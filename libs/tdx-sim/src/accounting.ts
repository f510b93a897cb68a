import { type Ranges, countPages, unionRanges } from './ranges.js';
import type { HostState } from './state.js';
import { pagesToBytes } from './units.js';

/**
 * Where a host's memory is, in 4 KiB pages. Every page is in exactly one bucket, so the
 * buckets add up to `totalPages` (see {@link checkInvariants}).
 */
export interface MemoryUsagePages {
  total: number;
  free: number;
  /** Guest private memory mapped in some TD's S-EPT. */
  private: number;
  /** Held by guest_memfd inodes that a live VM can still use, but not mapped (kept for reuse). */
  retained: number;
  /** Held by guest_memfd inodes that no live VM refers to: leaked unless a new VM links them. */
  orphaned: number;
  /** TDR, TDCS and vCPU control pages. */
  control: number;
  /** S-EPT table pages. */
  sept: number;
  /** Freed by a call whose virtual time has not passed yet. */
  inFlight: number;
  /** Lost for good with a TD whose HKID release failed: back only when the host reboots. */
  leaked: number;
}

/** The same buckets in bytes. */
export type MemoryUsageBytes = { [K in keyof MemoryUsagePages]: number };

/** Splits the host's memory into the buckets of {@link MemoryUsagePages}. */
export function memoryUsage(state: HostState): MemoryUsagePages {
  const mappedByInode = new Map<number, Ranges>();
  let control = 0;
  let sept = 0;
  for (const vm of Object.values(state.vms)) {
    control += vm.controlPages + vm.vcpus.reduce((sum, v) => sum + v.controlPages, 0);
    sept += vm.septPages;
    for (const m of Object.values(vm.memslots)) {
      if (m.binding === null) continue;
      const mapped = mappedByInode.get(m.binding.inode) ?? [];
      mappedByInode.set(m.binding.inode, unionRanges(unionRanges(mapped, m.added), m.accepted));
    }
  }
  const liveVmInodes = new Set<number>();
  for (const file of Object.values(state.files)) {
    if (file.kind === 'gmem' && state.vms[file.vm]?.dead === false) liveVmInodes.add(file.inode);
  }
  let privatePages = 0;
  let retained = 0;
  let orphaned = 0;
  for (const inode of Object.values(state.inodes)) {
    const mapped = countPages(mappedByInode.get(inode.id) ?? []);
    const unmapped = countPages(inode.allocated) - mapped;
    privatePages += mapped;
    if (liveVmInodes.has(inode.id)) retained += unmapped;
    else orphaned += unmapped;
  }
  return {
    total: state.totalPages,
    free: state.freePages,
    private: privatePages,
    retained,
    orphaned,
    control,
    sept,
    inFlight: state.inFlight.reduce((sum, r) => sum + r.pages, 0),
    leaked: state.leakedPages,
  };
}

/** {@link memoryUsage} in bytes. */
export function memoryUsageBytes(state: HostState): MemoryUsageBytes {
  const pages = memoryUsage(state);
  const bytes = {} as MemoryUsageBytes;
  for (const key of Object.keys(pages) as Array<keyof MemoryUsagePages>) {
    bytes[key] = pagesToBytes(pages[key]);
  }
  return bytes;
}

/** HKIDs by owner. `free + owned + inFlight + leaked` is always the pool size. */
export interface HkidUsage {
  total: number;
  free: number;
  /** Held by a VM (alive or dying). */
  owned: number;
  /** Released by a call whose virtual time has not passed yet. */
  inFlight: number;
  /** Held by VMs whose fds are all closed: kept alive only by mmaps of their guest_memfds. */
  zombies: number;
  /** Lost for good to a failed release: owned by no VM, never free until the host reboots. */
  leaked: number;
}

/** Counts the HKID pool by owner. */
export function hkidUsage(state: HostState): HkidUsage {
  const withOpenFd = new Set<number>();
  for (const file of Object.values(state.files)) {
    if (file.kind === 'vm' || file.kind === 'vcpu' || (file.kind === 'gmem' && file.fdOpen)) {
      withOpenFd.add(file.vm);
    }
  }
  let owned = 0;
  let zombies = 0;
  for (const vm of Object.values(state.vms)) {
    if (vm.hkid === null) continue;
    owned += 1;
    if (!withOpenFd.has(vm.id)) zombies += 1;
  }
  return {
    total: state.config.hkids,
    free: state.freeHkids.length,
    owned,
    inFlight: state.inFlight.reduce((sum, r) => sum + r.hkids.length, 0),
    zombies,
    leaked: state.leakedHkids.length,
  };
}

/**
 * Checks the host's conservation laws and reference counts; returns the violations (empty when
 * the state is sound). Used by property tests and by the daemon before it stores a state.
 */
export function checkInvariants(state: HostState): string[] {
  const problems: string[] = [];
  const memory = memoryUsage(state);
  const accounted =
    memory.free +
    memory.private +
    memory.retained +
    memory.orphaned +
    memory.control +
    memory.sept +
    memory.inFlight +
    memory.leaked;
  if (accounted !== memory.total) {
    problems.push(`memory not conserved: buckets add up to ${accounted}, total is ${memory.total}`);
  }
  if (memory.free < 0) problems.push(`free pages negative: ${memory.free}`);

  const hkids = hkidUsage(state);
  if (hkids.free + hkids.owned + hkids.inFlight + hkids.leaked !== hkids.total) {
    problems.push(
      `HKIDs not conserved: free ${hkids.free} + owned ${hkids.owned} + in flight ${hkids.inFlight} + leaked ${hkids.leaked} != ${hkids.total}`,
    );
  }
  const seen = new Set<number>();
  const everyHkid = [
    ...state.freeHkids,
    ...state.inFlight.flatMap((r) => r.hkids),
    ...state.leakedHkids,
    ...Object.values(state.vms).flatMap((vm) => (vm.hkid === null ? [] : [vm.hkid])),
  ];
  for (const hkid of everyHkid) {
    if (seen.has(hkid)) problems.push(`HKID ${hkid} has two owners`);
    seen.add(hkid);
  }

  const refs = new Map<number, number>();
  for (const file of Object.values(state.files)) {
    if ('vm' in file) refs.set(file.vm, (refs.get(file.vm) ?? 0) + 1);
  }
  for (const vm of Object.values(state.vms)) {
    const expected = refs.get(vm.id) ?? 0;
    if (vm.refs !== expected)
      problems.push(`VM ${vm.id} counts ${vm.refs} references, files hold ${expected}`);
    if (vm.refs <= 0) problems.push(`VM ${vm.id} has no references but was not destroyed`);
    const keyless =
      vm.keyState === 'NONE' || vm.keyState === 'TEARDOWN' || vm.keyState === 'BLOCKED';
    if (vm.hkid === null && !keyless) {
      problems.push(`VM ${vm.id} has no HKID but key state ${vm.keyState}`);
    }
  }
  for (const file of Object.values(state.files)) {
    if ('vm' in file && state.vms[file.vm] === undefined)
      problems.push(`fd ${file.fd} refers to destroyed VM ${file.vm}`);
  }
  return problems;
}
