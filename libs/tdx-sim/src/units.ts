/** Bytes in one 4 KiB page: the unit every page count in the simulator uses. */
export const PAGE_BYTES = 4096;
/** Bytes in one GiB. */
export const GIB_BYTES = 1024 ** 3;
/** 4 KiB pages in one GiB (262,144). */
export const PAGES_PER_GIB = GIB_BYTES / PAGE_BYTES;
/** 4 KiB pages in one 2 MiB leaf. */
export const PAGES_PER_2M = 512;
/** Leaf entries one S-EPT table page holds. */
export const SEPT_ENTRIES_PER_PAGE = 512;

/** GiB to bytes. */
export function gibToBytes(gib: number): number {
  return Math.round(gib * GIB_BYTES);
}

/** Bytes to 4 KiB pages, rounding up. */
export function bytesToPages(bytes: number): number {
  return Math.ceil(bytes / PAGE_BYTES);
}

/** 4 KiB pages to bytes. */
export function pagesToBytes(pages: number): number {
  return pages * PAGE_BYTES;
}
