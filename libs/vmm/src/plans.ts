import {
  FALLOC_FLAGS,
  GIB_BYTES,
  KERNEL_SWITCHES,
  type KernelFeatureName,
  type KernelFeatureSwitch,
  type KernelFeatures,
  hasKernelFeature,
  kernelSwitchesText,
} from '#tdx-sim';
import {
  type Bindings,
  type Intent,
  type Plan,
  type PlanStep,
  type PlannedCall,
  REBOOT_STRATEGIES,
  type RebootStrategy,
  type StrategyAction,
  TERMINATE_STRATEGIES,
  type TerminateStrategy,
  type Track,
  ref,
  strategyNeeds,
} from './plan.js';

/** The size of a VM, and how much of its memory a boot touches. */
export interface VmShape {
  vcpus: number;
  /** Guest private memory in bytes (a multiple of 2 MiB). */
  memoryBytes: number;
  /** Firmware image added and measured before finalize; default 4 MiB. */
  initialRegionBytes?: number;
  /** Memory the guest faults in once running; default all of it. */
  faultInBytes?: number;
  /**
   * Whether the VMM preallocates the guest memory (`fallocate(FALLOC_FL_KEEP_SIZE)` right after
   * creating each guest_memfd), as most VMMs do: the host's memory is taken at boot, before the
   * guest touches it, and a reuse reboot keeps all of it. Default false: taken as faulted in.
   */
  preallocate?: boolean;
}

/** One guest_memfd of a running VM: its fd, its userspace mapping and the slot it backs. */
export interface GuestMemfdHandle {
  fd: number;
  map: number | null;
  slot: number;
  gpa: number;
  bytes: number;
  offset: number;
}

/** The fds of a running VM, as a VMM holds them. */
export interface VmHandles {
  vm: number;
  vcpus: number[];
  guestMemfds: GuestMemfdHandle[];
}

/** The kernel features a plan can need. */
export type { KernelFeatureName };

/** Why a plan was refused before any step ran. */
export type PlanRefusal =
  | {
      code: 'KERNEL_FEATURE_MISSING';
      feature: KernelFeatureName;
      /** The host kernel switch that would provide it. */
      switch: KernelFeatureSwitch;
      message: string;
    }
  | { code: 'INVALID_VM_SHAPE'; message: string };

/** A plan, or the reason there is none. */
export type PlanResult = { ok: true; plan: Plan } | { ok: false; refusal: PlanRefusal };

const TWO_MIB = 2 * 1024 * 1024;
const DEFAULT_INITIAL_REGION_BYTES = 4 * 1024 * 1024;

/** The kernel features `intent` needs, or the refusal naming the first one missing. */
export function kernelRefusal(intent: Intent, kernel: KernelFeatures): PlanRefusal | null {
  for (const need of strategyNeeds(intent)) {
    if (hasKernelFeature(kernel, need.switch)) continue;
    const feature = KERNEL_SWITCHES[need.switch].feature;
    const purpose = need.purpose === undefined ? '' : ` ${need.purpose}`;
    return {
      code: 'KERNEL_FEATURE_MISSING',
      feature,
      switch: need.switch,
      message: `${describe(intent)} needs ${feature}${purpose}, which this host's kernel does not have (${need.switch}: ${String(kernel[need.switch])})`,
    };
  }
  return null;
}

/** The strategies of `action` a host with `kernel` can run, in declaration order. */
export function runnableStrategies(action: 'reboot', kernel: KernelFeatures): RebootStrategy[];
export function runnableStrategies(
  action: 'terminate',
  kernel: KernelFeatures,
): TerminateStrategy[];
export function runnableStrategies(
  action: StrategyAction,
  kernel: KernelFeatures,
): Array<RebootStrategy | TerminateStrategy> {
  return action === 'reboot'
    ? REBOOT_STRATEGIES.filter((strategy) => kernelRefusal({ action, strategy }, kernel) === null)
    : TERMINATE_STRATEGIES.filter(
        (strategy) => kernelRefusal({ action, strategy }, kernel) === null,
      );
}

