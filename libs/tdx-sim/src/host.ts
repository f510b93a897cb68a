import {
  type CallEffects,
  type CallOutcome,
  type CallValue,
  type SimCall,
  noEffects,
} from './calls.js';
import { type HostConfig, validateHostConfig } from './config.js';
import {
  type CostContext,
  allocateSeconds,
  augAcceptSeconds,
  dynamicRemovalSeconds,
  freeSeconds,
  hkidReleaseSeconds,
  pageAddSeconds,
  teardownReclaimSeconds,
} from './cost-model.js';
import { SimErrnoError, ensure } from './errno.js';
import { HKID_RELEASE_FAILURES, type HkidReleaseFailure } from './faults.js';
import { FALLOC_FLAGS, GUEST_MEMFD_FLAGS, isFlagMask, unknownBits } from './flags.js';
import {
  type Ranges,
  addRange,
  clipRanges,
  countInside,
  countPages,
  removeRange,
  wholeLeafPages,
  subtractRanges,
  unionRanges,
} from './ranges.js';
import type {
  FileState,
  HostState,
  InFlightRelease,
  InodeState,
  MemslotState,
  MmapState,
  VcpuState,
  VmState,
} from './state.js';
import {
  PAGES_PER_2M,
  PAGES_PER_GIB,
  PAGE_BYTES,
  SEPT_ENTRIES_PER_PAGE,
  bytesToPages,
} from './units.js';

/** A new host with every HKID free, all memory free and every package online. */
export function createHost(config: HostConfig): HostState {
  validateHostConfig(config);
  const totalPages = config.memoryBytes / PAGE_BYTES;
  return {
    config,
    totalPages,
    freePages: totalPages,
    freeHkids: Array.from({ length: config.hkids }, (_, i) => i + 1),
    packagesOnline: Array.from({ length: config.packages }, () => true),
    moduleBusy: false,
    vms: {},
    files: {},
    inodes: {},
    mmaps: {},
    inFlight: [],
    leakedHkids: [],
    leakedPages: 0,
    failNext: { VPFLUSHDONE: false, FREEID: false },
    next: { vm: 1, fd: 3, inode: 1, mmap: 1, release: 1 },
  };
}

/** The result of {@link applyCall}: the next state (the same object when the call failed). */
export interface ApplyResult {
  state: HostState;
  outcome: CallOutcome;
}

/**
 * The transition function: applies one call to a host. Pure: the input state is never
 * modified, and a refused call returns the input state itself with the errno.
 */
export function applyCall(state: HostState, call: SimCall): ApplyResult {
  const batch = applyCalls(state, [call]);
  const outcome = batch.outcomes[0];
  if (outcome === undefined) throw new Error('applyCalls returned no outcome');
  return { state: batch.state, outcome };
}

/** The result of {@link applyCalls}. */
export interface BatchResult {
  state: HostState;
  /** One outcome per call up to and including the first failure. */
  outcomes: CallOutcome[];
  /** Index of the refused call, or null when all succeeded. */
  failedAt: number | null;
}

/**
 * Applies calls in order, all or nothing: if one is refused the input state is returned
 * unchanged, with the outcomes up to and including the refusal.
 */
export function applyCalls(state: HostState, calls: readonly SimCall[]): BatchResult {
  return runOn(new Draft(state, false), state, calls);
}

/** The result of {@link applyCallsInPlace}. */
export interface InPlaceBatchResult extends BatchResult {
  /**
   * Restores the state as it was before the batch, for a caller that decides on seeing the
   * outcomes not to keep them. Only until the state is changed again.
   */
  undo(): void;
}

/**
 * {@link applyCalls} for a caller that owns `state` and no longer needs the state before: the
 * calls change it in place (no copies), and a refusal restores it exactly. Returns `state`.
 */
export function applyCallsInPlace(state: HostState, calls: readonly SimCall[]): InPlaceBatchResult {
  const draft = new Draft(state, true);
  const { outcomes, failedAt } = runOn(draft, state, calls);
  return { state, outcomes, failedAt, undo: () => draft.rollback() };
}

function runOn(draft: Draft, state: HostState, calls: readonly SimCall[]): BatchResult {
  const outcomes: CallOutcome[] = [];
  const tx = new Transaction(draft);
  for (let index = 0; index < calls.length; index += 1) {
    const call = calls[index] as SimCall;
    tx.reset();
    try {
      const value = tx.run(call);
      outcomes.push({ ok: true, value, seconds: tx.seconds, effects: tx.finish() });
    } catch (error) {
      if (!(error instanceof SimErrnoError)) throw error;
      draft.rollback();
      const { errno, message, exit } = error;
      outcomes.push(
        exit === undefined
          ? { ok: false, errno, message, seconds: 0 }
          : { ok: false, errno, message, seconds: 0, exit },
      );
      return { state, outcomes, failedAt: index };
    }
  }
  return { state: draft.host, outcomes, failedAt: null };
}

/**
 * A deep copy of a host state, written out by hand (faster than a generic clone). The tables
 * are walked with `for...in`: they are keyed by ever-growing ids, so V8 keeps them as sparse
 * dictionaries, and `Object.entries` would build a pair per entry on top of the copy.
 */
export function cloneHost(state: HostState): HostState {
  const vms: Record<string, VmState> = {};
  for (const id in state.vms) {
    const vm = state.vms[id] as VmState;
    const memslots: Record<string, MemslotState> = {};
    for (const slot in vm.memslots) {
      const m = vm.memslots[slot] as MemslotState;
      memslots[slot] = {
        ...m,
        binding: m.binding && { ...m.binding },
        added: copyRanges(m.added),
        accepted: copyRanges(m.accepted),
      };
    }
    vms[id] = { ...vm, vcpus: vm.vcpus.map(copyVcpu), memslots };
  }
  const files: Record<string, FileState> = {};
  for (const fd in state.files) files[fd] = { ...(state.files[fd] as FileState) };
  const inodes: Record<string, InodeState> = {};
  for (const id in state.inodes) {
    const inode = state.inodes[id] as InodeState;
    inodes[id] = { ...inode, allocated: copyRanges(inode.allocated) };
  }
  const mmaps: Record<string, MmapState> = {};
  for (const id in state.mmaps) mmaps[id] = { ...(state.mmaps[id] as MmapState) };
  return {
    ...state,
    freeHkids: [...state.freeHkids],
    packagesOnline: [...state.packagesOnline],
    vms,
    files,
    inodes,
    mmaps,
    inFlight: state.inFlight.map((r) => ({ ...r, hkids: [...r.hkids] })),
    leakedHkids: [...state.leakedHkids],
    failNext: { ...state.failNext },
    next: { ...state.next },
  };
}

function copyRanges(ranges: Ranges): Ranges {
  return ranges.map(([start, end]) => [start, end]);
}

function copyVcpu(vcpu: VcpuState): VcpuState {
  // A literal in the order createVcpu builds one, not a spread: the copy shares the vCPU's
  // hidden class, and a stop of every vCPU of a fleet copies millions of them.
  return {
    index: vcpu.index,
    state: vcpu.state,
    inIoctl: vcpu.inIoctl,
    controlPages: vcpu.controlPages,
  };
}

/**
 * Returns an in-flight release to the host: its pages become free and its HKIDs available.
 * Settling an unknown or already settled release changes nothing, so a retried settle is safe.
 */
