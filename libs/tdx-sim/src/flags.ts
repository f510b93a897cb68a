/**
 * The flag bits calls take, each set declared once with the kernel's names and values: what a
 * script may spell by name, what a guard checks bit by bit.
 */

/** `fallocate(2)` modes the simulator knows (`include/uapi/linux/falloc.h`). */
export const FALLOC_FLAGS = {
  /** Allocate without changing the file size: guest_memfd accepts no other kind of allocation. */
  FALLOC_FL_KEEP_SIZE: 0x01,
  /** Free the range (always together with `FALLOC_FL_KEEP_SIZE`). */
  FALLOC_FL_PUNCH_HOLE: 0x02,
} as const;

/** `KVM_CREATE_GUEST_MEMFD` flags (`include/uapi/linux/kvm.h`, 6.18 on). */
export const GUEST_MEMFD_FLAGS = {
  /** The file may be mmapped (shared memory only). */
  GUEST_MEMFD_FLAG_MMAP: 1 << 0,
  /** Pages start shared: only for a VM without private memory, so never for a TD. */
  GUEST_MEMFD_FLAG_INIT_SHARED: 1 << 1,
} as const;

/** The name of a flag of one of the sets above. */
export type FlagName = keyof typeof FALLOC_FLAGS | keyof typeof GUEST_MEMFD_FLAGS;

/** Whether `flags` is a mask of bits: a non-negative safe integer. */
export function isFlagMask(flags: number): boolean {
  return Number.isSafeInteger(flags) && flags >= 0;
}

/** The bits of `flags` outside `known`. */
export function unknownBits(flags: number, known: number): number {
  // Masks past 32 bits are refused by isFlagMask's callers before; bitwise ops are 32-bit.
  return flags & ~known;
}
