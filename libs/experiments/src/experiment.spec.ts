import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { builtinScenario } from './builtins.js';
import { runExperiment } from './experiment.js';
import type { MeasuredOperation } from './measure.js';
import { simulateRun } from './run-offline.js';
import { type Scenario, parseScenario } from './scenario.js';
import { BASE_VARIANT, variantsOf } from './sweep.js';

const PROVENANCE = { scenario: 'test', scenarioHash: 'h', version: '0.0.0', gitRevision: null };

function scenario(overrides: Record<string, unknown> = {}): Scenario {
  return parseScenario({
    name: 'test',
    fleet: {
      hosts: [
        {
          name: 'h',
          count: 3,
          memoryGiB: 512,
          hkids: 8,
          kernel: { terminateVm: 'v4', linkGuestMemfd: true },
        },
      ],
      vms: [
        {
          name: 'vm',
          perHost: 3,
          sizes: [
            { vcpus: 4, memoryGiB: 18, weight: 2 },
            { vcpus: 32, memoryGiB: 107, weight: 1 },
          ],
        },
      ],
    },
    phases: [{ name: 'storm', kind: 'storm', strategy: 'reuse' }],
    sampleEverySeconds: 5,
    ...overrides,
  });
}

/** The most operations in flight at once, over all operations or per key. */
function peakOverlap(
  ops: readonly MeasuredOperation[],
  key: (op: MeasuredOperation) => string,
): number {
  const events = new Map<string, Array<[number, number]>>();
  for (const op of ops) {
    const list = events.get(key(op)) ?? [];
    // An end at t comes before a start at t: the next operation may start when one ends.
    list.push([op.requestedAt, 1], [op.finishedAt ?? Infinity, -1]);
    events.set(key(op), list);
  }
  let peak = 0;
  for (const list of events.values()) {
    list.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    let now = 0;
    for (const [, delta] of list) peak = Math.max(peak, (now += delta));
  }
  return peak;
}

describe('offline experiments', () => {
  it("seed-table reproduces the seed's six reclaim figures within 10%", () => {
    const result = runExperiment(builtinScenario('seed-table'), PROVENANCE);
    const references = result.runs[0]?.references ?? [];
    assert.equal(references.length, 6);
    for (const reference of references) {
      assert.ok(
        Math.abs(reference.relativeDifference) <= 0.1,
        `${reference.label}: ${reference.value} s against the seed's ${reference.reference} s`,
      );
    }
  });

  it('the same scenario and seed give the same result, to the byte', () => {
    const s = scenario({ sweep: { strategy: ['cold', 'reuse'] }, repeat: 2 });
    const a = JSON.stringify(runExperiment(s, PROVENANCE));
    const b = JSON.stringify(runExperiment(s, PROVENANCE));
    assert.equal(a, b);
    const other = JSON.stringify(runExperiment(s, PROVENANCE, { seed: 7 }));
    assert.notEqual(a, other, 'another seed draws other VM sizes');
  });

  it('a threshold that fails makes the result fail; abortOnFail skips the remaining runs', () => {
    const failing = scenario({
      sweep: { strategy: ['cold', 'terminate', 'reuse'] },
      thresholds: [{ metric: 'downtime.p99', max: 1 }],
    });
    const all = runExperiment(failing, PROVENANCE);
    assert.equal(all.passed, false);
    assert.equal(all.runs.length, 3);
    assert.equal(all.aborted, null);
    assert.ok(all.variants.every((v) => !v.passed));

    const aborting = scenario({
      sweep: { strategy: ['cold', 'terminate', 'reuse'] },
      thresholds: [{ metric: 'downtime.p99', max: 1, abortOnFail: true }],
    });
    const stopped = runExperiment(aborting, PROVENANCE);
    assert.equal(stopped.runs.length, 1);
    assert.deepEqual(stopped.aborted, {
      run: 'strategy=cold #0',
      threshold: 'downtime.p99 <= 1',
    });

    const passing = runExperiment(
      scenario({ thresholds: [{ metric: 'operations.failed', max: 0 }] }),
      PROVENANCE,
    );
    assert.equal(passing.passed, true);
  });

  it('a variant whose strategy a kernel refuses is skipped, with the reason', () => {
    const s = scenario({
      sweep: {
        kernel: [
          { terminateVm: 'none', linkGuestMemfd: false },
          { terminateVm: 'v4', linkGuestMemfd: true },
        ],
      },
    });
    const result = runExperiment(s, PROVENANCE);
    assert.equal(result.runs.length, 1);
    assert.equal(result.skipped.length, 1);
    assert.match(
      result.skipped[0]?.reason ?? '',
      /reboot reuse does not run on host group h's kernel/,
    );
  });

  it('memory metrics: reuse needs no headroom and leaks nothing; terminate needs some', () => {
    const [reuse, terminate] = runExperiment(
      scenario({ sweep: { strategy: ['reuse', 'terminate'] } }),
      PROVENANCE,
    ).runs;
    assert.equal(reuse?.metrics['memory.headroomBytes'], 0);
    assert.equal(reuse?.metrics['memory.free.driftBytes'], 0);
    assert.ok((terminate?.metrics['memory.headroomBytes'] ?? 0) > 0);
    assert.equal(terminate?.metrics['memory.free.driftBytes'], 0, 'the old memory comes back');
  });

  it('HKID release faults on a host group leak HKIDs, counted at the end', () => {
    const faulty = parseScenario({
      name: 'faulty',
      fleet: {
        hosts: [
          {
            name: 'h',
            count: 2,
            memoryGiB: 512,
            hkids: 8,
            kernel: { terminateVm: 'v4', linkGuestMemfd: true },
            hkidReleaseFaults: { FREEID: { everyNth: 2 } },
          },
        ],
        vms: [{ name: 'vm', perHost: 2, sizes: [{ vcpus: 4, memoryGiB: 18 }] }],
      },
      phases: [{ name: 'storm', kind: 'storm', strategy: 'terminate' }],
      thresholds: [{ metric: 'hkids.leaked.end', max: 0 }],
    });
    const run = runExperiment(faulty, PROVENANCE).runs[0];
    assert.equal(run?.metrics['hkids.leaked.end'], 2, 'every second FREEID on each host fails');
    assert.equal(run?.thresholds[0]?.passed, false);
    assert.throws(
      () =>
        parseScenario({
          ...faulty,
          fleet: {
            ...faulty.fleet,
            hosts: [{ ...faulty.fleet.hosts[0], hkidReleaseFaults: { FREEID: { everyNth: 0 } } }],
          },
        }),
      /^ScenarioError: fleet\.hosts\[0\]\.hkidReleaseFaults: /,
    );
  });

  it('breakdowns add up to each operation’s time from request to end', () => {
    const run = runExperiment(scenario({ sweep: { strategy: ['cold'] } }), PROVENANCE).runs[0];
    assert.ok(run !== undefined && run.slowest.length > 0);
    for (const op of run.slowest) {
      const b = op.breakdown;
      const sum = b.queue + b.hkidWait + b.memoryWait + b.lockWait + b.reclaim + b.work;
      assert.ok(Math.abs(sum - op.completion) < 1e-6, `${op.vmId}: ${sum} vs ${op.completion}`);
    }
  });
});

