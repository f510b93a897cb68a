import { Body, Controller, Get, HttpCode, Param, Post } from '@nestjs/common';
import {
  ApiBearerAuth,
  ApiBody,
  ApiOperation,
  ApiParam,
  ApiResponse,
  ApiTags,
} from '@nestjs/swagger';
import { type BatchView } from '#fleet';
import { FleetService } from '#queue';
import { ApiErrors } from './api-responses.decorator.js';
import { BATCH_SCHEMAS, type CreateBatchDto, createBatchSchema } from './batch.dto.js';
import { ZodValidationPipe } from './zod-validation.pipe.js';

@ApiTags('batches')
@Controller('v1/batches')
export class BatchesController {
  constructor(private readonly fleet: FleetService) {}

  @Post()
  @HttpCode(202)
  @ApiBearerAuth()
  @ApiOperation({
    summary: 'Reboot or terminate a set of VMs with bounded concurrency and rate',
    description:
      'The VMs are chosen now; a worker submits their operations. A VM whose operation is ' +
      'refused (busy, unsupported strategy, unknown) is a rejected member; the others go on.',
  })
  @ApiBody({ schema: BATCH_SCHEMAS.create })
  @ApiResponse({ status: 202, description: 'The batch', schema: BATCH_SCHEMAS.view })
  @ApiErrors(400, 401)
  create(@Body(new ZodValidationPipe(createBatchSchema)) body: CreateBatchDto): Promise<BatchView> {
    return this.fleet.createBatch({ ...body, ratePerSecond: body.ratePerSecond ?? null });
  }

  @Get(':id')
  @ApiOperation({ summary: "A batch and each VM's outcome" })
  @ApiParam({ name: 'id' })
  @ApiResponse({ status: 200, description: 'The batch', schema: BATCH_SCHEMAS.view })
  @ApiErrors(404)
  get(@Param('id') id: string): Promise<BatchView> {
    return this.fleet.getBatch(id);
  }
}