function describe(intent: Intent): string {
  return intent.action === 'boot' ? 'boot' : `${intent.action} with strategy ${intent.strategy}`;
}

/** Checks a VM shape; returns the problem or null. */
export function shapeProblem(shape: VmShape): string | null {
  if (!Number.isSafeInteger(shape.vcpus) || shape.vcpus < 1)
    return 'vcpus must be a positive integer';
  if (
    !Number.isSafeInteger(shape.memoryBytes) ||
    shape.memoryBytes <= 0 ||
    shape.memoryBytes % TWO_MIB !== 0
  ) {
    return 'memory must be a positive multiple of 2 MiB';
  }
  const initial = shape.initialRegionBytes ?? DEFAULT_INITIAL_REGION_BYTES;
  if (initial % TWO_MIB !== 0 || initial <= 0 || initial > shape.memoryBytes) {
    return 'the initial region must be a positive multiple of 2 MiB no larger than memory';
  }
  const faultIn = shape.faultInBytes ?? shape.memoryBytes;
  if (faultIn % TWO_MIB !== 0 || faultIn < initial || faultIn > shape.memoryBytes) {
    return 'faultInBytes must be a multiple of 2 MiB between the initial region and memory';
  }
  if (shape.preallocate !== undefined && typeof shape.preallocate !== 'boolean') {
    return 'preallocate must be true or false';
  }
  return null;
}

/**
 * The plan for `intent` on a host with `kernel`, for a VM of `shape` (and, except for boot, the
 * running VM's `handles`). Refused before any step when the kernel cannot run it.
 */
export function planFor(
  intent: Intent,
  kernel: KernelFeatures,
  shape: VmShape,
  handles?: VmHandles,
): PlanResult {
  const problem = shapeProblem(shape);
  if (problem !== null)
    return { ok: false, refusal: { code: 'INVALID_VM_SHAPE', message: problem } };
  const refusal = kernelRefusal(intent, kernel);
  if (refusal !== null) return { ok: false, refusal };
  if (intent.action === 'boot') return { ok: true, plan: planBoot(shape) };
  if (handles === undefined) throw new Error(`${describe(intent)} needs the running VM's handles`);
  if (intent.action === 'reboot' && intent.strategy === 'reuse') {
    const mismatch = reuseLayoutProblem(shape, handles);
    if (mismatch !== null) {
      return { ok: false, refusal: { code: 'INVALID_VM_SHAPE', message: mismatch } };
    }
  }
  if (intent.action === 'reboot') {
    return { ok: true, plan: planReboot(intent.strategy, kernel, shape, handles) };
  }
  return { ok: true, plan: planTerminate(intent.strategy, handles) };
}

/**
 * Reuse links every old guest_memfd into the new VM and binds it exactly where it was: the new
 * VM's memory layout must be the old one's, or the run would fail after the old VM is gone (more
 * memory), strand part of the old memory (less), or leak the guest_memfds it does not link.
 * Handles with no guest_memfd describe no layout (a caller asking only whether the kernel
 * allows the strategy) and are not checked.
 */
function reuseLayoutProblem(shape: VmShape, handles: VmHandles): string | null {
  if (handles.guestMemfds.length === 0) return null;
  const wanted = layout(shape);
  const same =
    wanted.length === handles.guestMemfds.length &&
    wanted.every((m, j) => {
      const o = handles.guestMemfds[j];
      return (
        o !== undefined &&
        o.slot === m.slot &&
        o.gpa === m.gpa &&
        o.bytes === m.bytes &&
        o.offset === m.offset
      );
    });
  if (same) return null;
  const oldBytes = handles.guestMemfds.reduce((sum, m) => sum + m.bytes, 0);
  return `reboot with strategy reuse keeps the old guest memory: the new VM needs the old VM's memory layout (${handles.guestMemfds.length} guest_memfd(s), ${oldBytes} bytes), got ${shape.memoryBytes} bytes in one`;
}

/** Handle names of a VM's fds; the old VM of a reboot gets the `old.` prefix. */
function names(prefix: '' | 'old.') {
  return NAMES[prefix];
}