describe('phases (property)', () => {
  const phaseArbitrary = fc.oneof(
    fc.record({ kind: fc.constant('storm') }),
    fc.record({
      kind: fc.constant('rolling'),
      maxPerHost: fc.integer({ min: 1, max: 3 }),
      maxInFleet: fc.option(fc.integer({ min: 1, max: 5 }), { nil: null }),
    }),
    fc.record({
      kind: fc.constant('closed-loop'),
      concurrency: fc.integer({ min: 1, max: 6 }),
      operations: fc.integer({ min: 1, max: 20 }),
    }),
    fc.record({
      kind: fc.constant('arrivals'),
      rate: fc.oneof(
        fc.record({
          kind: fc.constant('constant'),
          perSecond: fc.double({ min: 0.01, max: 0.5, noNaN: true }),
        }),
        fc.record({
          kind: fc.constant('poisson'),
          perSecond: fc.double({ min: 0.01, max: 0.5, noNaN: true }),
        }),
        fc.record({
          kind: fc.constant('ramp'),
          fromPerSecond: fc.double({ min: 0.01, max: 0.5, noNaN: true }),
          toPerSecond: fc.double({ min: 0.01, max: 0.5, noNaN: true }),
        }),
      ),
      durationSeconds: fc.integer({ min: 1, max: 200 }),
    }),
  );

  it('every phase ends; phases do not overlap; rolling waves and closed loops keep their limits', () => {
    fc.assert(
      fc.property(
        fc.array(phaseArbitrary, { minLength: 1, maxLength: 3 }),
        fc.constantFrom('cold', 'terminate', 'reuse'),
        fc.integer({ min: 0, max: 1000 }),
        (phases, strategy, seed) => {
          const s = scenario({
            phases: phases.map((p, i) => ({ name: `p${i}`, strategy, delaySeconds: i * 3, ...p })),
          });
          const record = simulateRun(s, BASE_VARIANT, seed);
          let previousEnd = -Infinity;
          record.phases.forEach((span, i) => {
            assert.ok(span.startedAt >= previousEnd, 'a phase starts after the previous one ended');
            assert.ok(span.endedAt >= span.startedAt);
            previousEnd = span.endedAt;
            const ops = record.operations.filter((op) => op.phase === span.name);
            assert.equal(
              ops.length +
                record.refusals.filter((r) => r.phase === span.name && r.vmId !== null).length,
              span.operations,
            );
            for (const op of ops) {
              assert.ok(op.finishedAt !== null && op.finishedAt <= span.endedAt + 1e-9);
              assert.ok(op.requestedAt >= span.startedAt);
            }
            const phase = phases[i];
            if (phase?.kind === 'storm')
              assert.equal(span.operations, 9, 'a storm acts on every VM once');
            if (phase?.kind === 'rolling') {
              assert.equal(span.operations, 9, 'a wave acts on every VM once');
              assert.ok(peakOverlap(ops, (op) => op.hostId ?? '') <= phase.maxPerHost);
              if (phase.maxInFleet !== null)
                assert.ok(peakOverlap(ops, () => '') <= phase.maxInFleet);
            }
            if (phase?.kind === 'closed-loop') {
              assert.ok(span.operations <= phase.operations);
              assert.ok(peakOverlap(ops, () => '') <= phase.concurrency);
            }
          });
          assert.equal(record.phases.length, phases.length);
          assert.equal(new Set(record.operations.map((op) => op.state)).has('failed'), false);
        },
      ),
      { numRuns: 60, seed: 42 },
    );
  });

  it('variants are every combination of the swept values, the first varying slowest', () => {
    const s = scenario({ sweep: { strategy: ['cold', 'reuse'], maxPerHost: [1, 2, 3] } });
    assert.deepEqual(
      variantsOf(s).map((v) => v.name),
      [
        'strategy=cold maxPerHost=1',
        'strategy=cold maxPerHost=2',
        'strategy=cold maxPerHost=3',
        'strategy=reuse maxPerHost=1',
        'strategy=reuse maxPerHost=2',
        'strategy=reuse maxPerHost=3',
      ],
    );
  });
});
