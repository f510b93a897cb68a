import { Module } from '@nestjs/common';
import { MetricsModule } from '#metrics';
import { WorkersModule } from '#queue';

/** The queue processors that execute operations step by step, and their metrics. */
@Module({ imports: [MetricsModule, WorkersModule] })
export class WorkerModule {}
