import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import { type DaemonClient, type DaemonJob } from './daemon-client.js';
import { serverSentEvents } from './sse-reader.js';

// Hears when the run's jobs end: `job.finished` on the daemon's event stream, then the job's
// record. The stream filters by one host, VM or job at most, so one stream for the whole fleet is
// read and filtered here. Events are not replayed: a stream that drops is opened again and every
// job still followed is read once; and since the daemon's own feed may lose an event while it
// reconnects to Redis, jobs are also read when the run's hosts have said nothing for a while.

/** A stream that says nothing of the run's hosts for this long has its jobs read. */
const QUIET_POLL_MS = 5000;
/** Reconnections in a row that may fail before the watcher gives up. */
const MAX_RECONNECT_FAILURES = 5;

const FINAL_STATES: ReadonlySet<string> = new Set(['succeeded', 'failed', 'cancelled']);

const eventSchema = z.object({ jobId: z.string(), hostId: z.string() });

export interface JobWatcherHandlers {
  /** A followed job has ended: its final record. */
  ended(job: DaemonJob): void;
  /** The watcher cannot go on: the daemon does not answer. */
  failed(error: unknown): void;
}

export class JobWatcher {
  private readonly followed = new Set<string>();
  /** Jobs of the run's hosts that ended before their submission's answer came back. */
  private readonly endedEarly = new Set<string>();
  private readonly reading = new Set<string>();
  private readonly abort = new AbortController();
  private retryMs = 2000;
  private lastHeardMs = performance.now();
  private poller: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(
    private readonly client: DaemonClient,
    /** Every host of the run has an id that starts with this. */
    private readonly hostPrefix: string,
    private readonly handlers: JobWatcherHandlers,
  ) {}

  /** Opens the event stream; what is submitted after it resolves cannot end unheard. */
  async open(): Promise<void> {
    const body = await this.client.events(this.abort.signal);
    void this.read(body);
    this.poller = setInterval(() => {
      if (performance.now() - this.lastHeardMs >= QUIET_POLL_MS) this.readAll();
    }, QUIET_POLL_MS);
  }

  /** Follows a job until it ends (`handlers.ended`), even one that already has. */
  follow(jobId: string): void {
    this.followed.add(jobId);
    if (this.endedEarly.delete(jobId)) this.readJob(jobId);
  }

  close(): void {
    this.closed = true;
    if (this.poller !== null) clearInterval(this.poller);
    this.abort.abort();
  }

  private async read(body: ReadableStream<Uint8Array>): Promise<void> {
    try {
      for await (const event of serverSentEvents(body, (ms) => (this.retryMs = ms))) {
        const parsed = eventSchema.safeParse(safeJson(event.data));
        if (!parsed.success || !parsed.data.hostId.startsWith(this.hostPrefix)) continue;
        this.lastHeardMs = performance.now();
        if (event.event !== 'job.finished') continue;
        const { jobId } = parsed.data;
        if (this.followed.has(jobId)) this.readJob(jobId);
        else this.endedEarly.add(jobId);
      }
    } catch {
      // The stream broke: opened again below, like one that ended.
    }
    if (!this.closed) await this.reconnect();
  }

  private async reconnect(): Promise<void> {
    for (let failures = 0; !this.closed;) {
      try {
        await sleep(this.retryMs, undefined, { signal: this.abort.signal });
        const body = await this.client.events(this.abort.signal);
        void this.read(body);
        // Whatever ended while no stream was open was said to nobody.
        this.readAll();
        return;
      } catch (error) {
        if (this.closed) return;
        failures += 1;
        if (failures >= MAX_RECONNECT_FAILURES) {
          this.handlers.failed(error);
          return;
        }
      }
    }
  }

  private readAll(): void {
    this.lastHeardMs = performance.now();
    for (const jobId of this.followed) this.readJob(jobId);
  }

  private readJob(jobId: string): void {
    if (this.reading.has(jobId)) return;
    this.reading.add(jobId);
    this.client.job(jobId).then(
      (job) => {
        this.reading.delete(jobId);
        if (this.closed || !FINAL_STATES.has(job.state)) return;
        if (this.followed.delete(jobId)) this.handlers.ended(job);
      },
      (error: unknown) => {
        this.reading.delete(jobId);
        if (!this.closed) this.handlers.failed(error);
      },
    );
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
