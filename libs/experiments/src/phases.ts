import { seededRandom } from '#fleet';
import type { Strategy } from '#fleet';
import type { PhaseSpan } from './result.js';
import type { Phase, Scenario } from './scenario.js';
import type { BuiltFleet, FleetVm } from './fleet-builder.js';
import type { Variant } from './sweep.js';

// The phases of a scenario as one state machine that says which operation to issue when: at a
// phase's start, when an operation ends, and when an arrival is due. Every target drives the
// same machine (the offline engine from its listener, the daemon target from its events), so
// that both issue the same operations in the same order for the same run.

/** An operation a phase issues now. */
export interface PhaseRequest {
  phase: string;
  vmId: string;
  action: 'reboot' | 'terminate';
  strategy: Strategy;
}

/** How an issued operation ended, as far as the phases care. */
export type RequestOutcome = 'succeeded' | 'failed' | 'cancelled' | 'refused';

interface RunningPhase {
  phase: Phase;
  index: number;
  strategy: Strategy;
  vms: FleetVm[];
  startedAt: number;
  endedAt: number;
  issued: number;
  inFlight: number;
  /** Nothing more to issue: the phase ends when its operations have. */
  exhausted: boolean;
}

/** Min-heap of small integers (host indexes for the rolling wave). */
class IndexHeap {
  private readonly items: number[] = [];
  private readonly member: Uint8Array;
  constructor(size: number) {
    this.member = new Uint8Array(size);
  }
  get size(): number {
    return this.items.length;
  }
  has(i: number): boolean {
    return this.member[i] === 1;
  }
  push(i: number): void {
    if (this.member[i] === 1) return;
    this.member[i] = 1;
    const items = this.items;
    items.push(i);
    let p = items.length - 1;
    while (p > 0) {
      const parent = (p - 1) >> 1;
      if ((items[parent] as number) <= i) break;
      items[p] = items[parent] as number;
      p = parent;
    }
    items[p] = i;
  }
  peek(): number | undefined {
    return this.items[0];
  }
  pop(): number {
    const items = this.items;
    const top = items[0] as number;
    this.member[top] = 0;
    const last = items.pop() as number;
    if (items.length > 0) {
      let p = 0;
      for (;;) {
        let child = 2 * p + 1;
        if (child >= items.length) break;
        if (child + 1 < items.length && (items[child + 1] as number) < (items[child] as number)) {
          child += 1;
        }
        if ((items[child] as number) >= last) break;
        items[p] = items[child] as number;
        p = child;
      }
      items[p] = last;
    }
    return top;
  }
}

/** The rolling wave's bookkeeping: each host's VMs still to go and its operations in flight. */
interface Wave {
  queues: FleetVm[][];
  heads: Int32Array;
  inFlight: Int32Array;
  hostOf: Map<string, number>;
  ready: IndexHeap;
  maxPerHost: number;
  maxInFleet: number;
}

/** Arrivals of an open-model phase, and the round-robin over its VMs. */
interface Arrivals {
  times: number[];
  next: number;
}

/** The default strategy of an action: the first it declares. */
function defaultStrategy(action: 'reboot' | 'terminate'): Strategy {
  return action === 'reboot' ? 'cold' : 'close';
}

/**
 * Drives a scenario's phases, one after the other. The caller reports every end of an
 * operation this driver issued (`ended`) and calls `tick` at `nextAt()`; both return what to
 * issue at that time.
 */
export class PhaseDriver {
  private readonly phases: Phase[];
  private readonly spans: PhaseSpan[] = [];
  private current: RunningPhase | null = null;
  private nextPhase = 0;
  /** When the next phase starts, once the previous one has ended (a delay). */
  private startAt: number | null = null;
  private readonly busy = new Set<string>();
  private readonly gone = new Set<string>();
  private readonly random: () => number;
  private wave: Wave | null = null;
  private arrivals: Arrivals | null = null;
  private roundRobin = 0;
  /** The phase of each arrival that found every VM it may use busy. */
  private readonly unservedArrivals: string[] = [];
  private readonly boundaries: number[] = [];

  constructor(
    scenario: Scenario,
    private readonly variant: Variant,
    private readonly fleet: BuiltFleet,
    seed: number,
  ) {
    this.phases = scenario.phases;
    // Arrivals draw from a source of their own: VM sizes use the seed itself.
    this.random = seededRandom((seed ^ 0x5eed_a11) >>> 0);
  }

  /** True once every phase has ended. */
  get done(): boolean {
    return this.current === null && this.startAt === null && this.nextPhase >= this.phases.length;
  }

  /** The phases that have started, with their span so far. */
  phaseSpans(): readonly PhaseSpan[] {
    return this.spans;
  }

  /** Times phases started or ended since the last call: where a target should sample. */
  takeBoundaries(): number[] {
    return this.boundaries.splice(0);
  }

  /** The phase of each arrival that found every VM it may use busy (not issued). */
  get unserved(): readonly string[] {
    return this.unservedArrivals;
  }