export function settleRelease(state: HostState, releaseId: number): HostState {
  const release = state.inFlight.find((r) => r.id === releaseId);
  if (release === undefined) return state;
  const freeHkids = withReturnedHkids(state.freeHkids, release.hkids);
  return {
    ...state,
    freePages: state.freePages + release.pages,
    freeHkids,
    inFlight: state.inFlight.filter((r) => r.id !== releaseId),
  };
}

/**
 * {@link settleRelease} for a caller that owns `state` (and its lists): the release returns in
 * place, and the state ends as the one `settleRelease` would return. No copy of the host, so
 * a runner that settles at every step allocates nothing for it.
 */
export function settleReleaseInPlace(state: HostState, releaseId: number): void {
  const index = state.inFlight.findIndex((r) => r.id === releaseId);
  if (index === -1) return;
  const release = state.inFlight[index] as InFlightRelease;
  state.freePages += release.pages;
  returnHkids(state.freeHkids, release.hkids);
  state.inFlight.splice(index, 1);
}

/** `free` and `returned` in one ascending list, as `freeHkids` is kept. */
function withReturnedHkids(free: readonly number[], returned: readonly number[]): number[] {
  const merged = [...free];
  returnHkids(merged, returned);
  return merged;
}

/** Puts `returned` into the ascending list `free`, in place. */
function returnHkids(free: number[], returned: readonly number[]): void {
  // A release returns one HKID or none, to a list already in order: put it in its place
  // rather than sort the whole pool.
  for (const hkid of returned) {
    let at = free.length;
    while (at > 0 && (free[at - 1] as number) > hkid) at -= 1;
    free.splice(at, 0, hkid);
  }
  if (!isAscending(free)) free.sort((a, b) => a - b);
}

function isAscending(values: readonly number[]): boolean {
  for (let i = 1; i < values.length; i += 1) {
    if (!((values[i - 1] as number) <= (values[i] as number))) return false;
  }
  return true;
}

/** Settles every in-flight release (time has passed for all of them). */
export function settleAll(state: HostState): HostState {
  let result = state;
  for (const release of state.inFlight) result = settleRelease(result, release.id);
  return result;
}

type GmemFile = Extract<FileState, { kind: 'gmem' }>;
/** A file that holds a reference on a VM. */
type VmFile = Extract<FileState, { vm: number }>;

/** The effects of every call that touched neither memory nor HKIDs (shared, never changed). */
const NO_EFFECTS: CallEffects = Object.freeze({
  ...noEffects(),
  destroyedVms: Object.freeze([]) as unknown as number[],
  reclaims: Object.freeze([]) as unknown as CallEffects['reclaims'],
});

type Table = 'vms' | 'files' | 'inodes' | 'mmaps';

/** One change an in-place batch can undo. */
type JournalEntry =
  | { kind: 'object'; target: object; saved: object }
  /** Some fields of `target` only: the others do not change in place. */
  | { kind: 'fields'; target: object; saved: object }
  | { kind: 'entry'; record: Record<string, unknown>; key: number; old: unknown }
  | { kind: 'list'; target: unknown[]; saved: unknown[] };

function undo(entry: JournalEntry): void {
  switch (entry.kind) {
    case 'object': {
      const target = entry.target as Record<string, unknown>;
      for (const key of Object.keys(target)) if (!(key in entry.saved)) delete target[key];
      Object.assign(target, entry.saved);
      return;
    }
    case 'fields':
      Object.assign(entry.target, entry.saved);
      return;
    case 'entry':
      if (entry.old === undefined) delete entry.record[entry.key];
      else entry.record[entry.key] = entry.old;
      return;
    case 'list':
      entry.target.splice(0, entry.target.length, ...entry.saved);
      return;
  }
}
type ListName = 'freeHkids' | 'packagesOnline' | 'inFlight' | 'leakedHkids';

/**
 * The host a batch of calls works on, in one of two modes. Copy-on-write (the pure API): the
 * input is shared and each object is copied the first time the batch changes it. In place (a
 * runner that owns its state): objects are changed where they are, and a journal restores them
 * if a call is refused. Either way a call costs the same whatever the size of the rest of the
 * host.
 */
class Draft {
  readonly host: HostState;
  readonly cost: CostContext;
  /** Objects already copied (copy-on-write) or saved in the journal (in place) by this batch. */
  private readonly owned = new Set<object>();
  /** In place: what to restore if a call is refused, newest last. */
  private readonly journal: JournalEntry[] | null;

  constructor(base: HostState, inPlace: boolean) {
    if (inPlace) {
      this.host = base;
      // In place, a call changes the host's own fields only by counting (pages, ids), by the
      // module busy flag and by replacing the armed failures; its tables and lists are journaled
      // as they change.
      const { vm, fd, inode, mmap, release } = base.next;
      const counters = {
        freePages: base.freePages,
        leakedPages: base.leakedPages,
        moduleBusy: base.moduleBusy,
        failNext: base.failNext,
      };
      this.journal = [
        { kind: 'fields', target: base, saved: counters },
        { kind: 'fields', target: base.next, saved: { vm, fd, inode, mmap, release } },
      ];
    } else {
      this.host = { ...base, next: { ...base.next } };
      this.journal = null;
    }
    this.cost = {
      model: base.config.costModel,
      params: base.config.costParams,
      pageSize: base.config.kernel.privatePageSize,
    };
  }

  /** Undoes everything the batch did (in place only; a copy-on-write draft is just dropped). */
  rollback(): void {
    if (this.journal === null) return;
    for (let i = this.journal.length - 1; i >= 0; i -= 1) {
      const entry = this.journal[i];
      if (entry !== undefined) undo(entry);
    }
  }

  /** Adds, replaces (`value`) or deletes (`undefined`) one entry of a table. */
  put<T extends Table>(table: T, key: number, value: HostState[T][string] | undefined): void {
    let record = this.host[table] as Record<string, HostState[T][string]>;
    if (this.journal === null) {
      if (!this.owns(record)) {
        record = { ...record };
        this.owned.add(record);
        (this.host as unknown as Record<Table, unknown>)[table] = record;
      }
    } else {
      this.journal.push({ kind: 'entry', record, key, old: record[key] });
    }
    if (value === undefined) delete record[key];
    else record[key] = value;
  }

  /** One of the host's arrays, ready to be changed. */
  list<N extends ListName>(name: N): HostState[N] {
    const list = this.host[name];
    if (this.owns(list)) return list;
    if (this.journal === null) {
      const mine = [...list] as HostState[N];
      this.owned.add(mine);
      this.host[name] = mine;
      return mine;
    }
    this.journal.push({ kind: 'list', target: list, saved: [...list] });
    this.owned.add(list);
    return list;
  }

  private owns(value: object): boolean {
    return this.owned.has(value);
  }

  /**
   * `value` ready to be changed: saved in the journal and returned (in place), or copied one
   * level down by `copy` (copy-on-write); a result other than `value` is for the caller to put
   * in its place.
   */
  private claim<T extends object>(value: T, copy: (value: T) => T): T {
    if (this.owns(value)) return value;
    if (this.journal === null) {
      const mine = copy(value);
      this.owned.add(mine);
      return mine;
    }
    this.journal.push({ kind: 'object', target: value, saved: copy(value) });
    this.owned.add(value);
    return value;
  }

