import type { FleetIndex, FleetStore, IndexEntry } from '#store';

/** How an index is pruned. */
export interface IndexPrunerOptions {
  /** Entries looked at per step (a hint to HSCAN). */
  pageSize: number;
  /** How long an entry must stay without its job (or VM) before it is dropped. */
  graceMs: number;
}

/**
 * Drops the entries of an index whose job (or VM) does not exist. In the job index: finished jobs
 * whose record has expired (they are kept 7 days) and submits that were refused after the index
 * was written (a busy VM, an unsupported strategy). In the VM index: terminated VMs whose last
 * record has expired, and creates that stopped between claiming the id and committing the VM.
 * Without this each index grows with every job, or VM, there ever was.
 *
 * A submit (a create) writes the index just before it commits, so an entry without its job may be
 * one that is about to get it: an entry is dropped only if its job is still missing when looked
 * at again at least `graceMs` later, and only if it still names the same host. Each step looks at
 * one page of the index, and again at the entries it found missing `graceMs` ago.
 */
export class IndexPruner {
  private cursor = '0';
  /** Entries found without their job, waiting for their second look. */
  private readonly suspects: Array<{ atMs: number; entries: IndexEntry[] }> = [];
  /** The ids in `suspects` (a small index is scanned whole at every step). */
  private readonly suspected = new Set<string>();

  constructor(
    private readonly store: FleetStore,
    private readonly index: FleetIndex,
    private readonly options: IndexPrunerOptions,
    private readonly now: () => number = () => Date.now(),
  ) {}

  /** One step; returns how many entries it dropped. */
  async step(): Promise<number> {
    let dropped = 0;
    while (this.suspects.length > 0) {
      const oldest = this.suspects[0];
      if (oldest === undefined || this.now() - oldest.atMs < this.options.graceMs) break;
      this.suspects.shift();
      for (const e of oldest.entries) this.suspected.delete(e.id);
      const existing = await this.store.existingEntries(this.index, oldest.entries);
      dropped += await this.store.dropIndexEntries(
        this.index,
        oldest.entries.filter((e) => !existing.has(e.id)),
      );
    }
    const page = await this.store.scanIndex(this.index, this.cursor, this.options.pageSize);
    this.cursor = page.next;
    const existing = await this.store.existingEntries(this.index, page.entries);
    const missing = page.entries.filter((e) => !existing.has(e.id) && !this.suspected.has(e.id));
    if (missing.length > 0) {
      this.suspects.push({ atMs: this.now(), entries: missing });
      for (const e of missing) this.suspected.add(e.id);
    }
    return dropped;
  }
}
