import { Module } from '@nestjs/common';
import { FleetModule } from '#queue';
import { QueueDashboard } from './queue-dashboard.js';

/** bull-board over the fleet's queues at `/admin/queues`, behind the API's bearer token. */
@Module({ imports: [FleetModule], providers: [QueueDashboard] })
export class QueueDashboardModule {}