/** Handle names are built once per index and shared: plans for big VMs name many vCPUs. */
function nameSet(prefix: '' | 'old.') {
  const cache = { vcpu: [] as string[], gmem: [] as string[], map: [] as string[] };
  const named = (kind: keyof typeof cache) => (i: number) =>
    (cache[kind][i] ??= `${prefix}${kind}.${i}`);
  return { vm: `${prefix}vm`, vcpu: named('vcpu'), gmem: named('gmem'), map: named('map') };
}

const NAMES = { '': nameSet(''), 'old.': nameSet('old.') };

/** The handle of the VM a reboot or terminate starts from. */
export const OLD_VM_HANDLE = NAMES['old.'].vm;

/** What a plan's handle names: a VM fd, a vCPU fd, a guest_memfd fd or a mapping. */
export type HandleKind = 'vm' | 'vcpu' | 'gmem' | 'map';

/** The kind of a handle named by {@link nameSet} (old or new VM), or null for any other name. */
export function handleKind(name: string): HandleKind | null {
  const base = name.startsWith('old.') ? name.slice(4) : name;
  const dot = base.indexOf('.');
  const kind = dot === -1 ? base : base.slice(0, dot);
  return kind === 'vm' || kind === 'vcpu' || kind === 'gmem' || kind === 'map' ? kind : null;
}

/** The memory layout of a new VM: one guest_memfd behind slot 0 at GPA 0. */
function layout(shape: VmShape): GuestMemfdHandle[] {
  return [{ fd: -1, map: null, slot: 0, gpa: 0, bytes: shape.memoryBytes, offset: 0 }];
}

function step(name: PlanStep['name'], track: Track, calls: PlannedCall[]): PlanStep {
  return { name, track, calls };
}

/**
 * Boot steps from KVM_CREATE_VM to a running guest with its memory faulted in. `linked` is the
 * old VM's handles when the new VM takes over its guest_memfds.
 */