  /** A VM this batch may change (with its vCPU array and memslot record). */
  vm(id: number): VmState {
    const current = this.host.vms[id];
    if (current === undefined) throw new Error(`VM ${id} missing`);
    const mine = this.claim(current, copyVm);
    if (mine !== current) this.put('vms', id, mine);
    return mine;
  }

  /** A vCPU of a VM obtained from {@link vm}, ready to be changed. */
  vcpu(vm: VmState, index: number): VcpuState {
    const current = vm.vcpus[index];
    if (current === undefined) throw new Error(`vCPU ${index} missing from VM ${vm.id}`);
    const mine = this.claim(current, copyVcpu);
    if (mine !== current) vm.vcpus[index] = mine;
    return mine;
  }

  /** A memslot of a VM obtained from {@link vm}, ready to be changed. */
  memslot(vm: VmState, slot: number): MemslotState {
    const current = vm.memslots[slot];
    if (current === undefined) throw new Error(`slot ${slot} missing from VM ${vm.id}`);
    const mine = this.claim(current, copyMemslot);
    if (mine !== current) vm.memslots[slot] = mine;
    return mine;
  }

  inode(id: number): InodeState {
    const current = this.host.inodes[id];
    if (current === undefined) throw new Error(`inode ${id} missing`);
    const mine = this.claim(current, copyInode);
    if (mine !== current) this.put('inodes', id, mine);
    return mine;
  }

  gmemFile(file: GmemFile): GmemFile {
    const mine = this.claim(file, copyGmemFile);
    if (mine !== file) this.put('files', file.fd, mine);
    return mine;
  }
}

// What a draft copies of an object it claims: the object itself, and for a VM the vCPU array and
// memslot record it changes in place.
function copyVm(vm: VmState): VmState {
  return { ...vm, vcpus: [...vm.vcpus], memslots: { ...vm.memslots } };
}

function copyMemslot(memslot: MemslotState): MemslotState {
  return { ...memslot };
}

function copyInode(inode: InodeState): InodeState {
  return { ...inode };
}

function copyGmemFile(file: GmemFile): GmemFile {
  return { ...file };
}

/** One call's work on a draft state: accumulates its virtual cost and effects. */
class Transaction {
  seconds = 0;
  /** Created on the first effect: most calls have none, and this is on every call's path. */
  private effectsDraft: CallEffects | null = null;
  private freedHkids: number[] | null = null;
  private readonly host: HostState;
  private readonly cost: CostContext;

  constructor(private readonly draft: Draft) {
    this.host = draft.host;
    this.cost = draft.cost;
  }

  private get effects(): CallEffects {
    return (this.effectsDraft ??= noEffects());
  }

  /** Ready for the next call of the batch. */
  reset(): void {
    this.seconds = 0;
    this.effectsDraft = null;
    this.freedHkids = null;
  }

  /** Closes the call: what it freed goes in flight as one release. */
  finish(): CallEffects {
    const effects = this.effectsDraft;
    if (effects === null) return NO_EFFECTS;
    if (effects.freedPages > 0 || this.freedHkids !== null) {
      const id = this.host.next.release++;
      this.draft
        .list('inFlight')
        .push({ id, pages: effects.freedPages, hkids: this.freedHkids ?? [] });
      effects.release = id;
    }
    return effects;
  }

  run(call: SimCall): CallValue {
    switch (call.op) {
      case 'KVM_CREATE_VM':
        return this.createVm();
      case 'KVM_TDX_INIT_VM':
        return this.initVm(call.vm);
      case 'KVM_CREATE_VCPU':
        return this.createVcpu(call.vm);
      case 'KVM_TDX_INIT_VCPU':
        return this.initVcpu(call.vcpu);
      case 'KVM_TDX_INIT_MEM_REGION':
        return this.initMemRegion(call.vcpu, call.gpa, call.bytes);
      case 'KVM_TDX_FINALIZE_VM':
        return this.finalizeVm(call.vm);
      case 'KVM_RUN':
        return this.runVcpu(call.vcpu, call.faultIn);
      case 'vcpu_exit':
        return this.exitVcpu(call.vcpu);
      case 'KVM_CREATE_GUEST_MEMFD':
        return this.createGuestMemfd(call.vm, call.bytes, call.flags ?? 0);
      case 'KVM_SET_USER_MEMORY_REGION2':
        return call.bytes === 0
          ? this.deleteMemslot(call.vm, call.slot)
          : this.createMemslot(
              call.vm,
              call.slot,
              call.gpa,
              call.bytes,
              call.gmem,
              call.gmemOffset,
            );
      case 'KVM_TDX_TERMINATE_VM':
        return this.terminateVm(call.vm);
      case 'KVM_LINK_GUEST_MEMFD':
        return this.linkGuestMemfd(call.vm, call.gmem, call.flags ?? 0);
      case 'close':
        return this.close(call.fd);
      case 'mmap':
        return this.mmap(call.fd);
      case 'munmap':
        return this.munmap(call.map);
      case 'fallocate_punch_hole':
        return this.fallocate(call.fd, PUNCH_MODE, call.offset, call.bytes);
      case 'fallocate':
        return this.fallocate(call.fd, call.mode, call.offset, call.bytes);
      case 'open_dev_kvm':
        return this.openPlainFile({ kind: 'kvm' });
      case 'memfd_create':
        ensure(
          Number.isSafeInteger(call.bytes) && call.bytes >= 0,
          'EINVAL',
          `memfd size must be a non-negative integer, got ${String(call.bytes)}`,
        );
        return this.openPlainFile({ kind: 'memfd', pages: bytesToPages(call.bytes) });
      case 'fstat':
        return this.fstat(call.fd);
      case 'read':
      case 'write':
        return this.readWrite(call.op, call.fd, call.bytes);
      case 'cpu_hotplug':
        return this.cpuHotplug(call.package, call.online);
      case 'tdx_module_busy':
        this.host.moduleBusy = call.busy;
        return {};
      case 'tdx_fail_next':
        ensure(
          Object.hasOwn(HKID_RELEASE_FAILURES, call.step),
          'EINVAL',
          `no HKID release step ${String(call.step)} can be made to fail`,
        );
        // Replaced, not changed: the previous object may be shared with the state before.
        this.host.failNext = { ...this.host.failNext, [call.step]: true };
        return {};
    }
  }

  // --- lookups and guards -------------------------------------------------------------------

  private file(fd: number): FileState {
    const file = Number.isInteger(fd) ? this.host.files[fd] : undefined;
    // A guest_memfd file kept alive only by mmaps has no fd any more.
    const open = file !== undefined && (file.kind !== 'gmem' || file.fdOpen);
    ensure(open, 'EBADF', `fd ${String(fd)} is not open`);
    return file;
  }

  /** The VM a file refers to, ready to be changed. */
  private vmOf(file: VmFile): VmState {
    return this.draft.vm(file.vm);
  }

  private vmFd(fd: number): VmState {
    const file = this.file(fd);
    ensure(file.kind === 'vm', 'EINVAL', `fd ${fd} is not a VM fd`);
    return this.vmOf(file);
  }

  private vcpuFd(fd: number): { vm: VmState; vcpu: VcpuState } {
    const file = this.file(fd);
    ensure(file.kind === 'vcpu', 'EINVAL', `fd ${fd} is not a vCPU fd`);
    const vm = this.vmOf(file);
    return { vm, vcpu: this.draft.vcpu(vm, file.vcpu) };
  }

