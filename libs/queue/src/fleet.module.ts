import { Global, Inject, Injectable, Module, type OnApplicationShutdown } from '@nestjs/common';
import { APP_CONFIG, type AppConfig } from '#config';
import { LOGGER } from '#logging';
import { RedisConnection } from '#redis';
import { FleetStore } from '#store';
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { DEFAULT_ENVIRONMENT, FleetService } from './fleet.service.js';
import { HostFaultsService } from './host-faults.service.js';
import { FleetQueues } from './queues.js';

/**
 * The fleet's Redis adapters for one process, each on a connection of its own (created here,
 * before the shared client connects), closed on shutdown before the shared client.
 */
@Injectable()
export class FleetConnections implements OnApplicationShutdown {
  readonly store: FleetStore;
  readonly queues: FleetQueues;
  readonly service: FleetService;
  readonly faults: HostFaultsService;
  private readonly storeConnection: Redis;
  private readonly queueConnection: Redis;

  constructor(
    @Inject(APP_CONFIG) config: AppConfig,
    @Inject(LOGGER) log: Logger,
    redis: RedisConnection,
  ) {
    // Commands fail after a couple of retries instead of queueing while Redis is away: the API
    // answers 503 and the workers retry the job.
    const options = { maxRetriesPerRequest: 2, connectTimeout: 2000, commandTimeout: 5000 };
    this.storeConnection = new Redis(redis.url, options);
    this.queueConnection = new Redis(redis.url, options);
    this.store = new FleetStore(this.storeConnection, config.keyPrefix);
    // A Redis that goes away is logged once per kind of failure, not once per retry.
    let lastError = '';
    const logError = (what: string) => (error: Error) => {
      if (error.message === lastError) return;
      lastError = error.message;
      log.warn({ err: error }, `${what}: Redis error`);
    };
    this.storeConnection.on('error', logError('store'));
    this.queueConnection.on('error', logError('queues'));
    this.queues = new FleetQueues(this.queueConnection, this.store.keys.queuePrefix);
    this.queues.operations.on('error', logError('operations queue'));
    this.queues.batches.on('error', logError('batches queue'));
    this.service = new FleetService(this.store, this.queues, {
      ...DEFAULT_ENVIRONMENT,
      timeScale: config.timeScale,
    });
    this.faults = new HostFaultsService(this.store);
  }

  async onApplicationShutdown(): Promise<void> {
    await this.queues.close();
    for (const connection of [this.queueConnection, this.storeConnection]) {
      await connection.quit().catch(() => connection.disconnect());
    }
  }
}

/** Provides the fleet's store, queues and service to the API and the workers. */
@Global()
@Module({
  providers: [
    FleetConnections,
    {
      provide: FleetStore,
      useFactory: (c: FleetConnections) => c.store,
      inject: [FleetConnections],
    },
    {
      provide: FleetQueues,
      useFactory: (c: FleetConnections) => c.queues,
      inject: [FleetConnections],
    },
    {
      provide: FleetService,
      useFactory: (c: FleetConnections) => c.service,
      inject: [FleetConnections],
    },
    {
      provide: HostFaultsService,
      useFactory: (c: FleetConnections) => c.faults,
      inject: [FleetConnections],
    },
  ],
  exports: [FleetStore, FleetQueues, FleetService, HostFaultsService],
})
export class FleetModule {}
