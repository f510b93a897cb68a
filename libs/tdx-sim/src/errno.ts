/**
 * The errno values a simulated ioctl can return, with the meaning the kernel gives them.
 * `ENOMEM` and `ENOTTY` complete the list for host memory exhaustion and for an ioctl
 * the host's kernel does not have.
 */
export const ERRNOS = [
  'EINVAL',
  'EBUSY',
  'ENOSPC',
  'EIO',
  'EEXIST',
  'EBADF',
  'ENOMEM',
  'ENOTTY',
] as const;

/** One of {@link ERRNOS}. */
export type Errno = (typeof ERRNOS)[number];

/**
 * Thrown inside a transition when a guard refuses a call. Never escapes the library:
 * {@link applyCall} turns it into a failed outcome and keeps the previous state.
 */
export class SimErrnoError extends Error {
  constructor(
    readonly errno: Errno,
    message: string,
  ) {
    super(message);
    this.name = 'SimErrnoError';
  }
}

/** Shorthand for a guard: throws {@link SimErrnoError} when `condition` is false. */
export function ensure(condition: boolean, errno: Errno, message: string): asserts condition {
  if (!condition) throw new SimErrnoError(errno, message);
}
