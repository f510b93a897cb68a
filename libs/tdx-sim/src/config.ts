import { type CostParams, DEFAULT_COST_PARAMS } from './cost-model.js';
import { gibToBytes } from './units.js';

/** How `KVM_TDX_TERMINATE_VM` behaves, if the kernel has it (domain section 7). */
export type TerminateVmSemantics = 'none' | 'v4' | 'aug2025';
/** Leaf size for private mappings. */
export type PrivatePageSize = '4K' | '2M';
/** Which form of the Dynamic Page Removal cost the host uses (domain section 5). */
export type CostModelName = 'calibrated' | 'mechanistic';

/** The kernel a simulated host runs. */
export interface KernelFeatures {
  /** `none` is mainline: the sub-ioctl does not exist. */
  terminateVm: TerminateVmSemantics;
  /** Whether `KVM_LINK_GUEST_MEMFD` (RFC) exists. */
  linkGuestMemfd: boolean;
  /** `4K` is mainline; `2M` is the huge-page RFC. */
  privatePageSize: PrivatePageSize;
}

/** Everything that describes one simulated host. Plain data. */
export interface HostConfig {
  /** CPU packages (sockets); the HKID release writes back caches once per package. */
  packages: number;
  /** Logical CPUs, spread evenly over the packages. */
  cpus: number;
  /** Host memory available to guests and TDX metadata, in bytes (a multiple of 4 KiB). */
  memoryBytes: number;
  /** Usable TD key IDs (31, 47 or 63 on real platforms). */
  hkids: number;
  /** The misc cgroup `tdx` limit, or null for none. */
  hkidCgroupLimit: number | null;
  kernel: KernelFeatures;
  costModel: CostModelName;
  costParams: CostParams;
}

/** The mainline kernel: no terminate, no link, 4 KiB private pages. */
export const MAINLINE_KERNEL: KernelFeatures = {
  terminateVm: 'none',
  linkGuestMemfd: false,
  privatePageSize: '4K',
};

/** Every combination of the three kernel switches (3 x 2 x 2 = 12). */
export const ALL_KERNELS: readonly KernelFeatures[] = (['none', 'v4', 'aug2025'] as const).flatMap(
  (terminateVm) =>
    [false, true].flatMap((linkGuestMemfd) =>
      (['4K', '2M'] as const).map((privatePageSize) => ({
        terminateVm,
        linkGuestMemfd,
        privatePageSize,
      })),
    ),
);

/** A short label of a kernel, e.g. `terminate=v4 link=on 2M`. */
export function kernelLabel(kernel: KernelFeatures): string {
  return `terminate=${kernel.terminateVm} link=${kernel.linkGuestMemfd ? 'on' : 'off'} ${kernel.privatePageSize}`;
}

/** Options accepted by {@link makeHostConfig}; anything left out takes its default. */
export interface HostConfigInput {
  packages?: number;
  cpus?: number;
  memoryBytes?: number;
  memoryGiB?: number;
  hkids?: number;
  hkidCgroupLimit?: number | null;
  kernel?: Partial<KernelFeatures>;
  costModel?: CostModelName;
  costParams?: Partial<CostParams>;
}

/** Thrown by {@link makeHostConfig} for a configuration no host can have. */
export class InvalidHostConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InvalidHostConfigError';
  }
}

/**
 * A complete, validated host configuration. Defaults: 2 packages, 128 CPUs, 512 GiB,
 * 63 HKIDs, no cgroup limit, the mainline kernel, the calibrated cost model.
 */
export function makeHostConfig(input: HostConfigInput = {}): HostConfig {
  const memoryBytes = input.memoryBytes ?? gibToBytes(input.memoryGiB ?? 512);
  const config: HostConfig = {
    packages: input.packages ?? 2,
    cpus: input.cpus ?? 128,
    memoryBytes,
    hkids: input.hkids ?? 63,
    hkidCgroupLimit: input.hkidCgroupLimit ?? null,
    kernel: { ...MAINLINE_KERNEL, ...input.kernel },
    costModel: input.costModel ?? 'calibrated',
    costParams: { ...DEFAULT_COST_PARAMS, ...input.costParams },
  };
  validateHostConfig(config);
  return config;
}

function positiveInteger(value: number, name: string): void {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new InvalidHostConfigError(`${name} must be a positive integer, got ${String(value)}`);
  }
}

/** Throws {@link InvalidHostConfigError} naming the first field that is out of range. */
export function validateHostConfig(config: HostConfig): void {
  positiveInteger(config.packages, 'packages');
  positiveInteger(config.cpus, 'cpus');
  positiveInteger(config.hkids, 'hkids');
  if (config.cpus < config.packages) {
    throw new InvalidHostConfigError('cpus must be at least packages (one CPU per package)');
  }
  if (
    !Number.isSafeInteger(config.memoryBytes) ||
    config.memoryBytes <= 0 ||
    config.memoryBytes % 4096 !== 0
  ) {
    throw new InvalidHostConfigError('memoryBytes must be a positive multiple of 4096');
  }
  if (config.hkidCgroupLimit !== null) {
    if (!Number.isSafeInteger(config.hkidCgroupLimit) || config.hkidCgroupLimit < 0) {
      throw new InvalidHostConfigError('hkidCgroupLimit must be a non-negative integer or null');
    }
  }
  for (const key of Object.keys(config.kernel)) {
    if (!(key in MAINLINE_KERNEL)) {
      throw new InvalidHostConfigError(
        `kernel.${key} is not a kernel switch (terminateVm, linkGuestMemfd, privatePageSize)`,
      );
    }
  }
  if (!['none', 'v4', 'aug2025'].includes(config.kernel.terminateVm)) {
    throw new InvalidHostConfigError('kernel.terminateVm must be none, v4 or aug2025');
  }
  if (typeof config.kernel.linkGuestMemfd !== 'boolean') {
    throw new InvalidHostConfigError('kernel.linkGuestMemfd must be a boolean');
  }
  if (!['4K', '2M'].includes(config.kernel.privatePageSize)) {
    throw new InvalidHostConfigError('kernel.privatePageSize must be 4K or 2M');
  }
  if (!['calibrated', 'mechanistic'].includes(config.costModel)) {
    throw new InvalidHostConfigError('costModel must be calibrated or mechanistic');
  }
  for (const [name, value] of Object.entries(config.costParams)) {
    if (!(name in DEFAULT_COST_PARAMS)) {
      throw new InvalidHostConfigError(`costParams.${name} is not a cost parameter`);
    }
    if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
      throw new InvalidHostConfigError(`costParams.${name} must be a non-negative number`);
    }
  }
}
