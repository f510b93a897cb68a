import type { CostModelName } from './config.js';
import type { PrivatePageSize } from './kernel-switches.js';
import { PAGES_PER_2M, PAGES_PER_GIB } from './units.js';

/**
 * The parameters of the virtual-time cost model (domain section 5). The first group is fitted
 * to the seed's reclaim table; the rest has no public figure and is a documented modelling
 * choice that experiments may change.
 */
export interface CostParams {
  /** TEARDOWN reclaim (`TDH.PHYMEM.PAGE.RECLAIM` + clear), seconds per GiB: fitted, 1.19. */
  teardownReclaimSecondsPerGiB: number;
  /** HKID release: cache write-back per package (`TDH.PHYMEM.CACHE.WB`), seconds: fitted with the flushes to 2.6 s on 2 packages. */
  cacheWritebackSecondsPerPackage: number;
  /** HKID release: flushing one vCPU (IPI + `TDH.VP.FLUSH`), seconds. */
  vcpuFlushSeconds: number;
  /** Dynamic Page Removal, calibrated form `G * (a + b * V * G)`: a, seconds per GiB. */
  calibratedRemovalBaseSecondsPerGiB: number;
  /** Dynamic Page Removal, calibrated form: b, seconds per GiB per vCPU per GiB. */
  calibratedRemovalVcpuGiBFactor: number;
  /** Dynamic Page Removal, mechanistic form `G * (a + c * V^2)`: a, seconds per GiB. */
  mechanisticRemovalBaseSecondsPerGiB: number;
  /** Dynamic Page Removal, mechanistic form: c, seconds per GiB per vCPU squared. */
  mechanisticRemovalVcpuSquaredFactor: number;
  /** `KVM_CREATE_VM`, seconds (model). */
  createVmSeconds: number;
  /** `KVM_TDX_INIT_VM`: TDR/TDCS creation plus key configuration, seconds per package (model). */
  tdInitSecondsPerPackage: number;
  /** `KVM_CREATE_VCPU` + `KVM_TDX_INIT_VCPU`, seconds per vCPU, split evenly (model). */
  vcpuSetupSeconds: number;
  /** `KVM_TDX_INIT_MEM_REGION`: page add + measurement, seconds per GiB (model). */
  pageAddSecondsPerGiB: number;
  /** Private fault: `TDH.MEM.PAGE.AUG` + guest accept, seconds per GiB (model). */
  pageAugAcceptSecondsPerGiB: number;
  /** Fresh host memory for a guest_memfd: allocation and zeroing, seconds per GiB: what reuse saves (model). */
  allocateZeroSecondsPerGiB: number;
  /** Returning pages of a dead guest_memfd inode to the host, seconds per GiB (model). */
  freeSecondsPerGiB: number;
  /** `KVM_TDX_FINALIZE_VM`, seconds (model). */
  finalizeSeconds: number;
  /** Any other cheap call (memslot create, mmap, close of a small fd), seconds (model). */
  smallCallSeconds: number;
  /** With 2 MiB leaves: the share of per-page reclaim work that is byte work and does not shrink (model). */
  hugePageByteWorkFraction: number;
  /** TDCS pages of a TD (the TDR is one more). */
  tdcsPages: number;
  /** Control pages (TDVPR + TDCX) per vCPU. */
  vcpuControlPages: number;
}

/** Defaults: the fitted figures from the seed's table and modest guesses for the rest. */
export const DEFAULT_COST_PARAMS: CostParams = {
  teardownReclaimSecondsPerGiB: 1.19,
  cacheWritebackSecondsPerPackage: 1.3,
  vcpuFlushSeconds: 0.0002,
  calibratedRemovalBaseSecondsPerGiB: 3.746,
  calibratedRemovalVcpuGiBFactor: 0.000393,
  mechanisticRemovalBaseSecondsPerGiB: 3.219,
  mechanisticRemovalVcpuSquaredFactor: 0.002536,
  createVmSeconds: 0.001,
  tdInitSecondsPerPackage: 0.02,
  vcpuSetupSeconds: 0.004,
  pageAddSecondsPerGiB: 5,
  pageAugAcceptSecondsPerGiB: 0.4,
  allocateZeroSecondsPerGiB: 0.25,
  freeSecondsPerGiB: 0.02,
  finalizeSeconds: 0.01,
  smallCallSeconds: 0.0001,
  hugePageByteWorkFraction: 0.1,
  tdcsPages: 6,
  vcpuControlPages: 6,
};