  private gmemFd(fd: number): GmemFile {
    const file = this.file(fd);
    ensure(file.kind === 'gmem', 'EINVAL', `fd ${fd} is not a guest_memfd`);
    return file;
  }

  private inode(id: number): InodeState {
    return this.draft.inode(id);
  }

  /**
   * A VM ioctl other than the vCPU and TDX init ones: refused on a dead VM (`EIO`), except under
   * the August 2025 semantics, where only vCPU creation, vCPU ioctls and TDX init are.
   */
  private vmIoctl(vm: VmState, what: string): void {
    if (this.host.config.kernel.terminateVm === 'aug2025') return;
    ensure(!vm.dead, 'EIO', `${what}: VM ${vm.id} is dead (terminated)`);
  }

  /** `KVM_CREATE_VCPU` or a vCPU ioctl: refused on a dead VM whatever the semantics. */
  private vcpuIoctl(vm: VmState, what: string): void {
    ensure(!vm.dead, 'EIO', `${what}: VM ${vm.id} is dead (terminated)`);
  }

  /**
   * A TDX init sub-ioctl on the VM (`KVM_TDX_INIT_VM`, `KVM_TDX_FINALIZE_VM`): on a dead VM,
   * `EIO` (every VM ioctl), or under aug2025 `EINVAL`, the TD no longer being in INIT.
   */
  private tdxInit(vm: VmState, what: string): void {
    if (!vm.dead) return;
    const aug2025 = this.host.config.kernel.terminateVm === 'aug2025';
    throw new SimErrnoError(
      aug2025 ? 'EINVAL' : 'EIO',
      `${what}: VM ${vm.id} is dead (terminated)${aug2025 ? ', no longer in INIT' : ''}`,
    );
  }

  private leafPages(): number {
    return this.host.config.kernel.privatePageSize === '2M' ? PAGES_PER_2M : 1;
  }

  /**
   * Seconds of a per-page cost over `ranges` of inode pages. With 2 MiB leaves only whole,
   * aligned leaves go at the leaf rate; the pages around them are 4 KiB leaves (model).
   */
  private leafCost(ranges: Ranges, perPage: (ctx: CostContext, pages: number) => number): number {
    const pages = countPages(ranges);
    if (this.cost.pageSize === '4K') return perPage(this.cost, pages);
    const whole = wholeLeafPages(ranges, PAGES_PER_2M);
    const rest = pages - whole;
    return perPage(this.cost, whole) + (rest > 0 ? perPage(this.cost4K, rest) : 0);
  }

  private get cost4K(): CostContext {
    return { ...this.cost, pageSize: '4K' };
  }

  /**
   * Bytes to pages for a guest address, size or file offset, which must be 4 KiB-aligned: with
   * 2 MiB leaves too, the ioctls stay 4 KiB-granular (the huge-page RFC).
   */
  private alignedPages(bytes: number, what: string, allowZero = false): number {
    const aligned =
      Number.isSafeInteger(bytes) &&
      bytes >= 0 &&
      bytes % PAGE_BYTES === 0 &&
      (allowZero || bytes > 0);
    // The message is built only for a refusal: sizes and page counts are large numbers, slow
    // to format, and every memory call checks a few of them.
    if (!aligned) {
      throw new SimErrnoError(
        'EINVAL',
        `${what} must be a ${allowZero ? 'non-negative' : 'positive'} multiple of ${PAGE_BYTES} bytes, got ${String(bytes)}`,
      );
    }
    return bytes / PAGE_BYTES;
  }

  private take(pages: number, what: string): void {
    if (!(pages <= this.host.freePages)) {
      // Built only for a refusal, as in alignedPages.
      throw new SimErrnoError(
        'ENOMEM',
        `${what} needs ${pages} pages, the host has ${this.host.freePages} free`,
      );
    }
    this.host.freePages -= pages;
  }

  private free(pages: number): void {
    this.effects.freedPages += pages;
  }

  // --- VM and vCPU life cycle -----------------------------------------------------------------

  private createVm(): CallValue {
    const id = this.host.next.vm++;
    this.draft.put('vms', id, {
      id,
      tdState: 'UNINITIALIZED',
      keyState: 'NONE',
      hkid: null,
      dead: false,
      refs: 1,
      vcpus: [],
      memslots: {},
      controlPages: 0,
      septPages: 0,
      mappedPages: 0,
    });
    const fd = this.host.next.fd++;
    this.draft.put('files', fd, { fd, kind: 'vm', vm: id });
    this.seconds += this.cost.params.createVmSeconds;
    return { fd, vm: id };
  }

  private initVm(fd: number): CallValue {
    const vm = this.vmFd(fd);
    this.tdxInit(vm, 'KVM_TDX_INIT_VM');
    ensure(vm.tdState === 'UNINITIALIZED', 'EINVAL', `VM ${vm.id} is already ${vm.tdState}`);
    ensure(vm.vcpus.length === 0, 'EBUSY', `VM ${vm.id} already has vCPUs`);
    const hkid = this.host.freeHkids[0];
    ensure(hkid !== undefined, 'ENOSPC', 'no free HKID on this host');
    const limit = this.host.config.hkidCgroupLimit;
    const charged = this.host.config.hkids - this.host.freeHkids.length;
    ensure(
      limit === null || charged < limit,
      'EBUSY',
      `misc cgroup tdx limit ${String(limit)} reached`,
    );
    const offline = this.host.packagesOnline.indexOf(false);
    ensure(offline === -1, 'EIO', `package ${offline} has no online CPU to configure the key on`);
    const controlPages = 1 + this.cost.params.tdcsPages;
    this.take(controlPages, 'TDR and TDCS');
    this.draft.list('freeHkids').shift();
    vm.hkid = hkid;
    vm.keyState = 'KEYS_CONFIGURED';
    vm.tdState = 'INITIALIZED';
    vm.controlPages = controlPages;
    this.seconds += this.cost.params.tdInitSecondsPerPackage * this.host.config.packages;
    return {};
  }

  private createVcpu(fd: number): CallValue {
    const vm = this.vmFd(fd);
    this.vcpuIoctl(vm, 'KVM_CREATE_VCPU');
    ensure(vm.tdState === 'INITIALIZED', 'EIO', `TD ${vm.id} is ${vm.tdState}, not INITIALIZED`);
    ensure(vm.vcpus.length < this.host.config.cpus, 'EINVAL', 'more vCPUs than host CPUs');
    const controlPages = this.cost.params.vcpuControlPages;
    this.take(controlPages, 'vCPU control pages');
    const index = vm.vcpus.length;
    vm.vcpus.push({ index, state: 'UNINITIALIZED', inIoctl: false, controlPages });
    vm.refs += 1;
    const vcpuFd = this.host.next.fd++;
    this.draft.put('files', vcpuFd, { fd: vcpuFd, kind: 'vcpu', vm: vm.id, vcpu: index });
    this.seconds += this.cost.params.vcpuSetupSeconds / 2;
    return { fd: vcpuFd };
  }

  private initVcpu(fd: number): CallValue {
    const { vm, vcpu } = this.vcpuFd(fd);
    this.vcpuIoctl(vm, 'KVM_TDX_INIT_VCPU');
    ensure(vm.hkid !== null, 'EINVAL', `TD ${vm.id} has no HKID`);
    ensure(vm.tdState !== 'RUNNABLE', 'EINVAL', `TD ${vm.id} is already RUNNABLE`);
    ensure(vcpu.state === 'UNINITIALIZED', 'EINVAL', `vCPU ${vcpu.index} is already initialised`);
    vcpu.state = 'INITIALIZED';
    this.seconds += this.cost.params.vcpuSetupSeconds / 2;
    return {};
  }

