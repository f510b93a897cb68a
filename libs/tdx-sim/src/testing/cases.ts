/**
 * Table-driven guard cases for the tdx-sim specs: each case builds a small host under every
 * kernel it applies to, puts it in a precondition with a few calls, makes one call and checks
 * the errno (a refused call must hand back the very same state object, untouched) or the
 * success. Not exported from the library's index. The spec hands in its test runner and
 * assertions: the library, this folder included, imports no Node module.
 */
import type { CallSuccess, SimCall } from '../calls.js';
import type { HostConfigInput } from '../config.js';
import type { Errno } from '../errno.js';
import { applyCall } from '../host.js';
import { ALL_KERNELS, type KernelFeatures, kernelLabel } from '../kernel-switches.js';
import type { HostState } from '../state.js';
import { Driver, smallHost } from './harness.js';

/** What a case expects: success or one errno. */
export type Expect = Errno | 'ok';

/** What a case hands back: the call under test and, optionally, checks of its success. */
export interface Act {
  call: SimCall;
  then?: (after: HostState, outcome: CallSuccess, before: HostState) => void;
}

/** One row of a table: a precondition, a call and what it gives under each kernel. */
export interface GuardCase {
  name: string;
  /** Kernels the case runs under; every combination when left out. */
  kernels?: (kernel: KernelFeatures) => boolean;
  host?: HostConfigInput;
  arrange: (d: Driver, kernel: KernelFeatures) => SimCall | Act;
  expect: Expect | ((kernel: KernelFeatures) => Expect);
}

/** The assertions {@link check} uses (`node:assert/strict` has them). */
export interface Assertions {
  deepEqual(actual: unknown, expected: unknown, message?: string): void;
  equal(actual: unknown, expected: unknown, message?: string): void;
  fail(message: string): never;
}

/** The test runner and assertions of a spec (`node:test` and `node:assert/strict`). */
export interface SpecApi {
  describe: (name: string, fn: () => void) => unknown;
  it: (name: string, fn: () => void) => unknown;
  assert: Assertions;
}

/** Applies `call` and checks the outcome; a failure must leave the state exactly as it was. */
export function check(assert: Assertions, before: HostState, act: Act, want: Expect): void {
  const frozen = structuredClone(before);
  const { state, outcome } = applyCall(before, act.call);
  assert.deepEqual(before, frozen, 'applyCall modified its input state');
  if (want === 'ok') {
    if (!outcome.ok) assert.fail(`expected success, got ${outcome.errno}: ${outcome.message}`);
    act.then?.(state, outcome, before);
    return;
  }
  if (outcome.ok) assert.fail(`expected ${want}, the call succeeded`);
  assert.equal(outcome.errno, want, outcome.message);
  assert.equal(state, before, 'a refused call must return the state object it was given');
  assert.equal(outcome.seconds, 0);
}

/** A `describe` of `cases`, one test per case and kernel it applies to. */
export function runCases(
  { describe, it, assert }: SpecApi,
  title: string,
  cases: readonly GuardCase[],
): void {
  describe(title, () => {
    for (const c of cases) {
      for (const kernel of ALL_KERNELS.filter(c.kernels ?? (() => true))) {
        const want = typeof c.expect === 'function' ? c.expect(kernel) : c.expect;
        it(`${c.name} -> ${want} [${kernelLabel(kernel)}]`, () => {
          const d = new Driver(smallHost(kernel, c.host));
          const arranged = c.arrange(d, kernel);
          check(assert, d.state, 'op' in arranged ? { call: arranged } : arranged, want);
        });
      }
    }
  });
}