  /** Starts the first phase: the fleet has booted at `t`. */
  start(t: number): PhaseRequest[] {
    const out: PhaseRequest[] = [];
    this.scheduleNextPhase(t, out);
    return out;
  }

  /** The next virtual time something is due without an operation ending, or null. */
  nextAt(): number | null {
    if (this.startAt !== null) return this.startAt;
    const arrivals = this.arrivals;
    if (arrivals !== null && arrivals.next < arrivals.times.length) {
      return arrivals.times[arrivals.next] as number;
    }
    return null;
  }

  /** What is due at `t` (= `nextAt()`). */
  tick(t: number): PhaseRequest[] {
    const out: PhaseRequest[] = [];
    if (this.startAt !== null && this.startAt <= t) {
      this.startAt = null;
      this.beginPhase(t, out);
      return out;
    }
    const arrivals = this.arrivals;
    const phase = this.current;
    if (arrivals === null || phase === null) return out;
    while (
      arrivals.next < arrivals.times.length &&
      (arrivals.times[arrivals.next] as number) <= t
    ) {
      arrivals.next += 1;
      const vm = this.nextIdle(phase);
      if (vm === null) this.unservedArrivals.push(phase.phase.name);
      else this.issue(phase, vm, out);
    }
    if (arrivals.next >= arrivals.times.length) phase.exhausted = true;
    this.endIfOver(t, out);
    return out;
  }

  /** An operation this driver issued ended at `t`. */
  ended(vmId: string, t: number, outcome: RequestOutcome): PhaseRequest[] {
    const out: PhaseRequest[] = [];
    const phase = this.current;
    if (!this.busy.delete(vmId) || phase === null) return out;
    phase.inFlight -= 1;
    if (phase.endedAt < t) phase.endedAt = t;
    const span = this.spans[this.spans.length - 1] as PhaseSpan;
    span.endedAt = phase.endedAt;
    if (phase.phase.action === 'terminate' && outcome === 'succeeded') {
      this.gone.add(vmId);
    }
    switch (phase.phase.kind) {
      case 'rolling':
        this.waveEnded(phase, vmId, out);
        break;
      case 'closed-loop':
        this.refill(phase, out);
        break;
      case 'storm':
      case 'arrivals':
        break;
    }
    this.endIfOver(t, out);
    return out;
  }

  private scheduleNextPhase(t: number, out: PhaseRequest[]): void {
    const next = this.phases[this.nextPhase];
    if (next === undefined) return;
    if (next.delaySeconds > 0) {
      this.startAt = t + next.delaySeconds;
      return;
    }
    this.beginPhase(t, out);
  }

  private beginPhase(t: number, out: PhaseRequest[]): void {
    const index = this.nextPhase;
    const phase = this.phases[index] as Phase;
    this.nextPhase += 1;
    const selected = new Set(phase.vmGroups ?? this.fleet.vms.map((vm) => vm.group));
    const strategy =
      phase.action === 'reboot' && this.variant.strategy !== null
        ? this.variant.strategy
        : (phase.strategy ?? defaultStrategy(phase.action));
    const running: RunningPhase = {
      phase,
      index,
      strategy: strategy,
      vms: this.fleet.vms.filter((vm) => selected.has(vm.group) && !this.gone.has(vm.id)),
      startedAt: t,
      endedAt: t,
      issued: 0,
      inFlight: 0,
      exhausted: false,
    };
    this.current = running;
    this.boundaries.push(t);
    this.roundRobin = 0;
    this.wave = null;
    this.arrivals = null;
    this.spans.push({
      name: phase.name,
      kind: phase.kind,
      startedAt: t,
      endedAt: t,
      operations: 0,
    });
    switch (phase.kind) {
      case 'storm':
        for (const vm of running.vms) this.issue(running, vm, out);
        running.exhausted = true;
        break;
      case 'rolling':
        this.startWave(running, phase.maxPerHost, phase.maxInFleet, out);
        break;
      case 'arrivals':
        this.arrivals = { times: arrivalTimes(phase, t, this.random), next: 0 };
        if (this.arrivals.times.length === 0) running.exhausted = true;
        else out.push(...this.tick(t));
        break;
      case 'closed-loop':
        this.refill(running, out);
        break;
    }
    this.endIfOver(t, out);
  }

  private issue(phase: RunningPhase, vm: FleetVm, out: PhaseRequest[]): void {
    this.busy.add(vm.id);
    phase.issued += 1;
    phase.inFlight += 1;
    (this.spans[this.spans.length - 1] as PhaseSpan).operations += 1;
    out.push({
      phase: phase.phase.name,
      vmId: vm.id,
      action: phase.phase.action,
      strategy: phase.strategy,
    });
  }

  private endIfOver(t: number, out: PhaseRequest[]): void {
    const phase = this.current;
    if (phase === null || !phase.exhausted || phase.inFlight > 0) return;
    const span = this.spans[this.spans.length - 1] as PhaseSpan;
    span.endedAt = Math.max(phase.endedAt, t);
    this.boundaries.push(span.endedAt);
    this.current = null;
    this.wave = null;
    this.arrivals = null;
    this.scheduleNextPhase(span.endedAt, out);
  }