  private finalizeVm(fd: number): CallValue {
    const vm = this.vmFd(fd);
    this.tdxInit(vm, 'KVM_TDX_FINALIZE_VM');
    ensure(vm.hkid !== null, 'EINVAL', `TD ${vm.id} has no HKID`);
    ensure(vm.tdState !== 'RUNNABLE', 'EINVAL', `TD ${vm.id} is already RUNNABLE`);
    ensure(!this.host.moduleBusy, 'EBUSY', 'the TDX module is busy');
    vm.tdState = 'RUNNABLE';
    this.seconds += this.cost.params.finalizeSeconds;
    return {};
  }

  private runVcpu(fd: number, faultIn: { gpa: number; bytes: number } | undefined): CallValue {
    const { vm, vcpu } = this.vcpuFd(fd);
    this.vcpuIoctl(vm, 'KVM_RUN');
    ensure(vcpu.state === 'INITIALIZED', 'EINVAL', `vCPU ${vcpu.index} is not initialised`);
    ensure(vm.tdState === 'RUNNABLE', 'EINVAL', `TD ${vm.id} is ${vm.tdState}, not RUNNABLE`);
    ensure(!vcpu.inIoctl, 'EBUSY', `vCPU ${vcpu.index} is already inside KVM_RUN`);
    if (faultIn !== undefined) this.mapPrivate(vm, faultIn.gpa, faultIn.bytes, 'accepted');
    vcpu.inIoctl = true;
    this.seconds += this.cost.params.smallCallSeconds;
    return {};
  }

  private exitVcpu(fd: number): CallValue {
    const { vcpu } = this.vcpuFd(fd);
    vcpu.inIoctl = false;
    return {};
  }

  private initMemRegion(fd: number, gpa: number, bytes: number): CallValue {
    const { vm, vcpu } = this.vcpuFd(fd);
    this.vcpuIoctl(vm, 'KVM_TDX_INIT_MEM_REGION');
    ensure(vcpu.state === 'INITIALIZED', 'EINVAL', `vCPU ${vcpu.index} is not initialised`);
    ensure(vm.tdState !== 'RUNNABLE', 'EINVAL', `TD ${vm.id} is already RUNNABLE`);
    const pages = this.mapPrivate(vm, gpa, bytes, 'added');
    this.seconds += pageAddSeconds(this.cost.params, pages);
    return {};
  }

  private terminateVm(fd: number): CallValue {
    const vm = this.vmFd(fd);
    ensure(
      this.host.config.kernel.terminateVm !== 'none',
      'EINVAL',
      'unknown KVM_MEMORY_ENCRYPT_OP sub-ioctl 6 (this kernel has no KVM_TDX_TERMINATE_VM)',
    );
    ensure(!vm.dead, 'EIO', `VM ${vm.id} is already terminated`);
    const busy = vm.vcpus.find((v) => v.inIoctl);
    ensure(busy === undefined, 'EBUSY', `vCPU ${String(busy?.index)} is inside an ioctl`);
    vm.dead = true;
    // The ioctl succeeds even when the release fails: the kernel only logs it, the VM is dead
    // and the HKID is tried again when the VM is destroyed.
    if (vm.hkid !== null) this.releaseHkid(vm, false);
    return {};
  }

  // --- guest_memfd and memslots ---------------------------------------------------------------

  private createGuestMemfd(fd: number, bytes: number, flags: number): CallValue {
    const vm = this.vmFd(fd);
    this.vmIoctl(vm, 'KVM_CREATE_GUEST_MEMFD');
    const known =
      this.host.config.kernel.guestMemfdFlags === 'mmap'
        ? GUEST_MEMFD_FLAGS.GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAGS.GUEST_MEMFD_FLAG_INIT_SHARED
        : 0;
    ensure(
      isFlagMask(flags) && flags <= 0xffffffff && unknownBits(flags, known) === 0,
      'EINVAL',
      `flags ${String(flags)} has bits this kernel's KVM_CREATE_GUEST_MEMFD does not know`,
    );
    ensure(
      (flags & GUEST_MEMFD_FLAGS.GUEST_MEMFD_FLAG_INIT_SHARED) === 0,
      'EINVAL',
      'GUEST_MEMFD_FLAG_INIT_SHARED is only for a VM without private memory, never a TD',
    );
    const pages = this.alignedPages(bytes, 'guest_memfd size');
    const inode = this.host.next.inode++;
    this.draft.put('inodes', inode, { id: inode, pages, allocated: [], files: 0 });
    this.seconds += this.cost.params.smallCallSeconds;
    return { fd: this.openGmemFile(vm, inode), inode };
  }

  private linkGuestMemfd(fd: number, gmemFd: number, flags: number): CallValue {
    ensure(
      this.host.config.kernel.linkGuestMemfd,
      'ENOTTY',
      'this kernel has no KVM_LINK_GUEST_MEMFD',
    );
    const vm = this.vmFd(fd);
    this.vmIoctl(vm, 'KVM_LINK_GUEST_MEMFD');
    ensure(flags === 0, 'EINVAL', `KVM_LINK_GUEST_MEMFD takes no flags, got ${String(flags)}`);
    // The RFC looks the source up itself: a fd that is not open is EINVAL, as is any other file.
    const source = Number.isInteger(gmemFd) ? this.host.files[gmemFd] : undefined;
    ensure(
      source?.kind === 'gmem' && source.fdOpen,
      'EINVAL',
      `fd ${String(gmemFd)} is not an open guest_memfd`,
    );
    ensure(source.vm !== vm.id, 'EINVAL', `guest_memfd ${gmemFd} already belongs to VM ${vm.id}`);
    this.seconds += this.cost.params.smallCallSeconds;
    return { fd: this.openGmemFile(vm, source.inode), inode: source.inode };
  }

  private openGmemFile(vm: VmState, inode: number): number {
    const fd = this.host.next.fd++;
    this.draft.put('files', fd, { fd, kind: 'gmem', vm: vm.id, inode, fdOpen: true, mmaps: 0 });
    this.inode(inode).files += 1;
    vm.refs += 1;
    return fd;
  }

  /** A file that belongs to no VM (`/dev/kvm`, a plain memfd). */
  private openPlainFile(file: { kind: 'kvm' } | { kind: 'memfd'; pages: number }): CallValue {
    const fd = this.host.next.fd++;
    this.draft.put('files', fd, { fd, ...file });
    this.seconds += this.cost.params.smallCallSeconds;
    return { fd };
  }

