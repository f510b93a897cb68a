import { type DynamicModule, Module } from '@nestjs/common';
import { MetricsModule } from '#metrics';
import { FleetModule } from '#queue';
import { QueueDashboardModule } from '#queue-dashboard';
import { BatchesController } from './batches.controller.js';
import {
  DEFAULT_EVENT_STREAM_OPTIONS,
  EVENT_STREAM_OPTIONS,
  type EventStreamOptions,
  EventStreamService,
} from './event-stream.service.js';
import { EventsController } from './events.controller.js';
import { HostsController } from './hosts.controller.js';
import { InfoController } from './info.controller.js';
import { JobsController } from './jobs.controller.js';
import { VmsController } from './vms.controller.js';

/**
 * The job API (`/v1`): hosts, VMs, jobs, batches, events, and the settings that time them. It
 * queues jobs; whether they run in this process depends on whether the app also has the workers
 * (fleetd) or not (api).
 */
@Module({
  imports: [FleetModule, MetricsModule, QueueDashboardModule],
  controllers: [
    HostsController,
    VmsController,
    JobsController,
    BatchesController,
    EventsController,
    InfoController,
  ],
  providers: [
    EventStreamService,
    { provide: EVENT_STREAM_OPTIONS, useValue: DEFAULT_EVENT_STREAM_OPTIONS },
  ],
})
export class ApiModule {
  /** The API with other event stream settings (tests use a short heartbeat). */
  static withEventStream(options: Partial<EventStreamOptions>): DynamicModule {
    return {
      module: ApiModule,
      providers: [
        {
          provide: EVENT_STREAM_OPTIONS,
          useValue: { ...DEFAULT_EVENT_STREAM_OPTIONS, ...options },
        },
      ],
    };
  }
}
