import { Controller, Get } from '@nestjs/common';
import {
  ApiOkResponse,
  ApiOperation,
  ApiServiceUnavailableResponse,
  ApiTags,
} from '@nestjs/swagger';
import { NotReadyError } from './api-error.js';
import { ERROR_BODY_SCHEMA } from './openapi.js';
import { ReadinessService } from './readiness.service.js';

@ApiTags('health')
@Controller()
export class HealthController {
  constructor(private readonly readiness: ReadinessService) {}

  @Get('healthz')
  @ApiOperation({ summary: 'Liveness: the process is up and serving HTTP' })
  @ApiOkResponse({
    schema: { type: 'object', properties: { status: { type: 'string', enum: ['ok'] } } },
  })
  healthz(): { status: 'ok' } {
    return { status: 'ok' };
  }

  @Get('readyz')
  @ApiOperation({ summary: 'Readiness: Redis answers and every component is running' })
  @ApiOkResponse({
    schema: {
      type: 'object',
      properties: {
        status: { type: 'string', enum: ['ok'] },
        checks: { type: 'object', additionalProperties: { type: 'string' } },
      },
    },
  })
  @ApiServiceUnavailableResponse({ description: 'not ready', schema: ERROR_BODY_SCHEMA })
  async readyz(): Promise<{ status: 'ok'; checks: Readonly<Record<string, string>> }> {
    const readiness = await this.readiness.check();
    if (!readiness.ready) {
      const failing = Object.entries(readiness.checks)
        .filter(([, state]) => state !== 'ok')
        .map(([name, reason]) => `${name}: ${reason}`);
      throw new NotReadyError(`not ready (${failing.join('; ')})`, { checks: readiness.checks });
    }
    return { status: 'ok', checks: readiness.checks };
  }
}
