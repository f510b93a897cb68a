import type { FleetEvent } from '#fleet';
import { Redis } from 'ioredis';
import type { FleetKeys } from './keys.js';

/** Receives each lifecycle event published by any process of the fleet. */
export type FleetEventListener = (event: FleetEvent) => void;

const EVENT_TYPES: ReadonlySet<string> = new Set<FleetEvent['type']>([
  'job.started',
  'job.step',
  'job.waiting',
  'job.finished',
  'vm.state',
]);

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isEvent(value: unknown): value is FleetEvent {
  return (
    isRecord(value) &&
    typeof value.type === 'string' &&
    EVENT_TYPES.has(value.type) &&
    typeof value.atMs === 'number' &&
    typeof value.virtualTime === 'number' &&
    typeof value.hostId === 'string' &&
    typeof value.vmId === 'string' &&
    typeof value.jobId === 'string' &&
    (value.step === undefined || typeof value.step === 'string') &&
    (value.state === undefined || typeof value.state === 'string') &&
    (value.errno === undefined || typeof value.errno === 'string')
  );
}

/** One job's events of a commit, sent once with what they share. */
interface JobEvents {
  hostId: string;
  vmId: string;
  jobId: string;
  atMs: number;
  events: Array<Omit<FleetEvent, 'hostId' | 'vmId' | 'jobId' | 'atMs'>>;
}

/**
 * One pub/sub message for the events of a commit: grouped by job, so what every event of a job
 * shares (host, VM, job, time) is sent once rather than with each of its steps.
 */
export function encodeFleetEvents(events: readonly FleetEvent[]): string {
  const groups: JobEvents[] = [];
  let group: JobEvents | undefined;
  for (const { hostId, vmId, jobId, atMs, ...rest } of events) {
    if (
      group?.jobId !== jobId ||
      group.vmId !== vmId ||
      group.hostId !== hostId ||
      group.atMs !== atMs
    ) {
      group = { hostId, vmId, jobId, atMs, events: [] };
      groups.push(group);
    }
    group.events.push(rest);
  }
  return JSON.stringify(groups);
}

/**
 * Parses one pub/sub message: what {@link encodeFleetEvents} sends, or a plain array of events
 * (what earlier versions sent). Redis content is input like any other: anything that is not an
 * event is left out.
 */
export function parseFleetEvents(message: string): FleetEvent[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(message);
  } catch {
    return [];
  }
  if (!Array.isArray(parsed)) return [];
  return parsed
    .flatMap((item: unknown): unknown[] => {
      if (!isRecord(item) || !Array.isArray(item.events)) return [item];
      const { hostId, vmId, jobId, atMs } = item;
      return item.events.map((event: unknown) =>
        isRecord(event) ? { ...event, hostId, vmId, jobId, atMs } : event,
      );
    })
    .filter(isEvent);
}

/**
 * The fleet's lifecycle events as they are published: subscribes to the events channel on a
 * connection of its own (a subscribed connection can do nothing else) and hands each event to
 * every listener. ioredis subscribes again by itself after a reconnect.
 */
export class FleetEvents {
  private readonly redis: Redis;
  private readonly listeners = new Set<FleetEventListener>();
  private subscribed = false;

  constructor(
    redisUrl: string,
    private readonly keys: FleetKeys,
    /** Told of connection errors (once per distinct message) and of listeners that threw. */
    private readonly onError: (error: unknown) => void = () => undefined,
  ) {
    // Connects in start(), never in the constructor; retries forever once subscribed.
    this.redis = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: null });
  }

  /** Connected and subscribed (events published now will arrive). */
  get ready(): boolean {
    return this.subscribed && this.redis.status === 'ready';
  }

  async start(): Promise<void> {
    this.redis.on('message', (channel: string, message: string) => {
      if (channel !== this.keys.events) return;
      for (const event of parseFleetEvents(message)) this.emit(event);
    });
    let lastError = '';
    this.redis.on('error', (error: Error) => {
      // Once per distinct failure: a Redis that is down would otherwise flood the log.
      if (error.message === lastError) return;
      lastError = error.message;
      this.onError(error);
    });
    this.redis.on('ready', () => (lastError = ''));
    await this.redis.connect();
    await this.redis.subscribe(this.keys.events);
    this.subscribed = true;
  }

  /** Adds a listener; returns the function that removes it. */
  subscribe(listener: FleetEventListener): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  get listenerCount(): number {
    return this.listeners.size;
  }

  async close(): Promise<void> {
    this.listeners.clear();
    this.subscribed = false;
    if (this.redis.status === 'end' || this.redis.status === 'wait') {
      this.redis.disconnect();
      return;
    }
    await this.redis.quit().catch(() => this.redis.disconnect());
  }

  private emit(event: FleetEvent): void {
    for (const listener of [...this.listeners]) {
      try {
        listener(event);
      } catch (error) {
        this.onError(error);
      }
    }
  }
}
