import type { FleetStore, JobIndexEntry } from '#store';

/** How the job index is pruned. */
export interface JobIndexPrunerOptions {
  /** Entries looked at per step (a hint to HSCAN). */
  pageSize: number;
  /** How long an entry must stay without its job before it is dropped. */
  graceMs: number;
}

/**
 * Drops the job index entries of jobs that do not exist: finished jobs whose record has expired
 * (they are kept 7 days) and submits that were refused after the index was written (a busy VM, an
 * unsupported strategy). Without this the index grows with every job ever submitted.
 *
 * A submit writes the index just before it commits its job, so an entry without a job may be one
 * that is about to get it: an entry is dropped only if its job is still missing when looked at
 * again at least `graceMs` later. Each step looks at one page of the index, and again at the
 * pages it found missing jobs on `graceMs` ago.
 */
export class JobIndexPruner {
  private cursor = '0';
  /** Entries found without their job, waiting for their second look. */
  private readonly suspects: Array<{ atMs: number; entries: JobIndexEntry[] }> = [];
  /** The job ids in `suspects` (a small index is scanned whole at every step). */
  private readonly suspected = new Set<string>();

  constructor(
    private readonly store: FleetStore,
    private readonly options: JobIndexPrunerOptions,
    private readonly now: () => number = () => Date.now(),
  ) {}

  /** One step; returns how many entries it dropped. */
  async step(): Promise<number> {
    let dropped = 0;
    while (this.suspects.length > 0) {
      const oldest = this.suspects[0];
      if (oldest === undefined || this.now() - oldest.atMs < this.options.graceMs) break;
      this.suspects.shift();
      for (const e of oldest.entries) this.suspected.delete(e.jobId);
      const existing = await this.store.existingJobs(oldest.entries);
      dropped += await this.store.dropJobIndexEntries(
        oldest.entries.filter((e) => !existing.has(e.jobId)),
      );
    }
    const page = await this.store.scanJobIndex(this.cursor, this.options.pageSize);
    this.cursor = page.next;
    const existing = await this.store.existingJobs(page.entries);
    const missing = page.entries.filter(
      (e) => !existing.has(e.jobId) && !this.suspected.has(e.jobId),
    );
    if (missing.length > 0) {
      this.suspects.push({ atMs: this.now(), entries: missing });
      for (const e of missing) this.suspected.add(e.jobId);
    }
    return dropped;
  }
}
