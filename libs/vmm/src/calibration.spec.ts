/**
 * The simulated reclaim times against the seed's measured table (domain section 5,
 * seed-reclaim-table.json): a VM of each measured size is booted with all its memory faulted
 * in, then shut down by the mainline `close` plan ("before": Dynamic Page Removal while the TD
 * is RUNNABLE) and by the `terminate` plan ("after": HKID released first, TEARDOWN reclaim).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  type CostModelName,
  GIB_BYTES,
  type HostState,
  PAGE_BYTES,
  closedFormReclaimSeconds,
  createHost,
  freeSeconds,
  hkidReleaseSeconds,
  makeHostConfig,
} from '#tdx-sim';
import {
  type PlanRun,
  type TerminateStrategy,
  type VmHandles,
  type VmShape,
  handlesAfter,
  planFor,
  runPlan,
  shapeOfGiB,
} from './index.js';

/** The seed's table (KVM_TDX_TERMINATE_VM PATCH V4 commit message, June 2025). */
const SEED_ROWS = [
  { vcpus: 4, memoryGB: 18, beforeSeconds: 72, afterSeconds: 24 },
  { vcpus: 32, memoryGB: 107, beforeSeconds: 517, afterSeconds: 134 },
  { vcpus: 64, memoryGB: 400, beforeSeconds: 5539, afterSeconds: 467 },
] as const;

type SeedRow = (typeof SEED_ROWS)[number];

/** A host with room for the largest row: 512 GiB, 128 CPUs, 2 packages, TERMINATE_VM (v4). */
function host(model: CostModelName): HostState {
  return createHost(
    makeHostConfig({
      memoryGiB: 512,
      cpus: 128,
      packages: 2,
      costModel: model,
      kernel: { terminateVm: 'v4' },
    }),
  );
}

/** The memory figures are read as GiB, as the domain's fit does. */
function shapeOf(row: SeedRow): VmShape {
  return shapeOfGiB(row.vcpus, row.memoryGB);
}

function bootFull(model: CostModelName, shape: VmShape): { state: HostState; handles: VmHandles } {
  const state = host(model);
  const planned = planFor({ action: 'boot' }, state.config.kernel, shape);
  assert.ok(planned.ok);
  const run = runPlan(state, planned.plan);
  assert.ok(run.ok, run.failure?.message);
  // The boot plan faults in all of the guest's memory.
  const [vm] = Object.values(run.state.vms);
  assert.ok(vm !== undefined);
  assert.equal(vm.mappedPages, shape.memoryBytes / PAGE_BYTES);
  return { state: run.state, handles: handlesAfter(shape, run.bindings) };
}

function shutDown(
  booted: { state: HostState; handles: VmHandles },
  shape: VmShape,
  strategy: TerminateStrategy,
): PlanRun {
  const planned = planFor(
    { action: 'terminate', strategy },
    booted.state.config.kernel,
    shape,
    booted.handles,
  );
  assert.ok(planned.ok);
  const run = runPlan(booted.state, planned.plan);
  assert.ok(run.ok, run.failure?.message);
  assert.deepEqual(run.state.vms, {});
  return run;
}

/** (simulated - measured) / measured. */
function residual(simulated: number, measured: number): number {
  return (simulated - measured) / measured;
}

function percent(x: number): string {
  return `${x >= 0 ? '+' : ''}${(x * 100).toFixed(1)}%`;
}

function assertWithin(simulated: number, measured: number, tolerance: number, what: string) {
  const r = residual(simulated, measured);
  assert.ok(
    Math.abs(r) <= tolerance,
    `${what}: simulated ${simulated.toFixed(1)} s vs measured ${measured} s (${percent(r)}, allowed ${percent(tolerance)})`,
  );
}

