import { Body, Controller, Get, HttpCode, Param, Post, Put } from '@nestjs/common';
import {
  ApiBearerAuth,
  ApiBody,
  ApiOperation,
  ApiParam,
  ApiResponse,
  ApiTags,
} from '@nestjs/swagger';
import { type HostView } from '#fleet';
import { FleetService, HostFaultsService } from '#queue';
import { ApiErrors } from './api-responses.decorator.js';
import {
  type CreateHostDto,
  createHostSchema,
  HOST_SCHEMAS,
  type HkidReleaseFaultsDto,
  hkidReleaseFaultsSchema,
} from './host.dto.js';
import { ZodValidationPipe } from './zod-validation.pipe.js';

@ApiTags('hosts')
@Controller('v1/hosts')
export class HostsController {
  constructor(
    private readonly fleet: FleetService,
    private readonly faults: HostFaultsService,
  ) {}

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

  @Put(':id/faults')
  @ApiBearerAuth()
  @ApiOperation({
    summary: 'Set which HKID release attempts fail on a host, for experiments',
    description:
      'Replaces the setting and counts attempts afresh; the setting the host has already changes ' +
      'nothing. An empty object: no release fails.',
  })
  @ApiParam({ name: 'id' })
  @ApiBody({ schema: HOST_SCHEMAS.faults })
  @ApiResponse({ status: 200, description: 'The host', schema: HOST_SCHEMAS.view })
  @ApiErrors(400, 401, 404)
  setFaults(
    @Param('id') id: string,
    @Body(new ZodValidationPipe(hkidReleaseFaultsSchema)) body: HkidReleaseFaultsDto,
  ): Promise<HostView> {
    return this.faults.setReleaseFaults(id, body);
  }
}
