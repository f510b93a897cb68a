import { runService } from '#http';
import { ApiModule } from '../../api/src/api.module.js';
import { API_OPENAPI_INFO } from '../../api/src/openapi-info.js';
import { WorkerModule } from '../../worker/src/worker.module.js';

// The embedded default: the API and the workers in one process.
await runService({
  name: 'fleetd',
  port: (config) => config.port,
  imports: [ApiModule, WorkerModule],
  openApi: API_OPENAPI_INFO,
});
