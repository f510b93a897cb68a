/**
 * The kernel switches of a simulated host, each declared once: its values, mainline's value,
 * the kernel feature it provides (absent on mainline; null when an operation cannot need it),
 * the word a short label uses for it (null: the value alone), whether a label shows it when it
 * is at mainline's value, and a one-line description.
 * Everything that lists switches or their values (the host's validation, the API's schemas, the
 * `sim` command's options, plan cache keys, test tables) derives from this table, so a new
 * switch is a change here and in what it simulates.
 */
export const KERNEL_SWITCHES = {
  /** How `KVM_TDX_TERMINATE_VM` behaves, if the kernel has it (domain section 7); `none`: not. */
  terminateVm: {
    values: ['none', 'v4', 'aug2025'],
    mainline: 'none',
    feature: 'KVM_TDX_TERMINATE_VM',
    label: 'terminate',
    labelAtMainline: true,
    description:
      'KVM_TDX_TERMINATE_VM: none (mainline), the v4 series, or the August 2025 semantics',
  },
  /** Whether `KVM_LINK_GUEST_MEMFD` (RFC) exists. */
  linkGuestMemfd: {
    values: [false, true],
    mainline: false,
    feature: 'KVM_LINK_GUEST_MEMFD',
    label: 'link',
    labelAtMainline: true,
    description: 'Whether KVM_LINK_GUEST_MEMFD exists (needed by the reuse reboot)',
  },
  /** Leaf size for private mappings: `4K` is mainline; `2M` is the huge-page RFC. */
  privatePageSize: {
    values: ['4K', '2M'],
    mainline: '4K',
    feature: null,
    label: null,
    labelAtMainline: true,
    description: 'Leaf size of private mappings',
  },
  /**
   * Which `KVM_CREATE_GUEST_MEMFD` flags the kernel knows (domain section 8): `mmap`, from the
   * 6.18 cycle on, knows `GUEST_MEMFD_FLAG_MMAP` (and `GUEST_MEMFD_FLAG_INIT_SHARED`, which a TD
   * can never have); `none`, the kernels before it, refuses every flag.
   */
  guestMemfdFlags: {
    values: ['mmap', 'none'],
    mainline: 'mmap',
    feature: null,
    label: 'gmem-flags',
    labelAtMainline: false,
    description:
      'KVM_CREATE_GUEST_MEMFD flags the kernel knows: mmap (6.18 on: GUEST_MEMFD_FLAG_MMAP) or none (before 6.18)',
  },
  /**
   * Which tree the guest_memfd binding code comes from (domain section 8): `mainline` refuses a
   * guest_memfd range bound twice with `EINVAL`; `kvm-x86-2026`, the KVM x86 tree of 2026,
   * returns `EEXIST` for overlapping bindings.
   */
  guestMemfdTree: {
    values: ['mainline', 'kvm-x86-2026'],
    mainline: 'mainline',
    feature: null,
    label: 'gmem-tree',
    labelAtMainline: false,
    description:
      'Where the guest_memfd binding code comes from: mainline (an overlapping binding is EINVAL) or the KVM x86 tree of 2026 (EEXIST)',
  },
} as const;

/** The name of a kernel switch: a key of {@link KERNEL_SWITCHES}. */
export type KernelSwitchName = keyof typeof KERNEL_SWITCHES;

/** Every kernel switch, in the order {@link KERNEL_SWITCHES} declares them. */
export const KERNEL_SWITCH_NAMES = Object.keys(KERNEL_SWITCHES) as readonly KernelSwitchName[];

/** A value of the switch `K`. */
export type KernelSwitchValue<K extends KernelSwitchName> =
  (typeof KERNEL_SWITCHES)[K]['values'][number];

/** The kernel a simulated host runs: a value for each of the {@link KERNEL_SWITCHES}. */
export type KernelFeatures = { [K in KernelSwitchName]: KernelSwitchValue<K> };

/** How `KVM_TDX_TERMINATE_VM` behaves, if the kernel has it (domain section 7). */
export type TerminateVmSemantics = KernelSwitchValue<'terminateVm'>;
/** Leaf size for private mappings. */
export type PrivatePageSize = KernelSwitchValue<'privatePageSize'>;
/** Which `KVM_CREATE_GUEST_MEMFD` flags the kernel knows. */
export type GuestMemfdFlagsSupport = KernelSwitchValue<'guestMemfdFlags'>;
/** Which tree the guest_memfd binding code comes from. */
export type GuestMemfdTree = KernelSwitchValue<'guestMemfdTree'>;

