import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import { type DaemonClient } from './daemon-client.js';
import { type RecordingClient } from './recording-client.js';
import { type RecordedJob } from './recording.js';
import { serverSentEvents } from './sse-reader.js';

// Follows the daemon's event stream and reads every job that ends on the recorded hosts. A job
// is the recording's if it was submitted once the recording started and was not already under
// way in the snapshot (its VM is then in the snapshot, booted at 0, and the job is history).
// Events are not replayed by the daemon: a stream that drops is opened again, and what ended
// while none was open is missed (counted, and said).

/** Reconnections in a row that may fail before the recording stops. */
const MAX_RECONNECT_FAILURES = 5;

const eventSchema = z.object({ jobId: z.string(), hostId: z.string() });

export class EventRecorder {
  /** Every job heard ending, read; which are the recording's is decided at the end. */
  private readonly ended: RecordedJob[] = [];
  /** Wall time the recording started (ms); jobs submitted before it are not the recording's. */
  startedAtMs = 0;
  /** Times the stream dropped and was opened again. */
  reconnections = 0;
  private readonly abort = new AbortController();
  private readonly reads = new Set<Promise<void>>();
  private readonly heard = new Set<string>();
  private readonly alreadyUnderWay = new Set<string>();
  private retryMs = 2000;
  private stopped = false;

  constructor(
    private readonly client: DaemonClient,
    private readonly reader: RecordingClient,
    private readonly hostPrefix: string,
    /** Told when the stream is lost for good or a job cannot be read: the recording stops. */
    private readonly onFailure: (error: unknown) => void,
  ) {}

  /** Opens the stream; nothing that ends after this resolves goes unheard. */
  async open(): Promise<void> {
    const body = await this.client.events(this.abort.signal);
    this.startedAtMs = Date.now();
    void this.follow(body);
  }

  /** Jobs running or queued in the snapshot: they began before the recording. */
  underWay(jobIds: Iterable<string>): void {
    for (const id of jobIds) this.alreadyUnderWay.add(id);
  }

  /** How many jobs have ended so far (some may turn out to predate the recording). */
  get endedCount(): number {
    return this.ended.length;
  }

  /** The recording's jobs, and how many that ended had begun before it. */
  recorded(): { jobs: RecordedJob[]; skipped: number } {
    const jobs = this.ended.filter(
      (job) => !this.alreadyUnderWay.has(job.id) && job.createdAtMs >= this.startedAtMs,
    );
    return { jobs, skipped: this.ended.length - jobs.length };
  }

  /** Stops following and waits for the jobs being read: nothing heard is lost. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.abort.abort();
    while (this.reads.size > 0) await Promise.allSettled([...this.reads]);
  }

  private async follow(body: ReadableStream<Uint8Array>): Promise<void> {
    try {
      for await (const event of serverSentEvents(body, (ms) => (this.retryMs = ms))) {
        if (event.event !== 'job.finished') continue;
        const parsed = eventSchema.safeParse(safeJson(event.data));
        if (!parsed.success || !parsed.data.hostId.startsWith(this.hostPrefix)) continue;
        this.read(parsed.data.jobId);
      }
    } catch {
      // The stream broke: opened again below, like one that ended.
    }
    if (!this.stopped) await this.reconnect();
  }

  private async reconnect(): Promise<void> {
    for (let failures = 0; !this.stopped;) {
      try {
        await sleep(this.retryMs, undefined, { signal: this.abort.signal });
        const body = await this.client.events(this.abort.signal);
        this.reconnections += 1;
        void this.follow(body);
        return;
      } catch (error) {
        if (this.stopped) return;
        failures += 1;
        if (failures >= MAX_RECONNECT_FAILURES) {
          this.onFailure(error);
          return;
        }
      }
    }
  }

  private read(jobId: string): void {
    if (this.heard.has(jobId)) return;
    this.heard.add(jobId);
    const reading = this.reader.job(jobId).then(
      (job) => {
        this.ended.push(job);
      },
      (error: unknown) => this.onFailure(error),
    );
    const tracked = reading.finally(() => this.reads.delete(tracked));
    this.reads.add(tracked);
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
