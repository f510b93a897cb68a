import { type ServerResponse } from 'node:http';
import {
  type BeforeApplicationShutdown,
  Inject,
  Injectable,
  type OnApplicationShutdown,
  type OnModuleInit,
} from '@nestjs/common';
import { type FleetEvent } from '#fleet';
import { ReadinessService } from '#http';
import { LOGGER } from '#logging';
import { RedisConnection } from '#redis';
import { FleetEvents, FleetStore } from '#store';
import { type Logger } from 'pino';
import { type EventFilter } from './event.dto.js';

/** How event streams behave. */
export interface EventStreamOptions {
  /** A comment line this often keeps proxies from closing a quiet stream. */
  readonly heartbeatMs: number;
  /** A client that falls this far behind is disconnected (it may reconnect). */
  readonly maxBufferedBytes: number;
}

export const EVENT_STREAM_OPTIONS = Symbol('EVENT_STREAM_OPTIONS');

export const DEFAULT_EVENT_STREAM_OPTIONS: EventStreamOptions = {
  heartbeatMs: 15_000,
  maxBufferedBytes: 1024 * 1024,
};

const STREAM_HEADERS = {
  'content-type': 'text/event-stream; charset=utf-8',
  'cache-control': 'no-cache, no-transform',
  connection: 'keep-alive',
  'x-accel-buffering': 'no',
};

function matches(filter: EventFilter, event: FleetEvent): boolean {
  return (
    (filter.hostId === undefined || filter.hostId === event.hostId) &&
    (filter.vmId === undefined || filter.vmId === event.vmId) &&
    (filter.jobId === undefined || filter.jobId === event.jobId)
  );
}

/** One event in the text/event-stream format. */
export function formatEvent(event: FleetEvent): string {
  return `event: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`;
}

/**
 * Server-sent events: the fleet's lifecycle events, fanned out from one Redis subscription to
 * every open stream. A stream ends when its client goes away, when the client falls too far
 * behind, and before the HTTP server closes (so open streams never hold up a shutdown).
 */
@Injectable()
export class EventStreamService
  implements OnModuleInit, BeforeApplicationShutdown, OnApplicationShutdown
{
  private readonly events: FleetEvents;
  private readonly open = new Set<() => void>();
  private closing = false;

  constructor(
    redis: RedisConnection,
    store: FleetStore,
    private readonly readiness: ReadinessService,
    @Inject(LOGGER) private readonly log: Logger,
    @Inject(EVENT_STREAM_OPTIONS) private readonly options: EventStreamOptions,
  ) {
    this.events = new FleetEvents(redis.url, store.keys, (error: unknown) =>
      this.log.warn({ err: error }, 'event subscription error'),
    );
  }

  async onModuleInit(): Promise<void> {
    await this.events.start();
    this.readiness.register('events', () =>
      Promise.resolve(
        this.events.ready ? { ok: true } : { ok: false, reason: 'not subscribed to events' },
      ),
    );
  }

  /** Open streams, for tests and metrics. */
  get streams(): number {
    return this.open.size;
  }

  /** Streams the events that match `filter` to `response` until one side goes away. */
  stream(response: ServerResponse, filter: EventFilter): void {
    response.writeHead(200, STREAM_HEADERS);
    if (this.closing) {
      response.end();
      return;
    }
    let closed = false;
    const close = (): void => {
      if (closed) return;
      closed = true;
      clearInterval(heartbeat);
      unsubscribe();
      this.open.delete(close);
      if (!response.writableEnded) response.end();
    };
    const write = (chunk: string): void => {
      if (closed || response.writableEnded) return;
      response.write(chunk);
      if (response.writableLength > this.options.maxBufferedBytes) {
        this.log.warn({ buffered: response.writableLength }, 'event stream client too slow');
        close();
      }
    };
    const unsubscribe = this.events.subscribe((event) => {
      if (matches(filter, event)) write(formatEvent(event));
    });
    const heartbeat = setInterval(() => write(': heartbeat\n\n'), this.options.heartbeatMs);
    response.on('close', close);
    this.open.add(close);
    // Subscribed before this first line, so a client that has read it misses nothing after.
    write('retry: 2000\n: connected\n\n');
  }

  beforeApplicationShutdown(): void {
    this.closing = true;
    for (const close of [...this.open]) close();
  }

  async onApplicationShutdown(): Promise<void> {
    await this.events.close();
  }
}
