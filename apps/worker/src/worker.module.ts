import { Module } from '@nestjs/common';

/** The queue processors that execute operations step by step. They come next. */
@Module({})
export class WorkerModule {}
