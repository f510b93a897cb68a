import { type ServerResponse } from 'node:http';
import { Controller, Get, Query, Res } from '@nestjs/common';
import { ApiOperation, ApiProduces, ApiQuery, ApiResponse, ApiTags } from '@nestjs/swagger';
import { ApiErrors } from './api-responses.decorator.js';
import { EVENT_SCHEMAS, type EventFilter, eventFilterSchema } from './event.dto.js';
import { EventStreamService } from './event-stream.service.js';
import { ZodValidationPipe } from './zod-validation.pipe.js';

/** The reply a streaming route takes over from the framework. */
interface RawReply {
  readonly raw: ServerResponse;
  hijack(): unknown;
}

@ApiTags('events')
@Controller('v1/events')
export class EventsController {
  constructor(private readonly streams: EventStreamService) {}

  @Get()
  @ApiOperation({
    summary: 'Lifecycle events as server-sent events',
    description:
      'One `event: <type>` and `data: <json>` per event (job.started, job.step, job.waiting, ' +
      'job.finished, vm.state), a `: heartbeat` comment every 15 s. Events that happen while ' +
      'no stream is open are not replayed: read the job or VM after (re)connecting.',
  })
  @ApiProduces('text/event-stream')
  @ApiQuery({ name: 'hostId', required: false })
  @ApiQuery({ name: 'vmId', required: false })
  @ApiQuery({ name: 'jobId', required: false })
  @ApiResponse({
    status: 200,
    description: 'A text/event-stream; each data line is this JSON',
    content: { 'text/event-stream': { schema: EVENT_SCHEMAS.event } },
  })
  @ApiErrors(400)
  stream(
    @Query(new ZodValidationPipe(eventFilterSchema)) filter: EventFilter,
    @Res() reply: RawReply,
  ): void {
    reply.hijack();
    this.streams.stream(reply.raw, filter);
  }
}