  private createMemslot(
    fd: number,
    slot: number,
    gpa: number,
    bytes: number,
    gmemFd: number | undefined,
    gmemOffset = 0,
  ): CallValue {
    const vm = this.vmFd(fd);
    this.vmIoctl(vm, 'KVM_SET_USER_MEMORY_REGION2');
    ensure(Number.isSafeInteger(slot) && slot >= 0, 'EINVAL', `bad slot id ${String(slot)}`);
    ensure(
      vm.memslots[slot] === undefined,
      'EINVAL',
      `slot ${slot} exists; a guest_memfd slot cannot be modified`,
    );
    const gpaPage = this.alignedPages(gpa, 'gpa', true);
    const pages = this.alignedPages(bytes, 'memory_size');
    const overlap = Object.values(vm.memslots).find(
      (m) => gpaPage < m.gpaPage + m.pages && m.gpaPage < gpaPage + pages,
    );
    ensure(overlap === undefined, 'EEXIST', `GPA range overlaps slot ${String(overlap?.slot)}`);
    ensure(
      gmemFd !== undefined,
      'EINVAL',
      'a private memslot needs a guest_memfd (KVM_MEM_GUEST_MEMFD)',
    );
    const file = this.file(gmemFd);
    ensure(file.kind === 'gmem', 'EINVAL', `fd ${gmemFd} is not a guest_memfd`);
    ensure(file.vm === vm.id, 'EINVAL', `guest_memfd ${gmemFd} belongs to another VM`);
    const offsetPage = this.alignedPages(gmemOffset, 'guest_memfd_offset', true);
    const inode = this.inode(file.inode);
    ensure(
      offsetPage + pages <= inode.pages,
      'EINVAL',
      'range goes past the end of the guest_memfd',
    );
    const bound = Object.values(vm.memslots).find(
      (m) =>
        m.binding?.fd === file.fd &&
        offsetPage < m.binding.offsetPage + m.pages &&
        m.binding.offsetPage < offsetPage + pages,
    );
    ensure(
      bound === undefined,
      this.host.config.kernel.guestMemfdTree === 'kvm-x86-2026' ? 'EEXIST' : 'EINVAL',
      `guest_memfd range already bound to slot ${String(bound?.slot)}`,
    );
    vm.memslots[slot] = {
      slot,
      gpaPage,
      pages,
      binding: { fd: file.fd, inode: file.inode, offsetPage },
      added: [],
      accepted: [],
    };
    this.seconds += this.cost.params.smallCallSeconds;
    return {};
  }

  private deleteMemslot(fd: number, slot: number): CallValue {
    const vm = this.vmFd(fd);
    this.vmIoctl(vm, 'memslot delete');
    ensure(vm.memslots[slot] !== undefined, 'EINVAL', `slot ${slot} does not exist`);
    this.zap(vm, this.draft.memslot(vm, slot), null);
    delete vm.memslots[slot];
    this.seconds += this.cost.params.smallCallSeconds;
    return {};
  }

  /**
   * Maps `[gpa, gpa + bytes)` as private memory of `vm`: allocates the pages its inodes do not
   * hold yet, charges S-EPT pages, and returns how many pages were newly mapped. A guest fault
   * (`accepted`) on memory no guest_memfd backs stops `KVM_RUN` with a memory fault exit.
   */
  private mapPrivate(vm: VmState, gpa: number, bytes: number, as: 'added' | 'accepted'): number {
    const first = this.alignedPages(gpa, 'gpa', true);
    const count = this.alignedPages(bytes, 'size');
    const pieces: Array<{ memslot: MemslotState; inodeStart: number; inodeEnd: number }> = [];
    let cursor = first;
    const slots = Object.values(vm.memslots).sort((a, b) => a.gpaPage - b.gpaPage);
    for (const memslot of slots) {
      if (cursor >= first + count) break;
      const slotEnd = memslot.gpaPage + memslot.pages;
      if (slotEnd <= cursor || memslot.gpaPage > cursor) continue;
      if (memslot.binding === null) break;
      const end = Math.min(slotEnd, first + count);
      const inodeStart = memslot.binding.offsetPage + (cursor - memslot.gpaPage);
      pieces.push({ memslot, inodeStart, inodeEnd: inodeStart + (end - cursor) });
      cursor = end;
    }
    if (cursor < first + count) this.unbacked(cursor, as);

    let newlyAllocated = 0;
    let newlyMapped = 0;
    let wholeLeaves = 0;
    for (const { memslot, inodeStart, inodeEnd } of pieces) {
      const binding = memslot.binding;
      if (binding === null) continue;
      const inode = this.inode(binding.inode);
      const mine = unionRanges(memslot.added, memslot.accepted);
      const wanted = subtractRanges([[inodeStart, inodeEnd]], mine);
      if (as === 'added') {
        ensure(
          countPages(wanted) === inodeEnd - inodeStart,
          'EINVAL',
          'initial region pages are already mapped',
        );
      }
      ensure(
        !this.mappedElsewhere(vm.id, memslot.slot, inode, wanted),
        'EBUSY',
        `inode ${inode.id} pages are still owned by another TD`,
      );
      const missing = subtractRanges(wanted, inode.allocated);
      newlyAllocated += countPages(missing);
      newlyMapped += countPages(wanted);
      if (as === 'accepted' && this.cost.pageSize === '2M') {
        wholeLeaves += wholeLeafPages(wanted, PAGES_PER_2M);
      }
    }
    const septAfter = septPagesFor(vm.mappedPages + newlyMapped, this.leafPages());
    const septDelta = Math.max(0, septAfter - vm.septPages);
    this.take(newlyAllocated + septDelta, 'private memory');

    for (const { memslot, inodeStart, inodeEnd } of pieces) {
      const binding = memslot.binding;
      if (binding === null) continue;
      const inode = this.inode(binding.inode);
      inode.allocated = addRange(inode.allocated, inodeStart, inodeEnd);
      const slot = this.draft.memslot(vm, memslot.slot);
      const mine = unionRanges(slot.added, slot.accepted);
      for (const [s, e] of subtractRanges([[inodeStart, inodeEnd]], mine)) {
        slot[as] = addRange(slot[as], s, e);
      }
    }
    vm.mappedPages += newlyMapped;
    vm.septPages += septDelta;
    this.effects.allocatedPages += newlyAllocated;
    this.effects.reusedPages += newlyMapped - newlyAllocated;
    this.seconds += allocateSeconds(this.cost.params, newlyAllocated);
    if (as === 'accepted') {
      this.seconds +=
        this.cost.pageSize === '4K'
          ? augAcceptSeconds(this.cost, newlyMapped)
          : augAcceptSeconds(this.cost, wholeLeaves) +
            augAcceptSeconds(this.cost4K, newlyMapped - wholeLeaves);
    }
    return newlyMapped;
  }

  /**
   * A private access at page `gpaPage` that no guest_memfd backs (no memslot, or one whose file
   * is gone): `KVM_RUN` stops with `EFAULT` and a memory fault exit; an initial region there is
   * simply invalid.
   */
  private unbacked(gpaPage: number, as: 'added' | 'accepted'): never {
    const gpa = gpaPage * PAGE_BYTES;
    if (as === 'added') {
      throw new SimErrnoError('EINVAL', 'GPA range is not covered by guest_memfd memslots');
    }
    throw new SimErrnoError(
      'EFAULT',
      `private access at GPA 0x${gpa.toString(16)} has no guest_memfd behind it (KVM_EXIT_MEMORY_FAULT)`,
      {
        reason: 'KVM_EXIT_MEMORY_FAULT',
        flags: ['KVM_MEMORY_EXIT_FLAG_PRIVATE'],
        gpa,
        size: PAGE_BYTES,
      },
    );
  }

