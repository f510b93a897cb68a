import { Body, Controller, Get, HttpCode, Param, Post, Query, Res } from '@nestjs/common';
import {
  ApiBearerAuth,
  ApiBody,
  ApiOperation,
  ApiParam,
  ApiQuery,
  ApiResponse,
  ApiTags,
} from '@nestjs/swagger';
import type { JobView, VmView } from '#fleet';
import { FleetService, type Idempotency } from '#queue';
import { ApiErrors, ApiIdempotent } from './api-responses.decorator.js';
import { IdempotencyKey, markReplayed, type ReplyHeaders } from './idempotency.decorator.js';
import { JOB_SCHEMAS } from './job.dto.js';
import {
  type CreateVmDto,
  createVmSchema,
  listVmsQuerySchema,
  memoryBytesOf,
  type RebootDto,
  rebootSchema,
  type TerminateDto,
  terminateSchema,
  VM_SCHEMAS,
  vmStateSchema,
} from './vm.dto.js';
import { ZodValidationPipe } from './zod-validation.pipe.js';

const BUSY_OR_KERNEL: [number, string] = [
  409,
  'vm_busy (details.jobId: the running job), vm_state_conflict (a terminated VM), ' +
    "kernel_feature_missing (details.feature: what the host's kernel lacks; the VM is untouched) " +
    'or idempotency_conflict (the key was used for another request)',
];

@ApiTags('vms')
@Controller('v1/vms')
export class VmsController {
  constructor(private readonly fleet: FleetService) {}

  @Post()
  @HttpCode(202)
  @ApiBearerAuth()
  @ApiIdempotent()
  @ApiOperation({ summary: 'Create a VM and queue its boot (on hostId, or placed by the server)' })
  @ApiBody({ schema: VM_SCHEMAS.create })
  @ApiResponse({ status: 202, description: 'The VM and its boot job', schema: VM_SCHEMAS.vmAndJob })
  @ApiErrors(
    400,
    401,
    [404, 'No host with that hostId: code not_found'],
    [409, 'already_exists (a VM that is not terminated has the id) or idempotency_conflict'],
    422,
  )
  async create(
    @Body(new ZodValidationPipe(createVmSchema)) body: CreateVmDto,
    @IdempotencyKey() idempotency: Idempotency | undefined,
    @Res({ passthrough: true }) reply: ReplyHeaders,
  ): Promise<{ vm: VmView; job: JobView }> {
    const input = {
      ...(body.id === undefined ? {} : { id: body.id }),
      ...(body.hostId === undefined ? {} : { hostId: body.hostId }),
      vcpus: body.vcpus,
      memoryBytes: memoryBytesOf(body),
    };
    const { vm, job, replayed } = await this.fleet.createVm(input, idempotency);
    markReplayed(reply, replayed);
    return { vm, job };
  }

  @Get()
  @ApiOperation({
    summary: 'Every VM, optionally of one host or in one state',
    description:
      'A terminated VM is listed, like GET /v1/vms/{id} shows it, for 7 days after its terminate.',
  })
  @ApiQuery({ name: 'hostId', required: false })
  @ApiQuery({ name: 'state', required: false, enum: vmStateSchema.options })
  @ApiResponse({ status: 200, description: 'The VMs, oldest first', schema: VM_SCHEMAS.list })
  @ApiErrors(400, [404, 'No host with that hostId: code not_found'])
  async list(
    @Query(new ZodValidationPipe(listVmsQuerySchema))
    query: {
      hostId?: string;
      state?: VmView['state'];
    },
  ): Promise<{ vms: VmView[] }> {
    return { vms: await this.fleet.listVms(query) };
  }

  @Get(':id')
  @ApiOperation({
    summary: 'A VM: state, host, HKID, generation, memslots, guest_memfds',
    description:
      'A terminated VM is shown for 7 days after its terminate, then it is unknown (404).',
  })
  @ApiParam({ name: 'id' })
  @ApiResponse({ status: 200, description: 'The VM', schema: VM_SCHEMAS.view })
  @ApiErrors(404)
  get(@Param('id') id: string): Promise<VmView> {
    return this.fleet.getVm(id);
  }

  @Post(':id/reboot')
  @HttpCode(202)
  @ApiBearerAuth()
  @ApiIdempotent()
  @ApiOperation({ summary: 'Queue a reboot of the VM with a strategy' })
  @ApiParam({ name: 'id' })
  @ApiBody({ schema: VM_SCHEMAS.reboot })
  @ApiResponse({ status: 202, description: 'The reboot job', schema: JOB_SCHEMAS.envelope })
  @ApiErrors(400, 401, 404, BUSY_OR_KERNEL)
  async reboot(
    @Param('id') id: string,
    @Body(new ZodValidationPipe(rebootSchema)) body: RebootDto,
    @IdempotencyKey() idempotency: Idempotency | undefined,
    @Res({ passthrough: true }) reply: ReplyHeaders,
  ): Promise<{ job: JobView }> {
    const { job, replayed } = await this.fleet.submit(id, 'reboot', body.strategy, idempotency);
    markReplayed(reply, replayed);
    return { job };
  }

  @Post(':id/terminate')
  @HttpCode(202)
  @ApiBearerAuth()
  @ApiIdempotent()
  @ApiOperation({ summary: 'Queue the termination of the VM with a strategy' })
  @ApiParam({ name: 'id' })
  @ApiBody({ schema: VM_SCHEMAS.terminate })
  @ApiResponse({ status: 202, description: 'The terminate job', schema: JOB_SCHEMAS.envelope })
  @ApiErrors(400, 401, 404, BUSY_OR_KERNEL)
  async terminate(
    @Param('id') id: string,
    @Body(new ZodValidationPipe(terminateSchema)) body: TerminateDto,
    @IdempotencyKey() idempotency: Idempotency | undefined,
    @Res({ passthrough: true }) reply: ReplyHeaders,
  ): Promise<{ job: JobView }> {
    const { job, replayed } = await this.fleet.submit(id, 'terminate', body.strategy, idempotency);
    markReplayed(reply, replayed);
    return { job };
  }
}