function bootSteps(shape: VmShape, linked: VmHandles | null): PlanStep[] {
  const n = names('');
  const old = names('old.');
  const memfds = layout(shape);
  const vcpuIndexes = Array.from({ length: shape.vcpus }, (_, i) => i);
  const initial = shape.initialRegionBytes ?? DEFAULT_INITIAL_REGION_BYTES;
  const faultIn = shape.faultInBytes ?? shape.memoryBytes;

  const steps: PlanStep[] = [
    step('create-vm', 'boot', [{ call: { op: 'KVM_CREATE_VM' }, bind: n.vm }]),
  ];
  const memorySteps: PlanStep[] = [];
  if (linked !== null) {
    // The seed's flow, steps 4 to 7: link the old inodes, drop the old files (the old VM is
    // destroyed), map the new views.
    memorySteps.push(
      step(
        'link-guest-memfd',
        'boot',
        memfds.map((_, j) => ({
          call: { op: 'KVM_LINK_GUEST_MEMFD', vm: ref(n.vm), gmem: ref(old.gmem(j)) },
          bind: n.gmem(j),
        })),
      ),
    );
    // Only the old guest_memfds the VMM had mapped have a mapping to drop.
    const mapped = linked.guestMemfds.flatMap((m, j) => (m.map === null ? [] : [j]));
    if (mapped.length > 0) {
      memorySteps.push(
        step(
          'unmap-old-guest-memfd',
          'boot',
          mapped.map((j) => ({ call: { op: 'munmap', map: ref(old.map(j)) } })),
        ),
      );
    }
    memorySteps.push(
      step(
        'close-old-guest-memfd',
        'boot',
        memfds.map((_, j) => ({ call: { op: 'close', fd: ref(old.gmem(j)) } })),
      ),
    );
  } else {
    memorySteps.push(
      step(
        'create-guest-memfd',
        'boot',
        memfds.map((m, j) => ({
          call: { op: 'KVM_CREATE_GUEST_MEMFD', vm: ref(n.vm), bytes: m.bytes },
          bind: n.gmem(j),
        })),
      ),
    );
    if (shape.preallocate === true) {
      // A linked boot needs none: the old inodes already hold the memory.
      memorySteps.push(
        step(
          'preallocate-guest-memfd',
          'boot',
          memfds.map((m, j) => ({
            call: {
              op: 'fallocate',
              fd: ref(n.gmem(j)),
              mode: FALLOC_FLAGS.FALLOC_FL_KEEP_SIZE,
              offset: 0,
              bytes: m.bytes,
            },
          })),
        ),
      );
    }
  }
  memorySteps.push(
    step(
      'map-guest-memfd',
      'boot',
      memfds.map((_, j) => ({ call: { op: 'mmap', fd: ref(n.gmem(j)) }, bind: n.map(j) })),
    ),
    step(
      'create-memslots',
      'boot',
      memfds.map((m, j) => ({
        call: {
          op: 'KVM_SET_USER_MEMORY_REGION2',
          vm: ref(n.vm),
          slot: m.slot,
          gpa: m.gpa,
          bytes: m.bytes,
          gmem: ref(n.gmem(j)),
          gmemOffset: m.offset,
        },
      })),
    ),
  );
  const tdSteps: PlanStep[] = [
    step('init-vm', 'boot', [{ call: { op: 'KVM_TDX_INIT_VM', vm: ref(n.vm) } }]),
    step(
      'create-vcpus',
      'boot',
      vcpuIndexes.map((i) => ({ call: { op: 'KVM_CREATE_VCPU', vm: ref(n.vm) }, bind: n.vcpu(i) })),
    ),
  ];
  // A fresh boot initialises the TD before its memory (the usual VMM order); a reuse boot
  // first takes over the old memory, then initialises the TD on it.
  steps.push(...(linked !== null ? [...memorySteps, ...tdSteps] : [...tdSteps, ...memorySteps]));
  steps.push(
    step(
      'init-vcpus',
      'boot',
      vcpuIndexes.map((i) => ({ call: { op: 'KVM_TDX_INIT_VCPU', vcpu: ref(n.vcpu(i)) } })),
    ),
    step('init-mem-region', 'boot', [
      { call: { op: 'KVM_TDX_INIT_MEM_REGION', vcpu: ref(n.vcpu(0)), gpa: 0, bytes: initial } },
    ]),
    step('finalize', 'boot', [{ call: { op: 'KVM_TDX_FINALIZE_VM', vm: ref(n.vm) } }]),
    step(
      'run',
      'boot',
      vcpuIndexes.map((i) =>
        i === 0 && faultIn > initial
          ? {
              call: {
                op: 'KVM_RUN',
                vcpu: ref(n.vcpu(i)),
                faultIn: { gpa: initial, bytes: faultIn - initial },
              },
            }
          : { call: { op: 'KVM_RUN', vcpu: ref(n.vcpu(i)) } },
      ),
    ),
  );
  return steps;
}

/** Bindings of a running VM's fds under the `old.` names. */
function oldBindings(handles: VmHandles): Bindings {
  const old = names('old.');
  const bindings: Bindings = { [old.vm]: handles.vm };
  handles.vcpus.forEach((fd, i) => (bindings[old.vcpu(i)] = fd));
  handles.guestMemfds.forEach((m, j) => {
    bindings[old.gmem(j)] = m.fd;
    if (m.map !== null) bindings[old.map(j)] = m.map;
  });
  return bindings;
}

function stopVcpus(handles: VmHandles): PlanStep {
  const old = names('old.');
  return step(
    'stop-vcpus',
    'teardown',
    handles.vcpus.map((_, i) => ({ call: { op: 'vcpu_exit', vcpu: ref(old.vcpu(i)) } })),
  );
}

function terminateStep(): PlanStep {
  return step('terminate-vm', 'teardown', [
    { call: { op: 'KVM_TDX_TERMINATE_VM', vm: ref('old.vm') } },
  ]);
}

