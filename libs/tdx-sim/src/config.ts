import { type CostParams, DEFAULT_COST_PARAMS } from './cost-model.js';
import { type KernelFeatures, MAINLINE_KERNEL, kernelProblem } from './kernel-switches.js';
import { gibToBytes } from './units.js';

/** The forms of the Dynamic Page Removal cost (domain section 5); the first is the default. */
export const COST_MODELS = ['calibrated', 'mechanistic'] as const;
/** Which form of the Dynamic Page Removal cost the host uses: one of {@link COST_MODELS}. */
export type CostModelName = (typeof COST_MODELS)[number];

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
    costModel: input.costModel ?? COST_MODELS[0],
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
  const kernelError = kernelProblem(config.kernel);
  if (kernelError !== null) throw new InvalidHostConfigError(kernelError);
  if (!(COST_MODELS as readonly string[]).includes(config.costModel)) {
    throw new InvalidHostConfigError(`costModel must be ${COST_MODELS.join(' or ')}`);
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
