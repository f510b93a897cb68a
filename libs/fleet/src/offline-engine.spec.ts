/**
 * The offline fleet engine: one virtual clock over many hosts under the daemon's rules. A single
 * reboot gives the numbers of a plan run alone; HKID waits, the HKID release lock, batches and
 * cancels behave as in the daemon; and random fleets stay sound and deterministic.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  type KernelFeatures,
  checkInvariants,
  createHost,
  gibToBytes,
  makeHostConfig,
} from '#tdx-sim';
import {
  type Intent,
  REBOOT_STRATEGIES,
  TERMINATE_STRATEGIES,
  handlesAfter,
  planFor,
  runPlan,
  shapeOfGiB,
} from '#vmm';
import type { Strategy } from './model.js';
import {
  type OfflineHostSpec,
  type OfflineInput,
  type OfflineOperation,
  type OfflineOutput,
  type OfflineRequest,
  OfflineFleet,
  runFleet,
} from './offline-engine.js';
import { ALL_KERNELS, AUG_LINK_2M, MAINLINE, V4, V4_LINK, canReboot } from './testing/driver.js';

function host(id: string, kernel: KernelFeatures, spec: Partial<OfflineHostSpec> = {}) {
  return { id, memoryGiB: 64, hkids: 8, packages: 2, cpus: 16, kernel, ...spec };
}

function near(actual: number, expected: number, what: string): void {
  assert.ok(
    Math.abs(actual - expected) <= 1e-9 * Math.max(1000, Math.abs(expected)),
    `${what}: ${actual} vs ${expected}`,
  );
}

function only(output: OfflineOutput, action: string): OfflineOperation[] {
  return output.operations.filter((op) => op.action === action);
}

/** The reboot of one VM run alone by `runPlan`, booted first the way `sim reboot` does. */
function planAlone(kernel: KernelFeatures, memoryGiB: number, vcpus: number, intent: Intent) {
  const hostMemoryGiB = Math.ceil(2 * memoryGiB + 8);
  const shape = shapeOfGiB(vcpus, memoryGiB);
  const state = createHost(
    makeHostConfig({ memoryGiB: hostMemoryGiB, hkids: 63, packages: 2, cpus: 128, kernel }),
  );
  const boot = planFor({ action: 'boot' }, kernel, shape);
  if (!boot.ok) throw new Error(boot.refusal.message);
  const booted = runPlan(state, boot.plan);
  const planned = planFor(intent, kernel, shape, handlesAfter(shape, booted.bindings));
  if (!planned.ok) throw new Error(planned.refusal.message);
  return { hostMemoryGiB, summary: runPlan(booted.state, planned.plan).summary };
}

describe('offline engine: one operation alone on its host', () => {
  const cases = [MAINLINE, V4, V4_LINK, AUG_LINK_2M].flatMap((kernel) => [
    ...REBOOT_STRATEGIES.filter((s) => canReboot(kernel, s)).map(
      (strategy): [KernelFeatures, Intent] => [kernel, { action: 'reboot', strategy }],
    ),
    ...TERMINATE_STRATEGIES.filter((s) => s === 'close' || kernel.terminateVm !== 'none').map(
      (strategy): [KernelFeatures, Intent] => [kernel, { action: 'terminate', strategy }],
    ),
  ]);
  for (const [kernel, intent] of cases) {
    const label = `${intent.action} ${intent.action === 'boot' ? '' : intent.strategy} on terminate=${kernel.terminateVm} link=${kernel.linkGuestMemfd} ${kernel.privatePageSize}`;
    it(`${label}: the summary runPlan gives`, () => {
      const { hostMemoryGiB, summary } = planAlone(kernel, 8, 4, intent);
      const output = runFleet({
        hosts: [host('h1', kernel, { memoryGiB: hostMemoryGiB, hkids: 63, cpus: 128 })],
        vms: [{ id: 'vm', vcpus: 4, memoryGiB: 8, hostId: 'h1' }],
        requests: [
          { at: 0, action: 'boot', vmId: 'vm' },
          {
            at: 1000,
            action: intent.action === 'boot' ? 'boot' : intent.action,
            vmId: 'vm',
            strategy: intent.action === 'boot' ? null : intent.strategy,
          },
        ],
      });
      const [op] = only(output, intent.action);
      assert.equal(op?.state, 'succeeded');
      const result = op.result;
      assert.ok(result);
      // Exactly, though it starts 1000 s on: the engine counts whole microseconds.
      assert.deepEqual(result, summary);
      assert.equal(op.arrivedAt, 1000);
      assert.equal(op.startedAt, 1000);
      near(op.finishedAt as number, 1000 + summary.totalSeconds, 'finishedAt');
      assert.equal(output.totals.makespan, op.finishedAt);
    });
  }
});

