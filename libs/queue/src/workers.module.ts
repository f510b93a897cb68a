import {
  type BeforeApplicationShutdown,
  Inject,
  Injectable,
  Module,
  type OnApplicationBootstrap,
  Optional,
} from '@nestjs/common';
import { APP_CONFIG, type AppConfig } from '#config';
import { ReadinessService } from '#http';
import { LOGGER } from '#logging';
import { RedisConnection } from '#redis';
import { FleetStore } from '#store';
import type { Logger } from 'pino';
import { FleetModule } from './fleet.module.js';
import { FleetService } from './fleet.service.js';
import { FleetWorkers, type WorkerHooks } from './fleet-workers.js';
import { FleetQueues } from './queues.js';

/** Injection token of the hooks a process gives its workers (metrics); optional. */
export const WORKER_HOOKS = Symbol('WORKER_HOOKS');

/** How often a waiting step retries when nothing it knows of changes sooner (real ms). */
const POLL_MS = 50;

/**
 * Runs the workers with the process: started once the app is up, stopped before the queues and
 * Redis close (running operations are handed back at their next step boundary).
 */
@Injectable()
export class WorkersLifecycle implements OnApplicationBootstrap, BeforeApplicationShutdown {
  readonly workers: FleetWorkers;

  constructor(
    @Inject(APP_CONFIG) config: AppConfig,
    @Inject(LOGGER) private readonly log: Logger,
    redis: RedisConnection,
    store: FleetStore,
    queues: FleetQueues,
    service: FleetService,
    readiness: ReadinessService,
    @Optional() @Inject(WORKER_HOOKS) hooks: WorkerHooks | null,
  ) {
    this.workers = new FleetWorkers(
      store,
      queues,
      service,
      {
        redisUrl: redis.url,
        queuePrefix: store.keys.queuePrefix,
        concurrency: config.workerConcurrency,
        globalConcurrency: config.globalConcurrency ?? null,
        lockDurationMs: config.jobLockMs,
        timeScale: config.timeScale,
        hostConcurrency: config.hostConcurrency,
        stepWaitTimeoutMs: config.stepWaitTimeoutMs,
        pollMs: POLL_MS,
      },
      log,
      hooks ?? {},
    );
    readiness.register('workers', () =>
      Promise.resolve(
        this.workers.running ? { ok: true } : { ok: false, reason: 'workers not running' },
      ),
    );
  }

  async onApplicationBootstrap(): Promise<void> {
    await this.workers.start();
    this.log.info('workers started');
  }

  async beforeApplicationShutdown(): Promise<void> {
    await this.workers.stop();
    this.log.info('workers stopped');
  }
}

/** The BullMQ workers of a process (worker and fleetd). */
@Module({ imports: [FleetModule], providers: [WorkersLifecycle], exports: [WorkersLifecycle] })
export class WorkersModule {}