/** Closing every fd of the running VM, vCPUs first, VM fd last; `withMemory` includes the guest_memfds. */
function closeSteps(handles: VmHandles, withMemory: boolean): PlanStep[] {
  const old = names('old.');
  const steps = [
    step(
      'close-vcpus',
      'teardown',
      handles.vcpus.map((_, i) => ({ call: { op: 'close', fd: ref(old.vcpu(i)) } })),
    ),
  ];
  if (withMemory) {
    const mapped = handles.guestMemfds.flatMap((m, j) => (m.map === null ? [] : [j]));
    if (mapped.length > 0) {
      steps.push(
        step(
          'unmap-old-guest-memfd',
          'teardown',
          mapped.map((j) => ({ call: { op: 'munmap', map: ref(old.map(j)) } })),
        ),
      );
    }
    steps.push(
      step(
        'close-guest-memfd',
        'teardown',
        handles.guestMemfds.map((_, j) => ({ call: { op: 'close', fd: ref(old.gmem(j)) } })),
      ),
    );
  }
  steps.push(step('close-vm', 'teardown', [{ call: { op: 'close', fd: ref(old.vm) } }]));
  return steps;
}

/** The plan that boots a new VM of `shape`. */
export function planBoot(shape: VmShape): Plan {
  const key = cacheKey('boot', shape, null);
  return {
    intent: { action: 'boot' },
    steps: sharedSteps(key, () => bootSteps(shape, null)),
    handoff: null,
    initialBindings: {},
  };
}

/** Each kernel's part of a plan cache key, once per kernel object (a host keeps its own). */
const kernelKeys = new WeakMap<KernelFeatures, string>();

function kernelKey(kernel: KernelFeatures): string {
  let key = kernelKeys.get(kernel);
  if (key === undefined) {
    key = kernelSwitchesText(kernel);
    kernelKeys.set(kernel, key);
  }
  return key;
}

/**
 * A reboot plan. `cold`: the old VM's fds are closed while it is still RUNNABLE (every page by
 * Dynamic Page Removal) as the new VM boots beside it, needing its own HKID and memory.
 * `terminate`: `KVM_TDX_TERMINATE_VM` first, then the same. `reuse`: the seed's eight steps;
 * the new VM boots on the old guest_memfd inodes and no guest page goes back to the host.
 */
export function planReboot(
  strategy: RebootStrategy,
  kernel: KernelFeatures,
  shape: VmShape,
  handles: VmHandles,
): Plan {
  const intent: Intent = { action: 'reboot', strategy };
  const initialBindings = oldBindings(handles);
  const deletesMemslots = strategy === 'reuse' && kernel.terminateVm === 'aug2025';
  // Keyed by every kernel switch, not only those the steps read today: a switch added later
  // cannot share steps built for another kernel.
  const key = cacheKey(`reboot ${strategy} ${kernelKey(kernel)}`, shape, handles);
  switch (strategy) {
    case 'cold':
      return {
        intent,
        steps: sharedSteps(key, () => [
          stopVcpus(handles),
          ...closeSteps(handles, true),
          ...bootSteps(shape, null),
        ]),
        handoff: 'stop-vcpus',
        initialBindings,
      };
    case 'terminate':
      return {
        intent,
        steps: sharedSteps(key, () => [
          stopVcpus(handles),
          terminateStep(),
          ...closeSteps(handles, true),
          ...bootSteps(shape, null),
        ]),
        handoff: 'terminate-vm',
        initialBindings,
      };
    case 'reuse':
      return {
        intent,
        steps: sharedSteps(key, () => reuseSteps(deletesMemslots, shape, handles)),
        handoff: null,
        initialBindings,
      };
  }
}

function reuseSteps(deletesMemslots: boolean, shape: VmShape, handles: VmHandles): PlanStep[] {
  const teardown = [stopVcpus(handles), terminateStep()];
  if (deletesMemslots) {
    // The August 2025 semantics allow memslot deletion on the dead VM: the old mappings are
    // reclaimed here, at the TEARDOWN rate, before the new VM exists.
    teardown.push(
      step(
        'delete-memslots',
        'teardown',
        handles.guestMemfds.map((m) => ({
          call: {
            op: 'KVM_SET_USER_MEMORY_REGION2',
            vm: ref('old.vm'),
            slot: m.slot,
            gpa: m.gpa,
            bytes: 0,
          },
        })),
      ),
    );
  }
  return [...teardown, ...closeSteps(handles, false), ...bootSteps(shape, handles)];
}