describe('offline engine: the HKID release lock', () => {
  it('reboots on one host queue on the lock: the first waits not, the later ones wait', () => {
    const vms = ['a', 'b', 'c', 'd'].map((id) => ({ id, vcpus: 2, memoryGiB: 2, hostId: 'h1' }));
    const output = runFleet({
      hosts: [host('h1', V4)],
      vms,
      requests: [
        ...vms.map((vm): OfflineRequest => ({ at: 0, action: 'boot', vmId: vm.id })),
        ...vms.map((vm): OfflineRequest => ({
          at: 500,
          action: 'reboot',
          vmId: vm.id,
          strategy: 'terminate',
        })),
      ],
    });
    const reboots = only(output, 'reboot');
    assert.deepEqual(
      reboots.map((op) => op.state),
      ['succeeded', 'succeeded', 'succeeded', 'succeeded'],
    );
    assert.equal(reboots[0]?.waitedSeconds, 0);
    for (const op of reboots.slice(1)) {
      assert.ok(op.waitedSeconds > 0, `${op.vmId} waited ${op.waitedSeconds}`);
      assert.ok(op.waits.some((w) => w.step === 'terminate-vm' && w.errno === null));
    }
    // Each waits for the releases before it: the waits grow.
    const waits = reboots.map((op) => op.waitedSeconds);
    assert.deepEqual(
      waits,
      [...waits].sort((a, b) => a - b),
    );
  });
});

describe('offline engine: batches', () => {
  it('a batch of maxConcurrency 2 over 20 VMs never has more than 2 in flight', () => {
    const hosts = ['h1', 'h2', 'h3', 'h4', 'h5'].map((id) => host(id, V4_LINK));
    const vms = Array.from({ length: 20 }, (_, i) => ({
      id: `vm-${String(i).padStart(2, '0')}`,
      vcpus: 2,
      memoryGiB: 2,
      hostId: `h${(i % 5) + 1}`,
    }));
    const output = runFleet({
      hosts,
      vms,
      requests: vms.map((vm): OfflineRequest => ({ at: 0, action: 'boot', vmId: vm.id })),
      batches: [
        {
          at: 100,
          selector: { all: true },
          action: 'reboot',
          strategy: 'reuse',
          maxConcurrency: 2,
        },
      ],
      sampleEverySeconds: 1,
    });
    const reboots = only(output, 'reboot');
    assert.equal(reboots.length, 20);
    assert.ok(reboots.every((op) => op.state === 'succeeded' && op.batchId === 'batch-0001'));
    const edges = reboots.flatMap((op) => [
      { at: op.arrivedAt as number, d: 1 },
      { at: op.finishedAt as number, d: -1 },
    ]);
    edges.sort((a, b) => a.at - b.at || a.d - b.d);
    let inFlight = 0;
    let peak = 0;
    for (const e of edges) peak = Math.max(peak, (inFlight += e.d));
    assert.equal(peak, 2);
    assert.equal(output.batches[0]?.peakInFlight, 2);
    assert.ok(output.series.fleet.every((s) => s.running <= 2 || s.t < 100));
    // A member is submitted when a slot frees: at the end of an earlier one.
    const ends = new Set(reboots.map((op) => op.finishedAt));
    for (const op of reboots.slice(2)) assert.ok(ends.has(op.arrivedAt), `${op.vmId}`);
  });

  it('a rate spaces submissions by the rule of submissionsAllowed', () => {
    const vms = Array.from({ length: 6 }, (_, i) => ({
      id: `vm-${i}`,
      vcpus: 1,
      memoryGiB: 1,
      hostId: 'h1',
    }));
    const output = runFleet({
      hosts: [host('h1', V4_LINK)],
      vms,
      requests: vms.map((vm): OfflineRequest => ({ at: 0, action: 'boot', vmId: vm.id })),
      batches: [
        {
          at: 100,
          selector: { hostIds: ['h1'] },
          action: 'terminate',
          strategy: 'terminate',
          maxConcurrency: 10,
          ratePerSecond: 0.5,
        },
      ],
    });
    assert.deepEqual(
      only(output, 'terminate').map((op) => op.requestedAt),
      [100, 102, 104, 106, 108, 110],
    );
  });
});