  /**
   * Whether another memslot bound to `inode` (of another VM, or another file of this one) maps
   * any page of `ranges`: a page is mapped in one place at a time.
   */
  private mappedElsewhere(
    vmId: number,
    slotId: number,
    inode: InodeState,
    ranges: Ranges,
  ): boolean {
    // A memslot is bound through its VM's own file on the inode, and unbound when that file
    // goes; one file's slots never overlap in the inode, so an inode with one file has no
    // other mapping to look for.
    if (inode.files <= 1) return false;
    for (const id in this.host.vms) {
      const other = this.host.vms[id] as VmState;
      for (const slot in other.memslots) {
        const m = other.memslots[slot] as MemslotState;
        if (m.binding?.inode !== inode.id || (other.id === vmId && m.slot === slotId)) continue;
        for (const [s, e] of ranges) {
          if (countInside(m.added, s, e) > 0 || countInside(m.accepted, s, e) > 0) return true;
        }
      }
    }
    return false;
  }

  /**
   * Removes the private mappings of `memslot` (only those inside `inodeRange` when given).
   * A TD in TEARDOWN gives each page back with one reclaim; a live TD needs Dynamic Page
   * Removal; the pages stay in the inode either way. A BLOCKED TD (its `KEY.FREEID` failed)
   * can give nothing back: its pages are lost for good.
   */
  private zap(vm: VmState, memslot: MemslotState, inodeRange: [number, number] | null): void {
    const mapped = unionRanges(memslot.added, memslot.accepted);
    const target = inodeRange === null ? mapped : clipRanges(mapped, inodeRange[0], inodeRange[1]);
    const pages = countPages(target);
    if (pages === 0) return;
    for (const [s, e] of target) {
      memslot.added = removeRange(memslot.added, s, e);
      memslot.accepted = removeRange(memslot.accepted, s, e);
    }
    vm.mappedPages -= pages;
    if (vm.keyState === 'BLOCKED') {
      const binding = memslot.binding;
      if (binding !== null) {
        const inode = this.inode(binding.inode);
        for (const [s, e] of target) inode.allocated = removeRange(inode.allocated, s, e);
      }
      this.leak(pages);
      return;
    }
    if (vm.keyState === 'TEARDOWN') {
      this.seconds += this.leafCost(target, teardownReclaimSeconds);
      this.effects.reclaimedPages += pages;
    } else {
      const vmPrivateGiB = (vm.mappedPages + pages) / PAGES_PER_GIB;
      const removal = (ctx: CostContext, n: number): number =>
        dynamicRemovalSeconds(ctx, n, vm.vcpus.length, vmPrivateGiB);
      this.seconds += this.leafCost(target, removal);
      if (inodeRange !== null && this.cost.pageSize === '2M') {
        // A hole that cuts a 2 MiB leaf splits it first: block, track, kick, demote (model:
        // as much as removing one 4 KiB page).
        const splits = splitLeaves(mapped, inodeRange);
        if (splits > 0) this.seconds += removal(this.cost4K, splits);
      }
      this.effects.removedPages += pages;
    }
    this.effects.reclaims.push({ vm: vm.id, keyState: vm.keyState, pages });
  }

  // --- files and references -------------------------------------------------------------------

  private close(fd: number): CallValue {
    const file = this.file(fd);
    switch (file.kind) {
      case 'kvm':
      case 'memfd':
        this.draft.put('files', fd, undefined);
        break;
      case 'vm':
        this.draft.put('files', fd, undefined);
        this.dropRef(this.vmOf(file));
        break;
      case 'vcpu': {
        // Closing the fd of a vCPU that is still running stands for the process being killed:
        // the thread leaves KVM_RUN first (model).
        const { vm, vcpu } = this.vcpuFd(fd);
        vcpu.inIoctl = false;
        this.draft.put('files', fd, undefined);
        this.dropRef(vm);
        break;
      }
      case 'gmem': {
        const gmem = this.draft.gmemFile(file);
        gmem.fdOpen = false;
        if (gmem.mmaps === 0) this.releaseGmemFile(gmem);
        break;
      }
    }
    this.seconds += this.cost.params.smallCallSeconds;
    return {};
  }

  private mmap(fd: number): CallValue {
    const file = this.gmemFd(fd);
    const id = this.host.next.mmap++;
    this.draft.put('mmaps', id, { id, fd });
    this.draft.gmemFile(file).mmaps += 1;
    this.seconds += this.cost.params.smallCallSeconds;
    return { map: id };
  }

  private munmap(mapId: number): CallValue {
    const map = Number.isInteger(mapId) ? this.host.mmaps[mapId] : undefined;
    ensure(map !== undefined, 'EINVAL', `no mapping ${String(mapId)}`);
    const pinned = this.host.files[map.fd];
    if (pinned?.kind !== 'gmem') throw new Error(`mapping ${mapId} pins a missing file`);
    this.draft.put('mmaps', mapId, undefined);
    const file = this.draft.gmemFile(pinned);
    file.mmaps -= 1;
    if (!file.fdOpen && file.mmaps === 0) this.releaseGmemFile(file);
    this.seconds += this.cost.params.smallCallSeconds;
    return {};
  }

  /** The last user of a guest_memfd file is gone: zap what it maps, unbind, drop the VM ref. */
  private releaseGmemFile(file: GmemFile): void {
    const vm = this.vmOf(file);
    for (const { slot, binding } of Object.values(vm.memslots)) {
      if (binding?.fd !== file.fd) continue;
      const memslot = this.draft.memslot(vm, slot);
      this.zap(vm, memslot, null);
      memslot.binding = null;
    }
    this.draft.put('files', file.fd, undefined);
    const inode = this.inode(file.inode);
    inode.files -= 1;
    if (inode.files === 0) {
      const pages = countPages(inode.allocated);
      this.seconds += freeSeconds(this.cost.params, pages);
      this.free(pages);
      this.draft.put('inodes', inode.id, undefined);
    }
    this.dropRef(vm);
  }

  /**
   * `fallocate(2)` on a guest_memfd: with `FALLOC_FL_KEEP_SIZE` alone, the range's pages are
   * allocated in the inode (held, mapped by no TD yet); with `FALLOC_FL_PUNCH_HOLE` too, the
   * range is unmapped in every VM viewing the inode and freed. Without KEEP_SIZE, or with a bit
   * guest_memfd does not know, `EOPNOTSUPP`.
   */
  private fallocate(fd: number, mode: number, offset: number, bytes: number): CallValue {
    const file = this.file(fd);
    const known = FALLOC_FLAGS.FALLOC_FL_KEEP_SIZE | FALLOC_FLAGS.FALLOC_FL_PUNCH_HOLE;
    if (file.kind === 'memfd') return {};
    ensure(file.kind === 'gmem', 'EINVAL', `fd ${fd} is not a guest_memfd`);
    ensure(
      isFlagMask(mode) &&
        mode <= 0xffffffff &&
        unknownBits(mode, known) === 0 &&
        (mode & FALLOC_FLAGS.FALLOC_FL_KEEP_SIZE) !== 0,
      'EOPNOTSUPP',
      `guest_memfd takes fallocate mode FALLOC_FL_KEEP_SIZE, with or without FALLOC_FL_PUNCH_HOLE; got ${String(mode)}`,
    );
    const start = this.alignedPages(offset, 'offset', true);
    const count = this.alignedPages(bytes, 'len');
    const inode = this.inode(file.inode);
    if ((mode & FALLOC_FLAGS.FALLOC_FL_PUNCH_HOLE) !== 0) {
      return this.punchHole(inode, start, Math.min(start + count, inode.pages));
    }
    ensure(
      start + count <= inode.pages,
      'EINVAL',
      'allocation goes past the end of the guest_memfd',
    );
    const missing = countPages(subtractRanges([[start, start + count]], inode.allocated));
    this.take(missing, 'guest_memfd allocation');
    inode.allocated = addRange(inode.allocated, start, start + count);
    this.effects.allocatedPages += missing;
    this.seconds += allocateSeconds(this.cost.params, missing) + this.cost.params.smallCallSeconds;
    return {};
  }