  /** The next VM of the phase not busy, round-robin; null when all are busy. */
  private nextIdle(phase: RunningPhase): FleetVm | null {
    const n = phase.vms.length;
    for (let k = 0; k < n; k += 1) {
      const vm = phase.vms[(this.roundRobin + k) % n] as FleetVm;
      if (!this.busy.has(vm.id) && !this.gone.has(vm.id)) {
        this.roundRobin = (this.roundRobin + k + 1) % n;
        return vm;
      }
    }
    return null;
  }

  private refill(phase: RunningPhase, out: PhaseRequest[]): void {
    if (phase.phase.kind !== 'closed-loop') return;
    const { concurrency, operations } = phase.phase;
    while (phase.issued < operations && phase.inFlight < concurrency) {
      const vm = this.nextIdle(phase);
      if (vm === null) break;
      this.issue(phase, vm, out);
    }
    if (phase.issued >= operations || (phase.inFlight === 0 && this.nextIdle(phase) === null)) {
      phase.exhausted = true;
    }
  }

  private startWave(
    phase: RunningPhase,
    maxPerHost: number,
    maxInFleet: number | null,
    out: PhaseRequest[],
  ): void {
    const hostIndex = new Map(this.fleet.hosts.map((h, i) => [h.id, i]));
    const queues: FleetVm[][] = this.fleet.hosts.map(() => []);
    const hostOf = new Map<string, number>();
    for (const vm of phase.vms) {
      const i = hostIndex.get(vm.hostId) as number;
      queues[i]?.push(vm);
      hostOf.set(vm.id, i);
    }
    const wave: Wave = {
      queues,
      heads: new Int32Array(queues.length),
      inFlight: new Int32Array(queues.length),
      hostOf,
      ready: new IndexHeap(queues.length),
      maxPerHost: this.variant.maxPerHost ?? maxPerHost,
      maxInFleet: maxInFleet ?? Infinity,
    };
    queues.forEach((queue, i) => {
      if (queue.length > 0) wave.ready.push(i);
    });
    this.wave = wave;
    this.fillWave(phase, out);
  }

  private waveEnded(phase: RunningPhase, vmId: string, out: PhaseRequest[]): void {
    const wave = this.wave;
    if (wave === null) return;
    const i = wave.hostOf.get(vmId) as number;
    wave.inFlight[i] = (wave.inFlight[i] as number) - 1;
    if ((wave.heads[i] as number) < (wave.queues[i] as FleetVm[]).length) wave.ready.push(i);
    this.fillWave(phase, out);
  }

  /** Issues from the first hosts with VMs left and a free slot, while the fleet has room. */
  private fillWave(phase: RunningPhase, out: PhaseRequest[]): void {
    const wave = this.wave as Wave;
    while (wave.ready.size > 0 && phase.inFlight < wave.maxInFleet) {
      const i = wave.ready.pop();
      const queue = wave.queues[i] as FleetVm[];
      const vm = queue[wave.heads[i] as number] as FleetVm;
      wave.heads[i] = (wave.heads[i] as number) + 1;
      wave.inFlight[i] = (wave.inFlight[i] as number) + 1;
      this.issue(phase, vm, out);
      if (wave.heads[i] < queue.length && wave.inFlight[i] < wave.maxPerHost) {
        wave.ready.push(i);
      }
    }
    let left = 0;
    for (let i = 0; i < wave.queues.length; i += 1) {
      left += (wave.queues[i] as FleetVm[]).length - (wave.heads[i] as number);
    }
    if (left === 0) phase.exhausted = true;
  }
}

/**
 * The arrival times of an open-model phase in [t0, t0 + duration): evenly spaced at a constant
 * rate, with a rate that changes linearly for a ramp (the inverse of the cumulative rate), or
 * with exponential gaps for Poisson arrivals.
 */
export function arrivalTimes(phase: Phase, t0: number, random: () => number): number[] {
  if (phase.kind !== 'arrivals') return [];
  const { rate, durationSeconds: d } = phase;
  const times: number[] = [];
  switch (rate.kind) {
    case 'constant':
      for (let k = 0; k / rate.perSecond < d; k += 1) times.push(t0 + k / rate.perSecond);
      break;
    case 'ramp': {
      // Cumulative arrivals by time s: a s + (b - a) s^2 / (2 d); arrival k at the s where it is k.
      const a = rate.fromPerSecond;
      const b = rate.toPerSecond;
      const slope = (b - a) / d;
      for (let k = 0; ; k += 1) {
        const s = Math.abs(slope) < 1e-12 ? k / a : (-a + Math.sqrt(a * a + 2 * slope * k)) / slope;
        if (!(s < d)) break;
        times.push(t0 + s);
      }
      break;
    }
    case 'poisson': {
      let s = -Math.log(1 - random()) / rate.perSecond;
      while (s < d) {
        times.push(t0 + s);
        s += -Math.log(1 - random()) / rate.perSecond;
      }
      break;
    }
  }
  return times;
}
