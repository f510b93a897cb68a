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
import {
  type Ranges,
  addRange,
  clipRanges,
  countInside,
  countPages,
  removeRange,
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
import { PAGES_PER_2M, PAGES_PER_GIB, PAGE_BYTES, SEPT_ENTRIES_PER_PAGE } from './units.js';

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
      outcomes.push({ ok: false, errno: error.errno, message: error.message, seconds: 0 });
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
type ListName = 'freeHkids' | 'packagesOnline' | 'inFlight';

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
      // In place, a call changes the host's own fields only by counting (pages, ids) and by the
      // module busy flag; its tables and lists are journaled as they change.
      const { vm, fd, inode, mmap, release } = base.next;
      const counters = { freePages: base.freePages, moduleBusy: base.moduleBusy };
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
        return this.createGuestMemfd(call.vm, call.bytes);
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
        return this.linkGuestMemfd(call.vm, call.gmem);
      case 'close':
        return this.close(call.fd);
      case 'mmap':
        return this.mmap(call.fd);
      case 'munmap':
        return this.munmap(call.map);
      case 'fallocate_punch_hole':
        return this.punchHole(call.fd, call.offset, call.bytes);
      case 'cpu_hotplug':
        return this.cpuHotplug(call.package, call.online);
      case 'tdx_module_busy':
        this.host.moduleBusy = call.busy;
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
  private vmOf(file: FileState): VmState {
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

  private alive(vm: VmState, what: string): void {
    ensure(!vm.dead, 'EIO', `${what}: VM ${vm.id} is dead (terminated)`);
  }

  private leafPages(): number {
    return this.host.config.kernel.privatePageSize === '2M' ? PAGES_PER_2M : 1;
  }

  /** Bytes to pages for a guest address or size, which must be leaf-aligned. */
  private alignedPages(bytes: number, what: string, allowZero = false): number {
    const leafBytes = this.leafPages() * PAGE_BYTES;
    const aligned =
      Number.isSafeInteger(bytes) &&
      bytes >= 0 &&
      bytes % leafBytes === 0 &&
      (allowZero || bytes > 0);
    // The message is built only for a refusal: sizes and page counts are large numbers, slow
    // to format, and every memory call checks a few of them.
    if (!aligned) {
      throw new SimErrnoError(
        'EINVAL',
        `${what} must be a ${allowZero ? 'non-negative' : 'positive'} multiple of ${leafBytes} bytes, got ${String(bytes)}`,
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
    this.alive(vm, 'KVM_TDX_INIT_VM');
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
    this.alive(vm, 'KVM_CREATE_VCPU');
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
    this.alive(vm, 'KVM_TDX_INIT_VCPU');
    ensure(vm.hkid !== null, 'EINVAL', `TD ${vm.id} has no HKID`);
    ensure(vm.tdState !== 'RUNNABLE', 'EINVAL', `TD ${vm.id} is already RUNNABLE`);
    ensure(vcpu.state === 'UNINITIALIZED', 'EINVAL', `vCPU ${vcpu.index} is already initialised`);
    vcpu.state = 'INITIALIZED';
    this.seconds += this.cost.params.vcpuSetupSeconds / 2;
    return {};
  }

  private finalizeVm(fd: number): CallValue {
    const vm = this.vmFd(fd);
    this.alive(vm, 'KVM_TDX_FINALIZE_VM');
    ensure(vm.hkid !== null, 'EINVAL', `TD ${vm.id} has no HKID`);
    ensure(vm.tdState !== 'RUNNABLE', 'EINVAL', `TD ${vm.id} is already RUNNABLE`);
    ensure(!this.host.moduleBusy, 'EBUSY', 'the TDX module is busy');
    vm.tdState = 'RUNNABLE';
    this.seconds += this.cost.params.finalizeSeconds;
    return {};
  }

  private runVcpu(fd: number, faultIn: { gpa: number; bytes: number } | undefined): CallValue {
    const { vm, vcpu } = this.vcpuFd(fd);
    this.alive(vm, 'KVM_RUN');
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
    this.alive(vm, 'KVM_TDX_INIT_MEM_REGION');
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
    if (vm.hkid !== null) this.releaseHkid(vm);
    return {};
  }

  // --- guest_memfd and memslots ---------------------------------------------------------------

  private createGuestMemfd(fd: number, bytes: number): CallValue {
    const vm = this.vmFd(fd);
    this.alive(vm, 'KVM_CREATE_GUEST_MEMFD');
    const pages = this.alignedPages(bytes, 'guest_memfd size');
    const inode = this.host.next.inode++;
    this.draft.put('inodes', inode, { id: inode, pages, allocated: [], files: 0 });
    this.seconds += this.cost.params.smallCallSeconds;
    return { fd: this.openGmemFile(vm, inode), inode };
  }

  private linkGuestMemfd(fd: number, gmemFd: number): CallValue {
    ensure(
      this.host.config.kernel.linkGuestMemfd,
      'ENOTTY',
      'this kernel has no KVM_LINK_GUEST_MEMFD',
    );
    const vm = this.vmFd(fd);
    this.alive(vm, 'KVM_LINK_GUEST_MEMFD');
    const source = this.gmemFd(gmemFd);
    ensure(
      !this.hasFileOn(vm.id, source),
      'EEXIST',
      `inode ${source.inode} already has a file for VM ${vm.id}`,
    );
    this.seconds += this.cost.params.smallCallSeconds;
    return { fd: this.openGmemFile(vm, source.inode), inode: source.inode };
  }

  /** Whether VM `vmId` has a guest_memfd file on the inode of `known` (a file on it). */
  private hasFileOn(vmId: number, known: GmemFile): boolean {
    // The inode counts its files: when `known` is the only one, there is no other to look for.
    if (this.host.inodes[known.inode]?.files === 1) return known.vm === vmId;
    for (const fd in this.host.files) {
      const f = this.host.files[fd] as FileState;
      if (f.kind === 'gmem' && f.inode === known.inode && f.vm === vmId) return true;
    }
    return false;
  }

  private openGmemFile(vm: VmState, inode: number): number {
    const fd = this.host.next.fd++;
    this.draft.put('files', fd, { fd, kind: 'gmem', vm: vm.id, inode, fdOpen: true, mmaps: 0 });
    this.inode(inode).files += 1;
    vm.refs += 1;
    return fd;
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
    this.alive(vm, 'KVM_SET_USER_MEMORY_REGION2');
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
      'EINVAL',
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
    if (this.host.config.kernel.terminateVm !== 'aug2025') this.alive(vm, 'memslot delete');
    ensure(vm.memslots[slot] !== undefined, 'EINVAL', `slot ${slot} does not exist`);
    this.zap(vm, this.draft.memslot(vm, slot), null);
    delete vm.memslots[slot];
    this.seconds += this.cost.params.smallCallSeconds;
    return {};
  }

  /**
   * Maps `[gpa, gpa + bytes)` as private memory of `vm`: allocates the pages its inodes do not
   * hold yet, charges S-EPT pages, and returns how many pages were newly mapped.
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
      ensure(
        memslot.binding !== null,
        'EINVAL',
        `slot ${memslot.slot} has no guest_memfd behind it`,
      );
      const end = Math.min(slotEnd, first + count);
      const inodeStart = memslot.binding.offsetPage + (cursor - memslot.gpaPage);
      pieces.push({ memslot, inodeStart, inodeEnd: inodeStart + (end - cursor) });
      cursor = end;
    }
    ensure(cursor >= first + count, 'EINVAL', 'GPA range is not covered by guest_memfd memslots');

    let newlyAllocated = 0;
    let newlyMapped = 0;
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
        !this.mappedByOtherVm(vm.id, inode, wanted),
        'EBUSY',
        `inode ${inode.id} pages are still owned by another TD`,
      );
      const missing = subtractRanges(wanted, inode.allocated);
      newlyAllocated += countPages(missing);
      newlyMapped += countPages(wanted);
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
    if (as === 'accepted') this.seconds += augAcceptSeconds(this.cost, newlyMapped);
    return newlyMapped;
  }

  /** Whether a VM other than `vmId`, bound to `inode`, maps any page of `ranges`. */
  private mappedByOtherVm(vmId: number, inode: InodeState, ranges: Ranges): boolean {
    // A memslot is bound through its VM's own file on the inode, and unbound when that file
    // goes: an inode with one file (the mapping VM's) has no other VM to look for.
    if (inode.files <= 1) return false;
    for (const id in this.host.vms) {
      const other = this.host.vms[id] as VmState;
      if (other.id === vmId) continue;
      for (const slot in other.memslots) {
        const m = other.memslots[slot] as MemslotState;
        if (m.binding?.inode !== inode.id) continue;
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
   * Removal. The pages stay in the inode either way.
   */
  private zap(vm: VmState, memslot: MemslotState, inodeRange: [number, number] | null): void {
    const mapped = unionRanges(memslot.added, memslot.accepted);
    const target = inodeRange === null ? mapped : clipRanges(mapped, inodeRange[0], inodeRange[1]);
    const pages = countPages(target);
    if (pages === 0) return;
    if (vm.keyState === 'TEARDOWN') {
      this.seconds += teardownReclaimSeconds(this.cost, pages);
      this.effects.reclaimedPages += pages;
    } else {
      const vmPrivateGiB = vm.mappedPages / PAGES_PER_GIB;
      this.seconds += dynamicRemovalSeconds(this.cost, pages, vm.vcpus.length, vmPrivateGiB);
      this.effects.removedPages += pages;
    }
    this.effects.reclaims.push({ vm: vm.id, keyState: vm.keyState, pages });
    for (const [s, e] of target) {
      memslot.added = removeRange(memslot.added, s, e);
      memslot.accepted = removeRange(memslot.accepted, s, e);
    }
    vm.mappedPages -= pages;
  }

  // --- files and references -------------------------------------------------------------------

  private close(fd: number): CallValue {
    const file = this.file(fd);
    switch (file.kind) {
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

  private punchHole(fd: number, offset: number, bytes: number): CallValue {
    const file = this.gmemFd(fd);
    const start = this.alignedPages(offset, 'offset', true);
    const count = this.alignedPages(bytes, 'len');
    const inode = this.inode(file.inode);
    ensure(start + count <= inode.pages, 'EINVAL', 'hole goes past the end of the guest_memfd');
    for (const viewer of Object.values(this.host.vms)) {
      for (const { slot, binding } of Object.values(viewer.memslots)) {
        if (binding?.inode !== inode.id) continue;
        const vm = this.draft.vm(viewer.id);
        this.zap(vm, this.draft.memslot(vm, slot), [start, start + count]);
      }
    }
    const freed = countInside(inode.allocated, start, start + count);
    inode.allocated = removeRange(inode.allocated, start, start + count);
    this.seconds += freeSeconds(this.cost.params, freed) + this.cost.params.smallCallSeconds;
    this.free(freed);
    return {};
  }

  private dropRef(vm: VmState): void {
    vm.refs -= 1;
    if (vm.refs === 0) this.destroy(vm);
  }

  /** The last reference went: release the HKID if still held, reclaim what is left, free it. */
  private destroy(vm: VmState): void {
    if (vm.hkid !== null) this.releaseHkid(vm);
    const metadata =
      vm.controlPages + vm.septPages + vm.vcpus.reduce((sum, v) => sum + v.controlPages, 0);
    if (metadata > 0) {
      // Control and S-EPT pages can only exist on a TD that got a key, now in TEARDOWN.
      this.seconds += teardownReclaimSeconds({ ...this.cost, pageSize: '4K' }, metadata);
      this.effects.reclaimedPages += metadata;
      this.effects.reclaims.push({ vm: vm.id, keyState: vm.keyState, pages: metadata });
      this.free(metadata);
    }
    this.draft.put('vms', vm.id, undefined);
    this.effects.destroyedVms.push(vm.id);
  }

  /** Flush vCPUs, write back caches, free the key ID: the TD moves to TEARDOWN. */
  private releaseHkid(vm: VmState): void {
    if (vm.hkid === null) return;
    this.seconds += hkidReleaseSeconds(
      this.cost.params,
      vm.vcpus.length,
      this.host.config.packages,
    );
    (this.freedHkids ??= []).push(vm.hkid);
    this.effects.releasedHkid = vm.hkid;
    vm.hkid = null;
    vm.keyState = 'TEARDOWN';
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

/** S-EPT table pages needed to map `mappedPages` 4 KiB pages with leaves of `leafPages` pages. */
export function septPagesFor(mappedPages: number, leafPages: number): number {
  const leaves = Math.ceil(mappedPages / leafPages);
  return Math.ceil(leaves / SEPT_ENTRIES_PER_PAGE);
}
