import { Controller, Get, Header, Res } from '@nestjs/common';
import { ApiExcludeController } from '@nestjs/swagger';
import type { FastifyReply } from 'fastify';
import { FleetMetrics } from './fleet-metrics.js';

/** `GET /metrics`: the Prometheus text of this process's registry. */
@ApiExcludeController()
@Controller()
export class MetricsController {
  constructor(private readonly metrics: FleetMetrics) {}

  @Get('metrics')
  @Header('Cache-Control', 'no-store')
  async scrape(@Res() reply: FastifyReply): Promise<void> {
    const { contentType, body } = await this.metrics.text();
    await reply.header('Content-Type', contentType).send(body);
  }
}
