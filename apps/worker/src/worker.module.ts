import { Module } from '@nestjs/common';
import { WorkersModule } from '#queue';

/** The queue processors that execute operations step by step. */
@Module({ imports: [WorkersModule] })
export class WorkerModule {}