/** A plan that shuts the VM down for good: `close` (mainline) or `terminate` first. */
export function planTerminate(strategy: TerminateStrategy, handles: VmHandles): Plan {
  const key = cacheKey(`terminate ${strategy}`, null, handles);
  return {
    intent: { action: 'terminate', strategy },
    steps: sharedSteps(key, () =>
      strategy === 'close'
        ? [stopVcpus(handles), ...closeSteps(handles, true)]
        : [stopVcpus(handles), terminateStep(), ...closeSteps(handles, true)],
    ),
    handoff: null,
    initialBindings: oldBindings(handles),
  };
}

/**
 * Steps already built, by everything they are built from: a worker plans the same few shapes
 * and strategies over and over. Each plan gets its own steps and lists of calls; the calls
 * themselves, which nothing changes once planned, are shared (frozen, so that a change would
 * fail loudly).
 */
const builtSteps = new Map<string, readonly PlanStep[]>();
/** Far more than the shapes a fleet runs at once; past it the cache starts over. */
const BUILT_STEPS_LIMIT = 1000;

function sharedSteps(key: string | null, build: () => PlanStep[]): PlanStep[] {
  if (key === null) return build();
  let steps = builtSteps.get(key);
  if (steps === undefined) {
    if (builtSteps.size >= BUILT_STEPS_LIMIT) builtSteps.clear();
    steps = build();
    for (const { calls } of steps) calls.forEach(freezeCall);
    builtSteps.set(key, steps);
  }
  return steps.map(({ name, track, calls }) => step(name, track, [...calls]));
}

/**
 * The key of the steps of `kind` for a VM of `shape` and the running VM's `handles`: every
 * number the steps are built from (of the handles, their count and layout, not their fds).
 * Null, not to be cached, unless they are all whole numbers (a key holds their decimal forms).
 */
function cacheKey(kind: string, shape: VmShape | null, handles: VmHandles | null): string | null {
  const numbers: number[] = [];
  if (shape !== null) {
    const initial = shape.initialRegionBytes ?? DEFAULT_INITIAL_REGION_BYTES;
    numbers.push(
      shape.vcpus,
      shape.memoryBytes,
      initial,
      shape.faultInBytes ?? shape.memoryBytes,
      shape.preallocate === true ? 1 : 0,
    );
  }
  if (handles !== null) {
    numbers.push(handles.vcpus.length, handles.guestMemfds.length);
    for (const m of handles.guestMemfds) numbers.push(m.slot, m.gpa, m.map === null ? 0 : 1);
  }
  if (!numbers.every((n) => Number.isSafeInteger(n))) return null;
  return `${kind}: ${numbers.join(' ')}`;
}

/** Freezes a planned call, its call and the call's arguments (handles, the fault-in range). */
function freezeCall(planned: PlannedCall): void {
  for (const value of Object.values(planned.call)) {
    if (typeof value === 'object' && value !== null) Object.freeze(value);
  }
  Object.freeze(planned.call);
  Object.freeze(planned);
}

/** The running VM's handles once a boot or reboot plan has completed. */
export function handlesAfter(shape: VmShape, bindings: Bindings): VmHandles {
  const n = names('');
  const get = (name: string): number => {
    const value = bindings[name];
    if (value === undefined) throw new Error(`plan finished without binding ${name}`);
    return value;
  };
  return {
    vm: get(n.vm),
    vcpus: Array.from({ length: shape.vcpus }, (_, i) => get(n.vcpu(i))),
    guestMemfds: layout(shape).map((m, j) => ({
      ...m,
      fd: get(n.gmem(j)),
      map: bindings[n.map(j)] ?? null,
    })),
  };
}

/** GiB to bytes, for shapes given in GiB. */
export function shapeOfGiB(vcpus: number, memoryGiB: number): VmShape {
  return { vcpus, memoryBytes: Math.round(memoryGiB * GIB_BYTES) };
}
