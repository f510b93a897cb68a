import {
  type CallOutcome,
  HKID_RELEASE_FAILURE_NAMES,
  type HkidReleaseFailure,
  type HostState,
} from '#tdx-sim';
import { InvalidRequestError } from './errors.js';

// A host's HKID release fault setting (domain section 4): which attempts at `VPFLUSHDONE` and
// `KEY.FREEID` fail, decided by counting attempts in the host document, never at random, so the
// offline fleet engine and the daemon fail the same releases.

/**
 * When one step of the HKID release fails, counting its attempts on the host since the setting
 * was made: the next `failNext` attempts (then none), or every `everyNth`-th attempt.
 */
export type ReleaseFaultRule = { failNext: number } | { everyNth: number };

/** A host's fault setting: a rule for each release step that is to fail; the others never do. */
export type HkidReleaseFaults = Partial<Record<HkidReleaseFailure, ReleaseFaultRule>>;

/** Attempts at each release step since the setting was made: what the rules count. */
export type HkidReleaseAttempts = Record<HkidReleaseFailure, number>;

/** No attempt yet. */
export function noReleaseAttempts(): HkidReleaseAttempts {
  return { VPFLUSHDONE: 0, FREEID: 0 };
}

/** Most attempts a rule may name: far beyond any run, and a safe integer. */
const MAX_RULE_COUNT = 1_000_000_000;

/**
 * The setting, checked: each key a release step, each rule one count (`failNext` from 0,
 * `everyNth` from 1). Throws {@link InvalidRequestError} otherwise.
 */
export function checkReleaseFaults(faults: unknown): HkidReleaseFaults {
  if (typeof faults !== 'object' || faults === null || Array.isArray(faults)) {
    throw new InvalidRequestError('hkidReleaseFaults must be an object');
  }
  const checked: HkidReleaseFaults = {};
  for (const [step, rule] of Object.entries(faults)) {
    if (rule === undefined) continue;
    if (!(HKID_RELEASE_FAILURE_NAMES as readonly string[]).includes(step)) {
      throw new InvalidRequestError(
        `hkidReleaseFaults: ${step} is not a release step that can fail (${HKID_RELEASE_FAILURE_NAMES.join(', ')})`,
      );
    }
    checked[step as HkidReleaseFailure] = checkRule(step, rule);
  }
  return checked;
}

function checkRule(step: string, rule: unknown): ReleaseFaultRule {
  const keys = typeof rule === 'object' && rule !== null ? Object.keys(rule) : [];
  const [kind] = keys;
  const count = (rule as Record<string, unknown> | null)?.[kind ?? ''];
  const min = kind === 'everyNth' ? 1 : 0;
  if (
    keys.length !== 1 ||
    (kind !== 'failNext' && kind !== 'everyNth') ||
    typeof count !== 'number' ||
    !Number.isInteger(count) ||
    count < min ||
    count > MAX_RULE_COUNT
  ) {
    throw new InvalidRequestError(
      `hkidReleaseFaults.${step} must be { failNext: n } (n >= 0) or { everyNth: k } (k >= 1)`,
    );
  }
  return kind === 'failNext' ? { failNext: count } : { everyNth: count };
}

/** Whether the attempt after `attempts` earlier ones fails under `rule`. */
export function attemptFails(rule: ReleaseFaultRule | undefined, attempts: number): boolean {
  if (rule === undefined) return false;
  if ('failNext' in rule) return attempts < rule.failNext;
  return (attempts + 1) % rule.everyNth === 0;
}

/**
 * Arms the simulated host for the next release as the setting says (and disarms what it does
 * not). The host's `failNext` is replaced, never changed: it may be shared with a state before.
 */
export function armReleaseFaults(
  sim: HostState,
  faults: HkidReleaseFaults,
  attempts: HkidReleaseAttempts,
): void {
  const VPFLUSHDONE = attemptFails(faults.VPFLUSHDONE, attempts.VPFLUSHDONE);
  const FREEID = attemptFails(faults.FREEID, attempts.FREEID);
  if (sim.failNext.VPFLUSHDONE === VPFLUSHDONE && sim.failNext.FREEID === FREEID) return;
  sim.failNext = { VPFLUSHDONE, FREEID };
}

/**
 * Counts the release attempts of a step's calls into `attempts`: every release reaches
 * `VPFLUSHDONE`; only one that got past it reaches `KEY.FREEID`. True if any was made.
 */
export function countReleaseAttempts(
  attempts: HkidReleaseAttempts,
  outcomes: readonly CallOutcome[],
): boolean {
  let any = false;
  for (const outcome of outcomes) {
    if (!outcome.ok) continue;
    const { releasedHkid, hkidReleaseFailure } = outcome.effects;
    if (releasedHkid === null && hkidReleaseFailure === null) continue;
    any = true;
    attempts.VPFLUSHDONE += 1;
    if (hkidReleaseFailure !== 'VPFLUSHDONE') attempts.FREEID += 1;
  }
  return any;
}

/** Whether two settings say the same. */
export function sameReleaseFaults(a: HkidReleaseFaults, b: HkidReleaseFaults): boolean {
  return HKID_RELEASE_FAILURE_NAMES.every(
    (step) => JSON.stringify(a[step] ?? null) === JSON.stringify(b[step] ?? null),
  );
}
