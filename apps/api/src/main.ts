import { runService } from '#http';
import { ApiModule } from './api.module.js';
import { API_OPENAPI_INFO } from './openapi-info.js';

await runService({
  name: 'api',
  port: (config) => config.port,
  imports: [ApiModule],
  openApi: API_OPENAPI_INFO,
});
