import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  ALL_KERNELS,
  type HostState,
  checkInvariants,
  createHost,
  kernelLabel,
  makeHostConfig,
} from '#tdx-sim';
import {
  type EngineHost,
  type OperationRun,
  advance,
  advanceInPlace,
  startRun,
  summarize,
  toMicros,
} from './engine.js';
import type { Plan, RebootStrategy } from './plan.js';
import { handlesAfter, planBoot, planFor, shapeOfGiB } from './plans.js';
import { runPlan } from './runner.js';

const SHAPE = shapeOfGiB(4, 2);

function hostWith(kernel = ALL_KERNELS[ALL_KERNELS.length - 1], hkids = 8): HostState {
  return createHost(makeHostConfig({ memoryGiB: 32, hkids, kernel: kernel ?? {} }));
}

/** A host with the VM booted, and the plan of its reboot with `strategy`. */
function rebootOf(strategy: RebootStrategy, host: HostState): { host: HostState; plan: Plan } {
  const booted = runPlan(host, planBoot(SHAPE));
  assert.ok(booted.ok);
  const planned = planFor(
    { action: 'reboot', strategy },
    host.config.kernel,
    SHAPE,
    handlesAfter(SHAPE, booted.bindings),
  );
  assert.ok(planned.ok);
  return { host: booted.state, plan: planned.plan };
}

/** Advances a run from `start` until it ends; the due times it went through. */
function runToEnd(run: OperationRun, host: EngineHost, start: number): number[] {
  const times: number[] = [];
  let at = start;
  for (let i = 0; i < 10_000; i += 1) {
    times.push(at);
    const { status } = advanceInPlace(run, host, at, { whenStuck: 'fail', onFailure: 'stop' });
    if (status.kind !== 'due') return times;
    at = status.at;
  }
  throw new Error('the run does not end');
}

describe('operation engine', () => {
  for (const kernel of ALL_KERNELS.filter((k) => k.terminateVm !== 'none' && k.linkGuestMemfd)) {
    for (const strategy of ['cold', 'terminate', 'reuse'] as const) {
      it(`${strategy} on ${kernelLabel(kernel)}: the same figures whatever time it starts at`, () => {
        const { host, plan } = rebootOf(strategy, hostWith(kernel));
        const expected = runPlan(host, plan).summary;
        // Far from 0, where seconds as floats would no longer add up exactly.
        for (const start of [0, toMicros(1007.3), toMicros(86_400 * 365.25 * 3)]) {
          const run = startRun(plan, start);
          const engineHost: EngineHost = { sim: host, releases: [], hkidLockFreeAt: 0 };
          runToEnd(run, { ...engineHost, sim: structuredClone(host) }, start);
          assert.deepEqual(summarize(run), expected, `started at ${start} µs`);
        }
      });
    }
  }

  it('advance leaves its inputs as they were', () => {
    const { host, plan } = rebootOf('cold', hostWith());
    const run = startRun(plan, 0);
    const engineHost: EngineHost = { sim: host, releases: [], hkidLockFreeAt: 0 };
    const before = structuredClone({ run, engineHost });
    const moved = advance(run, engineHost, 0, { whenStuck: 'fail', onFailure: 'stop' });
    assert.deepEqual({ run, engineHost }, before);
    assert.ok(moved.events.some((e) => e.type === 'step'));
    assert.notDeepEqual(moved.run, run);
  });

  it('an HKID release waits for the host-wide lock, and the wait counts', () => {
    const { host, plan } = rebootOf('terminate', hostWith());
    const lockedUntil = toMicros(5);
    const run = startRun(plan, 0);
    runToEnd(run, { sim: structuredClone(host), releases: [], hkidLockFreeAt: lockedUntil }, 0);
    const free = runPlan(host, plan).summary;
    const terminate = run.steps.find((s) => s.name === 'terminate-vm');
    assert.equal(terminate?.virtualStart, 5);
    assert.equal(terminate?.waitedSeconds, 5);
    assert.equal(summarize(run).hkidHeldSeconds, free.hkidHeldSeconds + 5);
  });

  it('a wait with nothing to end it fails alone on a host, and is stuck on a shared one', () => {
    // One HKID, held by another VM for good: a boot's init-vm waits with nothing pending.
    const held = runPlan(hostWith(undefined, 1), planBoot(shapeOfGiB(1, 1))).state;
    for (const whenStuck of ['fail', 'wait'] as const) {
      const run = startRun(planBoot(SHAPE), 0);
      const engineHost: EngineHost = {
        sim: structuredClone(held),
        releases: [],
        hkidLockFreeAt: 0,
      };
      let status = advanceInPlace(run, engineHost, 0, { whenStuck, onFailure: 'stop' }).status;
      while (status.kind === 'due') {
        status = advanceInPlace(run, engineHost, status.at, {
          whenStuck,
          onFailure: 'stop',
        }).status;
      }
      const initVm = run.steps.find((s) => s.name === 'init-vm');
      assert.equal(initVm?.errno, 'ENOSPC');
      if (whenStuck === 'fail') {
        assert.deepEqual(status, { kind: 'ended' });
        assert.equal(initVm?.state, 'failed');
        assert.equal(run.cleanupReason?.code, 'step_failed');
      } else {
        assert.deepEqual(status, { kind: 'stuck' });
        assert.equal(initVm?.state, 'waiting');
      }
      assert.deepEqual(checkInvariants(engineHost.sim), []);
    }
  });

  it('property: a run advanced at any extra times ends as one advanced only when due', () => {
    fc.assert(
      fc.property(
        fc.constantFrom('cold' as const, 'terminate' as const, 'reuse' as const),
        fc.array(fc.integer({ min: 0, max: 60_000_000 }), { maxLength: 20 }),
        (strategy, extra) => {
          const { host, plan } = rebootOf(strategy, hostWith());
          const expected = runPlan(host, plan).summary;
          const run = startRun(plan, 0);
          const engineHost: EngineHost = {
            sim: structuredClone(host),
            releases: [],
            hkidLockFreeAt: 0,
          };
          // A worker that looks more often than needed (never later than due) changes nothing.
          let due = 0;
          const looks = [...extra].sort((a, b) => a - b);
          for (let i = 0; i < 10_000; i += 1) {
            while (looks.length > 0 && (looks[0] ?? Infinity) < due) {
              const at = looks.shift() ?? 0;
              advanceInPlace(run, engineHost, Math.max(at, 0), {
                whenStuck: 'fail',
                onFailure: 'stop',
              });
            }
            const { status } = advanceInPlace(run, engineHost, due, {
              whenStuck: 'fail',
              onFailure: 'stop',
            });
            if (status.kind !== 'due') break;
            due = status.at;
          }
          assert.deepEqual(summarize(run), expected);
        },
      ),
      { numRuns: 30 },
    );
  });
});
