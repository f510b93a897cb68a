import { Module } from '@nestjs/common';

/** The job API (`/v1`): hosts, VMs, jobs, batches, events. Its controllers come next. */
@Module({})
export class ApiModule {}
