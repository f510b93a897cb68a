import { runService } from '#http';
import { WorkerModule } from './worker.module.js';

await runService({
  name: 'worker',
  port: (config) => config.workerPort,
  imports: [WorkerModule],
});