/** A kernel feature an operation can need: the feature of one of the {@link KERNEL_SWITCHES}. */
export type KernelFeatureName = NonNullable<(typeof KERNEL_SWITCHES)[KernelSwitchName]['feature']>;

/** A switch that provides a kernel feature (an operation can need it). */
export type KernelFeatureSwitch = {
  [K in KernelSwitchName]: (typeof KERNEL_SWITCHES)[K]['feature'] extends null ? never : K;
}[KernelSwitchName];

/** A switch's values as plain data (the union of the declared tuples, read alike). */
function valuesOf(name: KernelSwitchName): readonly (string | boolean)[] {
  return KERNEL_SWITCHES[name].values;
}

/** Whether the switch is a flag (its values are false and true) rather than a choice. */
export function isFlagSwitch(name: KernelSwitchName): boolean {
  return typeof KERNEL_SWITCHES[name].mainline === 'boolean';
}

/** Whether `value` is one of the values of the switch `name`. */
export function isKernelSwitchValue<K extends KernelSwitchName>(
  name: K,
  value: unknown,
): value is KernelSwitchValue<K> {
  return valuesOf(name).some((allowed) => allowed === value);
}

/**
 * The mainline kernel: every switch at its mainline value (no terminate, no link, 4 KiB pages,
 * the guest_memfd flags of 6.18, mainline's binding code).
 */
export const MAINLINE_KERNEL: KernelFeatures = Object.fromEntries(
  KERNEL_SWITCH_NAMES.map((name) => [name, KERNEL_SWITCHES[name].mainline]),
) as KernelFeatures;

/**
 * Every combination of the kernel switches (3 x 2 x 2 x 2 x 2 = 48), the first switch varying slowest
 * and each switch's values in their declared order: mainline first.
 */
export const ALL_KERNELS: readonly KernelFeatures[] = KERNEL_SWITCH_NAMES.reduce<
  Record<string, string | boolean>[]
>(
  (kernels, name) =>
    kernels.flatMap((kernel) => valuesOf(name).map((value) => ({ ...kernel, [name]: value }))),
  [{}],
) as unknown as KernelFeatures[];

/** Whether the kernel has the feature of the switch `name` (its switch is not at mainline's). */
export function hasKernelFeature(kernel: KernelFeatures, name: KernelSwitchName): boolean {
  return kernel[name] !== KERNEL_SWITCHES[name].mainline;
}

/**
 * A short label of a kernel, e.g. `terminate=v4 link=on 2M` or `terminate=none link=off 4K
 * gmem-tree=kvm-x86-2026`: a switch that a label shows only off mainline is left out at it.
 */
export function kernelLabel(kernel: KernelFeatures): string {
  return KERNEL_SWITCH_NAMES.flatMap((name) => {
    const { label, labelAtMainline, mainline } = KERNEL_SWITCHES[name];
    const value = kernel[name];
    if (!labelAtMainline && value === mainline) return [];
    const shown = typeof value === 'boolean' ? (value ? 'on' : 'off') : value;
    return [label === null ? shown : `${label}=${shown}`];
  }).join(' ');
}

/**
 * Every switch of a kernel as `name=value`, e.g. `terminateVm=v4 linkGuestMemfd=true
 * privatePageSize=4K guestMemfdFlags=mmap guestMemfdTree=mainline`: distinct for distinct kernels, so it also keys what is built per kernel.
 */
export function kernelSwitchesText(kernel: KernelFeatures): string {
  return KERNEL_SWITCH_NAMES.map((name) => `${name}=${String(kernel[name])}`).join(' ');
}

/** `a, b or c`: a switch's values as a validation message lists them. */
export function kernelSwitchValuesText(name: KernelSwitchName): string {
  return orList(valuesOf(name));
}

function orList(values: readonly (string | boolean)[]): string {
  const words = values.map(String);
  const last = words.pop();
  return words.length === 0 ? (last ?? '') : `${words.join(', ')} or ${last ?? ''}`;
}

/**
 * The problem with a host's kernel (a key that is not a switch, a value a switch does not take),
 * or null. The messages name the field as `kernel.<switch>`.
 */
export function kernelProblem(kernel: Readonly<Record<string, unknown>>): string | null {
  for (const key of Object.keys(kernel)) {
    if (!(key in KERNEL_SWITCHES)) {
      return `kernel.${key} is not a kernel switch (${KERNEL_SWITCH_NAMES.join(', ')})`;
    }
  }
  for (const name of KERNEL_SWITCH_NAMES) {
    if (!isKernelSwitchValue(name, kernel[name])) {
      return isFlagSwitch(name)
        ? `kernel.${name} must be a boolean`
        : `kernel.${name} must be ${orList(valuesOf(name))}`;
    }
  }
  return null;
}
