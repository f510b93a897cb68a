import { Global, Module } from '@nestjs/common';
import { APP_CONFIG, type AppConfig } from '#config';
import { FleetModule, FleetQueues, FleetService, WORKER_HOOKS, type WorkerHooks } from '#queue';
import { FleetStore } from '#store';
import { FleetMetrics } from './fleet-metrics.js';
import { MetricsController } from './metrics.controller.js';

/** The process's metrics registry and its `/metrics` route. */
@Global()
@Module({
  imports: [FleetModule],
  controllers: [MetricsController],
  providers: [
    {
      provide: FleetMetrics,
      inject: [APP_CONFIG, FleetStore, FleetQueues, FleetService],
      useFactory: (
        config: AppConfig,
        store: FleetStore,
        queues: FleetQueues,
        service: FleetService,
      ) => {
        const metrics = new FleetMetrics(
          {
            hosts: () => store.listHosts(),
            terminatedVmCounts: (hostIds) => store.terminatedVmCounts(hostIds),
            queueCounts: () => queues.counts(),
          },
          { hostLabel: config.metricsHostLabel },
        );
        // A queued job cancelled through this process's API ends here, never in a worker.
        service.onOperationFinished((op) => metrics.observeFinished(op));
        return metrics;
      },
    },
    {
      // What this process's workers tell the metrics (a process without workers ignores it).
      provide: WORKER_HOOKS,
      inject: [FleetMetrics],
      useFactory: (metrics: FleetMetrics): WorkerHooks => ({
        committed: (commit) => {
          metrics.observeEvents(commit.events);
          for (const op of commit.finished) metrics.observeFinished(op);
        },
        jobStarted: (queue, waited) => metrics.observeJobWait(queue, waited),
        jobEnded: (queue, ran) => metrics.observeJobRun(queue, ran),
        jobRetried: (queue) => metrics.jobRetried(queue),
        jobStalled: (queue) => metrics.jobStalled(queue),
      }),
    },
  ],
  exports: [FleetMetrics, WORKER_HOOKS],
})
export class MetricsModule {}
