/**
 * The errno values a simulated call can return, with the meaning the kernel gives them.
 * `ENOMEM` and `ENOTTY` complete the list for host memory exhaustion and for an ioctl
 * the host's kernel does not have; `EOPNOTSUPP` is `fallocate` without `FALLOC_FL_KEEP_SIZE`;
 * `EFAULT` is `KVM_RUN` stopping on a private access no guest_memfd backs.
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
  'EOPNOTSUPP',
  'EFAULT',
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
    /** Why `KVM_RUN` stopped, when the refusal is one (the kernel fills `kvm_run.exit_reason`). */
    readonly exit?: KvmExit,
  ) {
    super(message);
    this.name = 'SimErrnoError';
  }
}

/** Shorthand for a guard: throws {@link SimErrnoError} when `condition` is false. */
export function ensure(condition: boolean, errno: Errno, message: string): asserts condition {
  if (!condition) throw new SimErrnoError(errno, message);
}

/**
 * What `KVM_RUN` left in `kvm_run` when it stopped on a private access that no guest_memfd backs:
 * `KVM_EXIT_MEMORY_FAULT` with the PRIVATE flag, the faulting guest physical address and size.
 */
export interface KvmExit {
  reason: 'KVM_EXIT_MEMORY_FAULT';
  flags: readonly ['KVM_MEMORY_EXIT_FLAG_PRIVATE'];
  gpa: number;
  size: number;
}