describe('offline engine: cancellation', () => {
  it('a cancel mid-teardown ends cancelled, and memory and HKIDs are conserved', () => {
    const fleet = new OfflineFleet({
      hosts: [host('h1', MAINLINE)],
      vms: [{ id: 'vm', vcpus: 4, memoryGiB: 4, hostId: 'h1' }],
      requests: [
        { at: 0, action: 'boot', vmId: 'vm' },
        { at: 100, action: 'reboot', vmId: 'vm', strategy: 'cold' },
        // Dynamic Page Removal of 4 GiB takes about 15 s: this lands in the middle of it.
        { at: 101, action: 'cancel', vmId: 'vm' },
      ],
      sampleEverySeconds: 1,
    });
    fleet.run();
    const output = fleet.output();
    const [reboot] = only(output, 'reboot');
    assert.equal(reboot?.state, 'cancelled');
    assert.equal(reboot.error?.code, 'cancelled');
    assert.ok((reboot.finishedAt as number) > 101);
    for (const doc of fleet.hostDocuments()) {
      assert.deepEqual(checkInvariants(doc.sim), []);
      assert.equal(doc.vms.vm?.state, 'stopped');
    }
    const last = output.series.fleet.at(-1);
    assert.equal(last?.hkidsInUse, 0);
    assert.equal(last.orphanedBytes, 0);
    assert.equal(last.freeBytes, gibToBytes(64));
  });

  it('a cancel of nothing, a reboot of a busy VM and a kernel without the strategy are refused', () => {
    const output = runFleet({
      hosts: [host('h1', MAINLINE)],
      vms: [{ id: 'vm', vcpus: 1, memoryGiB: 1, hostId: 'h1' }],
      requests: [
        { at: 0, action: 'cancel', vmId: 'vm' },
        { at: 0, action: 'boot', vmId: 'vm' },
        { at: 0, action: 'reboot', vmId: 'vm', strategy: 'cold' },
        { at: 100, action: 'reboot', vmId: 'vm', strategy: 'reuse' },
        { at: 100, action: 'boot', vmId: 'ghost' },
      ],
    });
    assert.deepEqual(
      output.refusals.map((r) => [r.at, r.action, r.code]),
      [
        [0, 'cancel', 'job_finished'],
        [0, 'reboot', 'vm_busy'],
        [100, 'reboot', 'kernel_feature_missing'],
        [100, 'boot', 'not_found'],
      ],
    );
  });
});

describe('offline engine: global concurrency and placement', () => {
  it('admits operations fleet-wide in FIFO order, at most N in flight', () => {
    const hosts = ['h1', 'h2', 'h3'].map((id) => host(id, V4_LINK));
    const vms = Array.from({ length: 9 }, (_, i) => ({ id: `vm-${i}`, vcpus: 1, memoryGiB: 1 }));
    const output = runFleet({
      hosts,
      vms,
      requests: vms.map((vm): OfflineRequest => ({ at: 0, action: 'boot', vmId: vm.id })),
      limits: { globalConcurrency: 2 },
    });
    const boots = only(output, 'boot');
    assert.ok(boots.every((op) => op.state === 'succeeded'));
    // Placement spreads by free memory, ties to the lower host id.
    assert.deepEqual(
      boots.slice(0, 3).map((op) => op.hostId),
      ['h1', 'h2', 'h3'],
    );
    const arrivals = boots.map((op) => op.arrivedAt as number);
    assert.deepEqual(
      arrivals,
      [...arrivals].sort((a, b) => a - b),
    );
    for (const op of boots) {
      const overlapping = boots.filter(
        (o) =>
          (o.arrivedAt as number) <= (op.arrivedAt as number) &&
          (o.finishedAt as number) > (op.arrivedAt as number),
      );
      assert.ok(overlapping.length <= 2);
    }
  });
});

const KERNELS = fc.constantFrom(...ALL_KERNELS);
const STRATEGIES: Record<'reboot' | 'terminate', readonly Strategy[]> = {
  reboot: REBOOT_STRATEGIES,
  terminate: TERMINATE_STRATEGIES,
};

