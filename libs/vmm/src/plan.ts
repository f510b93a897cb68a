import type { CallOutcome, KernelFeatureSwitch, SimCall } from '#tdx-sim';

/** A symbolic handle (an fd or mapping id an earlier step produced), resolved at run time. */
export interface HandleRef {
  ref: string;
}

/** A call argument: a literal number or a handle. */
export type Arg = number | HandleRef;

type WithRefs<T> = {
  [K in keyof T]: K extends 'vm' | 'vcpu' | 'fd' | 'gmem' | 'map' ? Arg : T[K];
};

/** A {@link SimCall} whose fd and mapping arguments may name handles. */
export type CallTemplate = SimCall extends infer C
  ? C extends SimCall
    ? WithRefs<C>
    : never
  : never;

/** One call of a step, and the handle its result (fd or mapping id) is bound to. */
export interface PlannedCall {
  call: CallTemplate;
  bind?: string;
}

/**
 * Which sequence a step belongs to. Steps of one track run in order; the `boot` track may run
 * beside the `teardown` track once the plan's handoff step is done (the new VM's process starts
 * while the kernel still tears the old one down).
 */
export type Track = 'teardown' | 'boot';

/** The steps a plan is made of. */
export const STEP_NAMES = [
  'create-vm',
  'init-vm',
  'create-vcpus',
  'create-guest-memfd',
  'preallocate-guest-memfd',
  'map-guest-memfd',
  'create-memslots',
  'init-vcpus',
  'init-mem-region',
  'finalize',
  'run',
  'stop-vcpus',
  'terminate-vm',
  'delete-memslots',
  'close-vcpus',
  'close-vm',
  'link-guest-memfd',
  'unmap-old-guest-memfd',
  'close-guest-memfd',
  'close-old-guest-memfd',
] as const;

/** One of {@link STEP_NAMES}. */
export type StepName = (typeof STEP_NAMES)[number];

/** One step: calls applied together, all or nothing, on one track. */
export interface PlanStep {
  name: StepName;
  track: Track;
  calls: PlannedCall[];
}

/** What the plan does. */
export type Intent =
  | { action: 'boot' }
  | { action: 'reboot'; strategy: RebootStrategy }
  | { action: 'terminate'; strategy: TerminateStrategy };

/** A kernel switch a strategy needs, and what its plan uses the switch's feature for. */
export interface StrategyNeed {
  /** The switch that provides the feature; the kernel lacks it when the switch is at mainline's. */
  switch: KernelFeatureSwitch;
  /** Said after the feature when a refusal names it, e.g. `to give the old guest_memfds to ...`. */
  purpose?: string;
}

/** What declares a strategy: what it does, and the kernel switches it needs. */
export interface StrategyDeclaration {
  /** One line on what the strategy does (the API documents each strategy with it). */
  description: string;
  /** The switches the strategy needs, in the order a refusal checks them. */
  needs: readonly StrategyNeed[];
}

/**
 * The strategies of each action that takes one, declared once: a reboot's and a terminate's.
 * The API's schemas and documents, the `sim` command's options, metric labels and test tables
 * derive from this table, and so does which kernels refuse a strategy ({@link kernelRefusal}).
 */
export const STRATEGIES = {
  /** How to reboot: mainline close-and-recreate, terminate first, or keep the guest memory. */
  reboot: {
    cold: { description: 'close everything and boot anew (mainline)', needs: [] },
    terminate: { description: 'KVM_TDX_TERMINATE_VM first', needs: [{ switch: 'terminateVm' }] },
    reuse: {
      description: 'keep the guest_memfds and boot the new VM on them (needs KVM_LINK_GUEST_MEMFD)',
      needs: [
        { switch: 'terminateVm' },
        { switch: 'linkGuestMemfd', purpose: 'to give the old guest_memfds to the new VM' },
      ],
    },
  },
  /** How to shut a VM down for good. */
  terminate: {
    close: { description: 'close every fd (mainline)', needs: [] },
    terminate: { description: 'KVM_TDX_TERMINATE_VM first', needs: [{ switch: 'terminateVm' }] },
  },
} as const satisfies Record<string, Record<string, StrategyDeclaration>>;

/** An action that takes a strategy. */
export type StrategyAction = keyof typeof STRATEGIES;
/** Every action that takes a strategy, in declaration order. */
export const STRATEGY_ACTIONS = Object.keys(STRATEGIES) as readonly StrategyAction[];
/** How to reboot: one of {@link REBOOT_STRATEGIES}. */
export type RebootStrategy = keyof typeof STRATEGIES.reboot;
/** How to shut a VM down for good: one of {@link TERMINATE_STRATEGIES}. */
export type TerminateStrategy = keyof typeof STRATEGIES.terminate;

