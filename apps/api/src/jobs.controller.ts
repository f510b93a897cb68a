import { Controller, Delete, Get, HttpCode, Param } from '@nestjs/common';
import { ApiBearerAuth, ApiOperation, ApiParam, ApiResponse, ApiTags } from '@nestjs/swagger';
import { type JobView } from '#fleet';
import { FleetService } from '#queue';
import { ApiErrors } from './api-responses.decorator.js';
import { JOB_SCHEMAS } from './job.dto.js';

@ApiTags('jobs')
@Controller('v1/jobs')
export class JobsController {
  constructor(private readonly fleet: FleetService) {}

  @Get(':id')
  @ApiOperation({ summary: 'A job: state, progress, steps with their times and errnos, result' })
  @ApiParam({ name: 'id' })
  @ApiResponse({ status: 200, description: 'The job', schema: JOB_SCHEMAS.view })
  @ApiErrors(404)
  get(@Param('id') id: string): Promise<JobView> {
    return this.fleet.getJob(id);
  }

  @Delete(':id')
  @HttpCode(202)
  @ApiBearerAuth()
  @ApiOperation({
    summary: 'Cancel a job',
    description:
      'A queued job is cancelled at once and the VM is left as it was (a VM whose boot is ' +
      'cancelled is stopped). A running job stops at its next step boundary: the answer has ' +
      'cancelRequested true, and the job ends cancelled with the VM stopped and what it held ' +
      'given back to the host.',
  })
  @ApiParam({ name: 'id' })
  @ApiResponse({
    status: 202,
    description: 'The job, cancelled or asked to stop',
    schema: JOB_SCHEMAS.envelope,
  })
  @ApiErrors(401, 404, [409, 'The job has already ended: code job_finished'])
  async cancel(@Param('id') id: string): Promise<{ job: JobView }> {
    return { job: await this.fleet.cancelJob(id) };
  }
}
