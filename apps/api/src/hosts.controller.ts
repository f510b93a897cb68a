import { Body, Controller, Get, HttpCode, Param, Post } from '@nestjs/common';
import {
  ApiBearerAuth,
  ApiBody,
  ApiOperation,
  ApiParam,
  ApiResponse,
  ApiTags,
} from '@nestjs/swagger';
import { type HostView } from '#fleet';
import { FleetService } from '#queue';
import { ApiErrors } from './api-responses.decorator.js';
import { type CreateHostDto, createHostSchema, HOST_SCHEMAS } from './host.dto.js';
import { ZodValidationPipe } from './zod-validation.pipe.js';

@ApiTags('hosts')
@Controller('v1/hosts')
export class HostsController {
  constructor(private readonly fleet: FleetService) {}

  @Post()
  @HttpCode(201)
  @ApiBearerAuth()
  @ApiOperation({ summary: 'Add a simulated host: capacity and kernel switches' })
  @ApiBody({ schema: HOST_SCHEMAS.create })
  @ApiResponse({ status: 201, description: 'The host', schema: HOST_SCHEMAS.view })
  @ApiErrors(400, 401, [409, 'A host with that id exists: code already_exists'])
  create(@Body(new ZodValidationPipe(createHostSchema)) body: CreateHostDto): Promise<HostView> {
    return this.fleet.createHost(body);
  }

  @Get()
  @ApiOperation({ summary: 'Every host with its usage' })
  @ApiResponse({ status: 200, description: 'The hosts, by id', schema: HOST_SCHEMAS.list })
  async list(): Promise<{ hosts: HostView[] }> {
    return { hosts: await this.fleet.listHosts() };
  }

  @Get(':id')
  @ApiOperation({ summary: 'A host: capacity, kernel, memory and HKID usage' })
  @ApiParam({ name: 'id' })
  @ApiResponse({ status: 200, description: 'The host', schema: HOST_SCHEMAS.view })
  @ApiErrors(404)
  get(@Param('id') id: string): Promise<HostView> {
    return this.fleet.getHost(id);
  }
}
