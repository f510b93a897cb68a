import { Module } from '@nestjs/common';
import { APP_FILTER, APP_GUARD } from '@nestjs/core';
import { BearerTokenGuard } from './bearer-token.guard.js';
import { ErrorResponseFilter } from './error-response.filter.js';
import { HealthController } from './health.controller.js';
import { ReadinessService } from './readiness.service.js';

/** What every HTTP process serves: health, the error shape, and auth on mutating calls. */
@Module({
  controllers: [HealthController],
  providers: [
    ReadinessService,
    { provide: APP_FILTER, useClass: ErrorResponseFilter },
    { provide: APP_GUARD, useClass: BearerTokenGuard },
  ],
  exports: [ReadinessService],
})
export class HttpModule {}