/** Every reboot strategy, in declaration order. */
export const REBOOT_STRATEGIES = Object.keys(STRATEGIES.reboot) as readonly RebootStrategy[];
/** Every terminate strategy, in declaration order. */
export const TERMINATE_STRATEGIES = Object.keys(
  STRATEGIES.terminate,
) as readonly TerminateStrategy[];
/** Every strategy of any action, each name once, in declaration order (the reboot ones first). */
export const ALL_STRATEGIES: readonly (RebootStrategy | TerminateStrategy)[] = [
  ...new Set([...REBOOT_STRATEGIES, ...TERMINATE_STRATEGIES]),
];

/** The strategies `action` takes, in declaration order. */
export function strategiesOf(action: StrategyAction): readonly string[] {
  return action === 'reboot' ? REBOOT_STRATEGIES : TERMINATE_STRATEGIES;
}

/** The kernel switches `intent` needs, in the order a refusal checks them (none for a boot). */
export function strategyNeeds(intent: Intent): readonly StrategyNeed[] {
  switch (intent.action) {
    case 'boot':
      return [];
    case 'reboot':
      return STRATEGIES.reboot[intent.strategy].needs;
    case 'terminate':
      return STRATEGIES.terminate[intent.strategy].needs;
  }
}

/** An ordered plan: plain data, so a worker can store its position and resume it. */
export interface Plan {
  intent: Intent;
  steps: PlanStep[];
  /**
   * The teardown step after which the boot track may start (the new VM's process starts while
   * the kernel still tears the old one down); null when the boot track waits for the whole
   * teardown, or the plan has one track.
   */
  handoff: StepName | null;
  /** Handles the plan starts from (the running VM's fds for a reboot or terminate). */
  initialBindings: Bindings;
}

/** Handle name to fd or mapping id. */
export type Bindings = Record<string, number>;

/** Thrown when a step names a handle no earlier step bound: a bug in a plan, never user input. */
export class UnboundHandleError extends Error {
  constructor(readonly handle: string) {
    super(`plan refers to handle ${handle} before any step bound it`);
    this.name = 'UnboundHandleError';
  }
}

/** Bound handles as a plan run keeps them: a record (plain data) or a map (faster lookups). */
export type HandleTable = Bindings | ReadonlyMap<string, number>;

function isMap(table: HandleTable): table is ReadonlyMap<string, number> {
  return table instanceof Map;
}

function resolveArg(arg: Arg, bindings: HandleTable, initial: Bindings): number {
  if (typeof arg === 'number') return arg;
  const value = (isMap(bindings) ? bindings.get(arg.ref) : bindings[arg.ref]) ?? initial[arg.ref];
  if (value === undefined) throw new UnboundHandleError(arg.ref);
  return value;
}

const NO_BINDINGS: Bindings = Object.freeze({});

/**
 * The concrete calls of a step, with its handles replaced by the bound numbers: those in
 * `bindings`, else in `initial` (a plan's initial bindings, which a run reads but never copies).
 */
export function resolveStep(
  step: PlanStep,
  bindings: HandleTable,
  initial: Bindings = NO_BINDINGS,
): SimCall[] {
  return step.calls.map(({ call }) => {
    const resolved: Record<string, unknown> = {};
    for (const key in call) {
      const value = (call as Record<string, unknown>)[key];
      resolved[key] =
        typeof value === 'object' && value !== null && 'ref' in value
          ? resolveArg(value as HandleRef, bindings, initial)
          : value;
    }
    return resolved as SimCall;
  });
}

/**
 * Records what a successful step bound: each `bind` gets the fd or mapping id its call returned.
 * Adds to `bindings` in place (a runner owns its bindings) and returns it.
 */
export function bindResults<T extends Bindings | Map<string, number>>(
  step: PlanStep,
  outcomes: readonly CallOutcome[],
  bindings: T,
): T {
  step.calls.forEach((planned, index) => {
    const outcome = outcomes[index];
    if (planned.bind === undefined || outcome?.ok !== true) return;
    const value = outcome.value.fd ?? outcome.value.map;
    if (value === undefined) return;
    if (bindings instanceof Map) bindings.set(planned.bind, value);
    else bindings[planned.bind] = value;
  });
  return bindings;
}

/** Shorthand for a handle argument. */
export function ref(name: string): HandleRef {
  return { ref: name };
}
