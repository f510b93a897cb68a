import { toMicros } from '#vmm';

// The run's clock, in virtual seconds that mean what they mean offline. The daemon knows a job's
// times only on its host's clock, whose origin is the host's own (its creation, or where it last
// ran to at TIME_SCALE 0). A request issued at `requestedAt` (the phase start, the end that
// triggered it, or the arrival's time) reaches the daemon some real time after it was meant to;
// that delay times TIME_SCALE is its lag, and on the run's clock it arrived at
// `requestedAt + lag`. Its start and end are its arrival plus what its host's clock says they
// came after its arrival.

/** The run's clock against real time, at the daemon's TIME_SCALE. */
export class RunClock {
  constructor(
    /** The virtual time at which the phases start: the fleet has booted. */
    readonly startAt: number,
    /** The real time (monotonic milliseconds) of `startAt`. */
    readonly startRealMs: number,
    /** Virtual seconds per real second; 0: the daemon does not wait. */
    readonly timeScale: number,
  ) {}

  /** The virtual time at real time `realMs` (at TIME_SCALE 0 it does not follow real time). */
  at(realMs: number): number {
    if (this.timeScale === 0) return this.startAt;
    return this.startAt + ((realMs - this.startRealMs) / 1000) * this.timeScale;
  }

  /** The real time at which virtual time `t` is due (at TIME_SCALE 0: at once). */
  realMsOf(t: number): number {
    if (this.timeScale === 0) return this.startRealMs;
    return this.startRealMs + ((t - this.startAt) / this.timeScale) * 1000;
  }

  /**
   * How late a request meant for `requestedAt` and sent at real time `sentRealMs` reached the
   * daemon, in virtual seconds: the real delay times TIME_SCALE (0 at TIME_SCALE 0; never
   * negative, a request cannot arrive before it was issued).
   */
  lagSeconds(requestedAt: number, sentRealMs: number): number {
    if (this.timeScale === 0) return 0;
    return Math.max(0, ((sentRealMs - this.realMsOf(requestedAt)) / 1000) * this.timeScale);
  }
}

/** A job's times on its host's clock, seconds. */
export interface HostClockTimes {
  virtualArrivedAt: number;
  virtualStartedAt: number | null;
  virtualFinishedAt: number | null;
}

/**
 * A job's start and end on the run's clock, for a job that arrived at `arrivedAt` on it. The
 * host's times are whole microseconds: their differences are taken exactly.
 */
export function onRunClock(
  arrivedAt: number,
  job: HostClockTimes,
): { startedAt: number | null; finishedAt: number | null } {
  const arrival = toMicros(job.virtualArrivedAt);
  const after = (hostTime: number | null): number | null =>
    hostTime === null ? null : arrivedAt + (toMicros(hostTime) - arrival) / 1_000_000;
  return { startedAt: after(job.virtualStartedAt), finishedAt: after(job.virtualFinishedAt) };
}
