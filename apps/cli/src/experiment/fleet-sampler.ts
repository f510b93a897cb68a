import { setTimeout as sleep } from 'node:timers/promises';
import { type MeasuredSample } from '#experiments';
import { type DaemonClient, type DaemonHost } from './daemon-client.js';

// The fleet's time series of a run on a daemon: the run's hosts read every so often in real time
// and summed, each sample stamped with a time on the run's clock.

export class FleetSampler {
  private readonly samples: MeasuredSample[] = [];
  private readonly stopping = new AbortController();
  private loop: Promise<void> | null = null;

  constructor(
    private readonly client: DaemonClient,
    /** The run's hosts, as the daemon names them. */
    private readonly hostIds: ReadonlySet<string>,
    /** The time on the run's clock of a sample taken now. */
    private readonly stamp: () => number,
    private readonly onFailure: (error: unknown) => void,
  ) {}

  /** Samples the fleet now, stamped `t` (by default the run's time now). */
  async sample(t: number = this.stamp()): Promise<void> {
    const hosts = (await this.client.hosts()).filter((h) => this.hostIds.has(h.id));
    this.samples.push(sum(t, hosts));
  }

  /** Samples every `everyMs` until stopped; a failed read stops it and is reported. */
  start(everyMs: number): void {
    this.loop = (async () => {
      for (;;) {
        try {
          await sleep(everyMs, undefined, { signal: this.stopping.signal });
          await this.sample();
        } catch (error) {
          if (!this.stopping.signal.aborted) this.onFailure(error);
          return;
        }
      }
    })();
  }

  async stop(): Promise<void> {
    this.stopping.abort();
    await this.loop;
  }

  /** The samples in order of their times (in the order taken on a tie). */
  series(): MeasuredSample[] {
    return [...this.samples].sort((a, b) => a.t - b.t);
  }
}

function sum(t: number, hosts: readonly DaemonHost[]): MeasuredSample {
  const sample: MeasuredSample = {
    t,
    freeBytes: 0,
    privateBytes: 0,
    retainedBytes: 0,
    orphanedBytes: 0,
    hkidsInUse: 0,
    hkidsZombie: 0,
    hkidsLeaked: 0,
    running: 0,
    waiting: 0,
  };
  for (const host of hosts) {
    const { memory, hkids } = host.usage;
    sample.freeBytes += memory.freeBytes;
    sample.privateBytes += memory.privateBytes;
    sample.retainedBytes += memory.retainedBytes;
    sample.orphanedBytes += memory.orphanedBytes;
    sample.hkidsInUse += hkids.used;
    sample.hkidsZombie += hkids.zombies;
    sample.hkidsLeaked += hkids.leaked;
    sample.running += host.runningJobs;
    sample.waiting += host.queuedJobs;
  }
  return sample;
}
