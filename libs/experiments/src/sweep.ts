import { KERNEL_SWITCHES, type KernelFeatures, type KernelSwitchName, kernelLabel } from '#tdx-sim';
import { type RebootStrategy, runnableStrategies } from '#vmm';
import type { VariableValue } from './result.js';
import { SWEEP_VARIABLES, type Scenario, type SweepVariable, type VmSize } from './scenario.js';

// The variants of a scenario: every combination of its swept variables (the first variable
// varying slowest), or one variant named `base` when nothing is swept.

/** One combination of the swept variables, and what it changes. */
export interface Variant {
  name: string;
  assignment: Record<string, VariableValue>;
  /** Replaces every reboot phase's strategy. */
  strategy: RebootStrategy | null;
  /** Kernel switches set on every host group. */
  kernel: Partial<KernelFeatures>;
  /** Replaces every rolling phase's maxPerHost. */
  maxPerHost: number | null;
  /** Replaces the per-host limit (offline target). */
  hostConcurrency: number | null;
  /** Gives every VM group this one size. */
  vmSize: VmSize | null;
}

/** The variant of a scenario that sweeps nothing. */
export const BASE_VARIANT: Variant = {
  name: 'base',
  assignment: {},
  strategy: null,
  kernel: {},
  maxPerHost: null,
  hostConcurrency: null,
  vmSize: null,
};

/** How a value reads in a variant's name: `32x107GiB` for a VM size. */
function valueText(value: unknown): string {
  if (typeof value === 'object' && value !== null && 'vcpus' in value && 'memoryGiB' in value) {
    const size = value as VmSize;
    return `${size.vcpus}x${size.memoryGiB}GiB`;
  }
  if (typeof value === 'object' && value !== null) {
    // A kernel: its switches as short labels (terminate:v4,link:on,2M), one word in a name.
    // Switches a label shows only off mainline (labelAtMainline false) are left out at it.
    return Object.entries(value as Record<string, unknown>)
      .flatMap(([name, v]) => {
        if (!isKernelSwitch(name)) return [`${name}:${String(v)}`];
        const { label, labelAtMainline, mainline } = KERNEL_SWITCHES[name];
        if (!labelAtMainline && v === mainline) return [];
        const shown = typeof v === 'boolean' ? (v ? 'on' : 'off') : String(v);
        return [label === null ? shown : `${label}:${shown}`];
      })
      .join(',');
  }
  return String(value);
}

function isKernelSwitch(name: string): name is KernelSwitchName {
  return Object.hasOwn(KERNEL_SWITCHES, name);
}

/** Every variant of the scenario, in a fixed order. */
export function variantsOf(scenario: Scenario): Variant[] {
  const swept = SWEEP_VARIABLES.filter((name) => scenario.sweep[name] !== undefined);
  let variants: Variant[] = [BASE_VARIANT];
  for (const variable of swept) {
    const values = scenario.sweep[variable] as readonly unknown[];
    variants = variants.flatMap((variant) =>
      values.map((value) => assign(variant, variable, value)),
    );
  }
  return variants.map((variant) => ({
    ...variant,
    name:
      swept.length === 0
        ? 'base'
        : swept
            .map((variable) => `${variable}=${valueText(variant.assignment[variable] ?? '')}`)
            .join(' '),
  }));
}

function assign(variant: Variant, variable: SweepVariable, value: unknown): Variant {
  const next: Variant = {
    ...variant,
    assignment: { ...variant.assignment },
    kernel: { ...variant.kernel },
  };
  switch (variable) {
    case 'strategy':
      next.strategy = value as RebootStrategy;
      break;
    case 'kernel':
      next.kernel = { ...next.kernel, ...(value as Partial<KernelFeatures>) };
      break;
    case 'kernel.terminateVm':
      next.kernel.terminateVm = value as KernelFeatures['terminateVm'];
      break;
    case 'kernel.linkGuestMemfd':
      next.kernel.linkGuestMemfd = value as boolean;
      break;
    case 'kernel.privatePageSize':
      next.kernel.privatePageSize = value as KernelFeatures['privatePageSize'];
      break;
    case 'maxPerHost':
      next.maxPerHost = value as number;
      break;
    case 'hostConcurrency':
      next.hostConcurrency = value as number;
      break;
    case 'vmSize':
      next.vmSize = value as VmSize;
      break;
  }
  next.assignment[variable] =
    variable === 'vmSize' || variable === 'kernel' ? valueText(value) : (value as VariableValue);
  return next;
}

/**
 * Why a variant cannot run, or null: a phase's strategy that some host's kernel refuses (reuse
 * without KVM_LINK_GUEST_MEMFD, say). Such a variant is left out of a sweep and listed as
 * skipped, rather than run as a storm of refusals.
 */
export function variantProblem(scenario: Scenario, variant: Variant): string | null {
  for (const group of scenario.fleet.hosts) {
    const kernel: KernelFeatures = { ...group.kernel, ...variant.kernel };
    for (const phase of scenario.phases) {
      const strategy =
        phase.action === 'reboot' && variant.strategy !== null
          ? variant.strategy
          : (phase.strategy ?? (phase.action === 'reboot' ? 'cold' : 'close'));
      const runnable: readonly string[] =
        phase.action === 'reboot'
          ? runnableStrategies('reboot', kernel)
          : runnableStrategies('terminate', kernel);
      if (!runnable.includes(strategy)) {
        return `phase ${phase.name}: ${phase.action} ${strategy} does not run on host group ${group.name}'s kernel (${kernelLabel(kernel)})`;
      }
    }
  }
  return null;
}