  /** Unmaps and frees inode pages `[start, end)`; nothing to do past the end of the file. */
  private punchHole(inode: InodeState, start: number, end: number): CallValue {
    this.seconds += this.cost.params.smallCallSeconds;
    if (end <= start) return {};
    for (const viewer of Object.values(this.host.vms)) {
      for (const { slot, binding } of Object.values(viewer.memslots)) {
        if (binding?.inode !== inode.id) continue;
        const vm = this.draft.vm(viewer.id);
        this.zap(vm, this.draft.memslot(vm, slot), [start, end]);
      }
    }
    const freed = countInside(inode.allocated, start, end);
    inode.allocated = removeRange(inode.allocated, start, end);
    this.seconds += freeSeconds(this.cost.params, freed);
    this.free(freed);
    return {};
  }

  /** `fstat`: a guest_memfd's size and the blocks its inode holds; a memfd's size. */
  private fstat(fd: number): CallValue {
    const file = this.file(fd);
    this.seconds += this.cost.params.smallCallSeconds;
    switch (file.kind) {
      case 'gmem': {
        const inode = this.host.inodes[file.inode] as InodeState;
        return {
          size: inode.pages * PAGE_BYTES,
          blocks: (countPages(inode.allocated) * PAGE_BYTES) / 512,
        };
      }
      case 'memfd':
        return { size: file.pages * PAGE_BYTES, blocks: 0 };
      case 'kvm':
      case 'vm':
      case 'vcpu':
        return { size: 0, blocks: 0 };
    }
  }

  /** `read`/`write`: a guest_memfd refuses both (`EINVAL`), as do KVM's other files. */
  private readWrite(op: 'read' | 'write', fd: number, bytes: number): CallValue {
    const file = this.file(fd);
    ensure(
      file.kind === 'memfd',
      'EINVAL',
      `${op} on fd ${fd}: a ${file.kind === 'gmem' ? 'guest_memfd' : 'KVM file'} cannot be ${op === 'read' ? 'read' : 'written'}`,
    );
    ensure(Number.isSafeInteger(bytes) && bytes >= 0, 'EINVAL', `${op} of ${String(bytes)} bytes`);
    this.seconds += this.cost.params.smallCallSeconds;
    return { bytes };
  }

  private dropRef(vm: VmState): void {
    vm.refs -= 1;
    if (vm.refs === 0) this.destroy(vm);
  }

  /**
   * The last reference went: release the HKID if still held, reclaim what is left, free it. A
   * release that fails here leaks the HKID (the VM is gone) and the pages it still holds.
   */
  private destroy(vm: VmState): void {
    if (vm.hkid !== null) this.releaseHkid(vm, true);
    const metadata =
      vm.controlPages + vm.septPages + vm.vcpus.reduce((sum, v) => sum + v.controlPages, 0);
    if (metadata > 0) {
      if (vm.keyState === 'TEARDOWN') {
        // Control and S-EPT pages can only exist on a TD that got a key, now in TEARDOWN.
        this.seconds += teardownReclaimSeconds(this.cost4K, metadata);
        this.effects.reclaimedPages += metadata;
        this.effects.reclaims.push({ vm: vm.id, keyState: vm.keyState, pages: metadata });
        this.free(metadata);
      } else {
        this.leak(metadata);
      }
    }
    this.draft.put('vms', vm.id, undefined);
    this.effects.destroyedVms.push(vm.id);
  }

  /**
   * Flush vCPUs, `VPFLUSHDONE`, write back caches, `KEY.FREEID`: the TD moves to TEARDOWN and
   * its HKID goes in flight. A failed `VPFLUSHDONE` keeps the HKID with the TD (RUNNABLE, keys
   * configured), unless the VM is being destroyed, which leaks it; a failed `KEY.FREEID` leaks
   * the HKID and leaves the TD BLOCKED.
   */
  private releaseHkid(vm: VmState, destroying: boolean): void {
    const hkid = vm.hkid;
    if (hkid === null) return;
    const params = this.cost.params;
    if (this.host.failNext.VPFLUSHDONE) {
      this.disarm('VPFLUSHDONE');
      this.seconds += params.vcpuFlushSeconds * vm.vcpus.length;
      if (destroying) this.leakHkid(vm, hkid);
      return;
    }
    this.seconds += hkidReleaseSeconds(params, vm.vcpus.length, this.host.config.packages);
    if (this.host.failNext.FREEID) {
      this.disarm('FREEID');
      this.leakHkid(vm, hkid);
      vm.keyState = 'BLOCKED';
      return;
    }
    (this.freedHkids ??= []).push(hkid);
    this.effects.releasedHkid = hkid;
    vm.hkid = null;
    vm.keyState = 'TEARDOWN';
  }

  /** The armed failure of `step` fires: it is reported and disarmed. */
  private disarm(step: HkidReleaseFailure): void {
    this.host.failNext = { ...this.host.failNext, [step]: false };
    this.effects.hkidReleaseFailure = step;
  }

  /** `hkid` leaves `vm` for good: owned by no VM, never free again. */
  private leakHkid(vm: VmState, hkid: number): void {
    returnHkids(this.draft.list('leakedHkids'), [hkid]);
    this.effects.leakedHkid = hkid;
    vm.hkid = null;
  }

  /** Pages no one can take back any more. */
  private leak(pages: number): void {
    this.host.leakedPages += pages;
    this.effects.leakedPages += pages;
  }

  private cpuHotplug(pkg: number, online: boolean): CallValue {
    ensure(
      Number.isInteger(pkg) && pkg >= 0 && pkg < this.host.packagesOnline.length,
      'EINVAL',
      `no package ${String(pkg)}`,
    );
    this.draft.list('packagesOnline')[pkg] = online;
    return {};
  }
}

/** The modes `fallocate_punch_hole` stands for. */
const PUNCH_MODE = FALLOC_FLAGS.FALLOC_FL_KEEP_SIZE | FALLOC_FLAGS.FALLOC_FL_PUNCH_HOLE;

/**
 * How many 2 MiB leaves a hole `[start, end)` cuts through while they keep mapped pages on
 * both sides of the cut: at most one at each end of the hole.
 */
function splitLeaves(mapped: Ranges, [start, end]: [number, number]): number {
  let splits = 0;
  for (const edge of [start, end]) {
    if (edge % PAGES_PER_2M === 0) continue;
    const leaf = edge - (edge % PAGES_PER_2M);
    const inside = countInside(mapped, Math.max(leaf, start), Math.min(leaf + PAGES_PER_2M, end));
    const outside = countInside(mapped, leaf, leaf + PAGES_PER_2M) - inside;
    if (inside > 0 && outside > 0) splits += 1;
  }
  return splits;
}

/** S-EPT table pages needed to map `mappedPages` 4 KiB pages with leaves of `leafPages` pages. */
export function septPagesFor(mappedPages: number, leafPages: number): number {
  const leaves = Math.ceil(mappedPages / leafPages);
  return Math.ceil(leaves / SEPT_ENTRIES_PER_PAGE);
}
