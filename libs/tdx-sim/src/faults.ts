/**
 * The SEAMCALLs of the HKID release that can fail (domain sections 4 and 8), declared once: a
 * host can be told to fail the next one ({@link SimCall} `tdx_fail_next`), so that an operator
 * sees what a fleet does when they happen.
 */
export const HKID_RELEASE_FAILURES = {
  /**
   * `TDH.MNG.VPFLUSHDONE` (after flushing the vCPUs): the HKID is not released, the TD stays
   * RUNNABLE with its keys, and a later release (at destruction) can succeed.
   */
  VPFLUSHDONE: 'the HKID is kept and the TD stays RUNNABLE; a later release can succeed',
  /**
   * `TDH.MNG.KEY.FREEID` (after the cache write-back): the TD is BLOCKED, and its HKID is
   * leaked for good: owned by no VM and never free again until the host reboots.
   */
  FREEID: 'the HKID is leaked for good (owned by no VM); the TD is left BLOCKED',
} as const;

/** A step of the HKID release that can fail: a key of {@link HKID_RELEASE_FAILURES}. */
export type HkidReleaseFailure = keyof typeof HKID_RELEASE_FAILURES;

/** Every failing step, in release order. */
export const HKID_RELEASE_FAILURE_NAMES = Object.keys(
  HKID_RELEASE_FAILURES,
) as readonly HkidReleaseFailure[];