const scenario: fc.Arbitrary<OfflineInput> = fc
  .record({
    kernels: fc.array(KERNELS, { minLength: 1, maxLength: 3 }),
    vms: fc.array(
      fc.record({
        vcpus: fc.integer({ min: 1, max: 4 }),
        memoryGiB: fc.constantFrom(0.5, 1, 2, 6),
        placed: fc.boolean(),
        host: fc.nat(),
      }),
      { minLength: 1, maxLength: 6 },
    ),
    requests: fc.array(
      fc.record({
        at: fc.integer({ min: 0, max: 120 }),
        action: fc.constantFrom('boot', 'reboot', 'terminate', 'cancel' as const),
        vm: fc.nat(),
        strategy: fc.nat(),
      }),
      { maxLength: 25 },
    ),
    batch: fc.option(
      fc.record({
        at: fc.integer({ min: 0, max: 120 }),
        maxConcurrency: fc.integer({ min: 1, max: 3 }),
        rate: fc.option(fc.constantFrom(0.1, 1, 5)),
      }),
    ),
    hostConcurrency: fc.integer({ min: 1, max: 4 }),
    globalConcurrency: fc.option(fc.integer({ min: 1, max: 4 })),
  })
  .map(({ kernels, vms, requests, batch, hostConcurrency, globalConcurrency }) => {
    const hosts = kernels.map((kernel, i) =>
      host(`h${i}`, kernel, { memoryGiB: 16, hkids: 4, cpus: 8 }),
    );
    return {
      hosts,
      vms: vms.map((vm, i) => ({
        id: `vm${i}`,
        vcpus: vm.vcpus,
        memoryGiB: vm.memoryGiB,
        hostId: vm.placed ? `h${vm.host % hosts.length}` : null,
      })),
      requests: [
        ...vms.map((_, i): OfflineRequest => ({ at: 0, action: 'boot', vmId: `vm${i}` })),
        ...requests.map((r): OfflineRequest => {
          const vmId = `vm${r.vm % vms.length}`;
          if (r.action === 'boot' || r.action === 'cancel')
            return { at: r.at, action: r.action, vmId };
          const strategies = STRATEGIES[r.action];
          return {
            at: r.at,
            action: r.action,
            vmId,
            strategy: strategies[r.strategy % strategies.length] ?? null,
          };
        }),
      ],
      batches:
        batch === null
          ? []
          : [
              {
                at: batch.at,
                selector: { all: true },
                action: 'reboot' as const,
                strategy: 'cold' as const,
                maxConcurrency: batch.maxConcurrency,
                ratePerSecond: batch.rate,
              },
            ],
      limits: { hostConcurrency, globalConcurrency, maxWaitSeconds: 3600 },
      sampleEverySeconds: 10,
      hostSeries: true,
    };
  });

describe('offline engine: random fleets', () => {
  it('conserve memory and HKIDs on every host and give the same output twice', () => {
    fc.assert(
      fc.property(scenario, (input) => {
        const fleet = new OfflineFleet(input);
        fleet.run();
        const first = JSON.stringify(fleet.output());
        for (const doc of fleet.hostDocuments()) {
          assert.deepEqual(checkInvariants(doc.sim), [], doc.id);
          assert.deepEqual(Object.keys(doc.ops), [], `${doc.id} has operations left`);
        }
        const again = JSON.stringify(runFleet(input));
        assert.equal(again, first);
      }),
      { numRuns: 150 },
    );
  });

  it('a bigger fleet gives byte-identical output twice', () => {
    const hosts = ALL_KERNELS.map((kernel, i) =>
      host(`h${String(i).padStart(2, '0')}`, kernel, { memoryGiB: 256, hkids: 16, cpus: 64 }),
    );
    const vms = Array.from({ length: 96 }, (_, i) => ({
      id: `vm-${String(i).padStart(3, '0')}`,
      vcpus: 1 + (i % 8),
      memoryGiB: 1 + (i % 5) * 4,
    }));
    const input: OfflineInput = {
      hosts,
      vms,
      requests: [
        ...vms.map((vm, i): OfflineRequest => ({ at: i % 7, action: 'boot', vmId: vm.id })),
        ...vms.map((vm, i): OfflineRequest => ({
          at: 400 + (i % 3),
          action: 'reboot',
          vmId: vm.id,
          strategy: 'cold',
        })),
        { at: 401, action: 'cancel', vmId: 'vm-005' },
      ],
      batches: [
        {
          at: 3000,
          selector: { all: true },
          action: 'terminate',
          strategy: 'close',
          maxConcurrency: 10,
          ratePerSecond: 2,
        },
      ],
      limits: { globalConcurrency: 40 },
      sampleEverySeconds: 30,
    };
    const a = JSON.stringify(runFleet(input));
    const b = JSON.stringify(runFleet(input));
    assert.equal(a, b);
    const output = JSON.parse(a) as OfflineOutput;
    assert.equal(output.totals.byState.succeeded + output.totals.byState.cancelled, 96 * 3);
  });
});