describe('calibration against the seed table: calibrated model', () => {
  for (const row of SEED_ROWS) {
    const shape = shapeOf(row);
    const name = `${row.vcpus} vCPUs / ${row.memoryGB} GB`;
    it(`${name}: before ${row.beforeSeconds} s and after ${row.afterSeconds} s, within 10%`, (t) => {
      const booted = bootFull('calibrated', shape);
      const before = shutDown(booted, shape, 'close').summary.reclaimSeconds;
      const after = shutDown(booted, shape, 'terminate').summary.reclaimSeconds;
      t.diagnostic(
        `before ${before.toFixed(1)} s (${percent(residual(before, row.beforeSeconds))}), after ${after.toFixed(1)} s (${percent(residual(after, row.afterSeconds))})`,
      );
      assertWithin(before, row.beforeSeconds, 0.1, 'before (close)');
      assertWithin(after, row.afterSeconds, 0.1, 'after (terminate)');
      assert.ok(before > after, 'terminating first is faster');
    });
  }
});

describe('calibration against the seed table: mechanistic model', () => {
  // The mechanistic form G * (3.219 + 0.002536 * V^2) cannot fit the three rows well (V and G
  // grow together). The domain quotes its residuals as +18%, -20%, +2% (measured minus model,
  // over measured); the simulator's "before" comes out at about -14%, +21%, -1.5%
  // (simulated minus measured, over measured: it also charges the HKID release and the freeing
  // of the pages, which the closed form leaves out). Asserted within 25%.
  for (const row of SEED_ROWS) {
    const shape = shapeOf(row);
    const name = `${row.vcpus} vCPUs / ${row.memoryGB} GB`;
    it(`${name}: after within 10%, before within 25%`, (t) => {
      const booted = bootFull('mechanistic', shape);
      const before = shutDown(booted, shape, 'close').summary.reclaimSeconds;
      const after = shutDown(booted, shape, 'terminate').summary.reclaimSeconds;
      t.diagnostic(
        `before residual ${percent(residual(before, row.beforeSeconds))} (${before.toFixed(1)} s vs ${row.beforeSeconds} s)`,
      );
      assertWithin(after, row.afterSeconds, 0.1, 'after (terminate)');
      assertWithin(before, row.beforeSeconds, 0.25, 'before (close)');
    });
  }

  it('the "after" figures do not depend on the Dynamic Page Removal model', () => {
    for (const row of SEED_ROWS) {
      const shape = shapeOf(row);
      const calibrated = shutDown(bootFull('calibrated', shape), shape, 'terminate');
      const mechanistic = shutDown(bootFull('mechanistic', shape), shape, 'terminate');
      assert.equal(calibrated.summary.reclaimSeconds, mechanistic.summary.reclaimSeconds);
    }
  });
});

describe('the simulated runs against the closed forms of the fit', () => {
  for (const model of ['calibrated', 'mechanistic'] as const) {
    for (const row of SEED_ROWS) {
      it(`${model}, ${row.vcpus} vCPUs / ${row.memoryGB} GB: the run adds only the costs the fit leaves out`, () => {
        const shape = shapeOf(row);
        const booted = bootFull(model, shape);
        const closed = closedFormReclaimSeconds(
          model,
          booted.state.config.costParams,
          row.vcpus,
          shape.memoryBytes / GIB_BYTES,
        );
        const before = shutDown(booted, shape, 'close').summary.reclaimSeconds;
        const after = shutDown(booted, shape, 'terminate').summary.reclaimSeconds;
        // The runs add what the closed forms leave out: the freeing of the pages, the reclaim
        // of control and S-EPT pages and, for "before", the HKID release at destroy.
        const params = booted.state.config.costParams;
        const free = freeSeconds(params, shape.memoryBytes / PAGE_BYTES);
        const release = hkidReleaseSeconds(params, row.vcpus, 2);
        const metadata = 0.01 * (shape.memoryBytes / GIB_BYTES); // S-EPT is 1/512 of the pages
        assert.ok(before >= closed.before + release + free);
        assert.ok(before <= closed.before + release + free + metadata);
        assert.ok(after >= closed.after + free);
        assert.ok(after <= closed.after + free + metadata);
      });
    }
  }
});
