import { Controller, Get, Inject } from '@nestjs/common';
import { ApiOperation, ApiResponse, ApiTags } from '@nestjs/swagger';
import { APP_CONFIG, type AppConfig } from '#config';
import { type DaemonInfo, INFO_SCHEMAS, daemonInfo } from './info.dto.js';

@ApiTags('info')
@Controller('v1/info')
export class InfoController {
  private readonly info: DaemonInfo;

  constructor(@Inject(APP_CONFIG) config: AppConfig) {
    this.info = daemonInfo(config);
  }

  @Get()
  @ApiOperation({
    summary: 'The settings that shape when operations run: TIME_SCALE and the concurrency limits',
  })
  @ApiResponse({ status: 200, description: 'The settings', schema: INFO_SCHEMAS.view })
  get(): DaemonInfo {
    return this.info;
  }
}
