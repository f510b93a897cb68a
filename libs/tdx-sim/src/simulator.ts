import type { CallOutcome, CallValue, SimCall } from './calls.js';
import type { Errno } from './errno.js';
import { applyCall, settleAll, settleRelease } from './host.js';
import type { HostState } from './state.js';

/** Where time comes from. The simulator never reads a real clock. */
export interface Clock {
  /** Current time in seconds. */
  now(): number;
}

/** A clock that only moves when told to: virtual seconds for experiments and tests. */
export class VirtualClock implements Clock {
  constructor(private seconds = 0) {}

  now(): number {
    return this.seconds;
  }

  /** Moves time forward by `seconds` (never backwards). */
  advance(seconds: number): void {
    if (seconds < 0) throw new RangeError('a virtual clock does not go backwards');
    this.seconds += seconds;
  }

  /** Moves time to `seconds` if that is later than now. */
  advanceTo(seconds: number): void {
    this.seconds = Math.max(this.seconds, seconds);
  }
}

/** One entry of the event log: a call, when it was made, what it returned and cost. */
export interface SimEvent {
  at: number;
  call: SimCall;
  ok: boolean;
  value?: CallValue;
  errno?: Errno;
  message?: string;
  seconds: number;
}

/**
 * A host state, a clock and an event log together: the convenient way to drive one host call by
 * call (scripts, tests). Still pure: it holds data and does no I/O.
 */
export class Simulator {
  private readonly log: SimEvent[] = [];

  constructor(
    private current: HostState,
    private readonly clock: Clock = new VirtualClock(),
  ) {}

  /** The host as it is now. */
  get state(): HostState {
    return this.current;
  }

  /** Every call made so far, in order. */
  get events(): readonly SimEvent[] {
    return this.log;
  }

  /**
   * Makes one call at the clock's current time. With `settle` (the default) whatever it freed
   * is back with the host at once, as if its virtual time had passed.
   */
  call(call: SimCall, options: { settle?: boolean } = {}): CallOutcome {
    const { state, outcome } = applyCall(this.current, call);
    this.current = state;
    const event: SimEvent = {
      at: this.clock.now(),
      call,
      ok: outcome.ok,
      seconds: outcome.seconds,
    };
    if (outcome.ok) {
      event.value = outcome.value;
      if ((options.settle ?? true) && outcome.effects.release !== null) {
        this.current = settleRelease(this.current, outcome.effects.release);
      }
    } else {
      event.errno = outcome.errno;
      event.message = outcome.message;
    }
    this.log.push(event);
    return outcome;
  }

  /** Returns every in-flight release to the host. */
  settleAll(): void {
    this.current = settleAll(this.current);
  }
}