/** What the cost of a per-page operation depends on, besides the page count. */
export interface CostContext {
  model: CostModelName;
  params: CostParams;
  pageSize: PrivatePageSize;
}

/**
 * The factor by which 2 MiB leaves shrink a per-page cost: call counts drop 512x, byte work
 * does not (model).
 */
export function leafFactor(ctx: CostContext): number {
  if (ctx.pageSize === '4K') return 1;
  const byteWork = ctx.params.hugePageByteWorkFraction;
  return byteWork + (1 - byteWork) / PAGES_PER_2M;
}

/** Seconds to reclaim `pages` 4 KiB pages of a TD in TEARDOWN. */
export function teardownReclaimSeconds(ctx: CostContext, pages: number): number {
  return (pages / PAGES_PER_GIB) * ctx.params.teardownReclaimSecondsPerGiB * leafFactor(ctx);
}

/**
 * Seconds of Dynamic Page Removal (block, track, kick every vCPU, remove, flush) for `pages`
 * pages of a RUNNABLE TD with `vcpus` vCPUs and `vmPrivateGiB` GiB of mapped private memory.
 */
export function dynamicRemovalSeconds(
  ctx: CostContext,
  pages: number,
  vcpus: number,
  vmPrivateGiB: number,
): number {
  const p = ctx.params;
  const perGiB =
    ctx.model === 'calibrated'
      ? p.calibratedRemovalBaseSecondsPerGiB +
        p.calibratedRemovalVcpuGiBFactor * vcpus * vmPrivateGiB
      : p.mechanisticRemovalBaseSecondsPerGiB +
        p.mechanisticRemovalVcpuSquaredFactor * vcpus * vcpus;
  return (pages / PAGES_PER_GIB) * perGiB * leafFactor(ctx);
}

/** Seconds to release an HKID: flush every vCPU, then write back caches on each package. */
export function hkidReleaseSeconds(params: CostParams, vcpus: number, packages: number): number {
  return params.vcpuFlushSeconds * vcpus + params.cacheWritebackSecondsPerPackage * packages;
}

/** Seconds to allocate and zero `pages` fresh pages for a guest_memfd. */
export function allocateSeconds(params: CostParams, pages: number): number {
  return (pages / PAGES_PER_GIB) * params.allocateZeroSecondsPerGiB;
}

/** Seconds to AUG and accept `pages` private pages on fault. */
export function augAcceptSeconds(ctx: CostContext, pages: number): number {
  return (pages / PAGES_PER_GIB) * ctx.params.pageAugAcceptSecondsPerGiB * leafFactor(ctx);
}

/** Seconds to add and measure `pages` initial pages. */
export function pageAddSeconds(params: CostParams, pages: number): number {
  return (pages / PAGES_PER_GIB) * params.pageAddSecondsPerGiB;
}

/** Seconds to return `pages` pages of a dead inode to the host. */
export function freeSeconds(params: CostParams, pages: number): number {
  return (pages / PAGES_PER_GIB) * params.freeSecondsPerGiB;
}

/**
 * The closed forms of the seed's table (no simulation): reclaim seconds by Dynamic Page Removal
 * (`before`) and after `KVM_TDX_TERMINATE_VM` (`after`) for a VM of `vcpus` vCPUs and `gib`
 * GiB on `packages` packages. Used to document the fit; the `sim` command runs plans instead.
 */
export function closedFormReclaimSeconds(
  model: CostModelName,
  params: CostParams,
  vcpus: number,
  gib: number,
  packages = 2,
): { before: number; after: number } {
  const ctx: CostContext = { model, params, pageSize: '4K' };
  const pages = gib * PAGES_PER_GIB;
  return {
    before: dynamicRemovalSeconds(ctx, pages, vcpus, gib),
    after: hkidReleaseSeconds(params, vcpus, packages) + teardownReclaimSeconds(ctx, pages),
  };
}
