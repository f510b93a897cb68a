export * from './batch-runner.js';
export * from './fleet-workers.js';
export * from './fleet.module.js';
export * from './fleet.service.js';
export * from './job-payloads.js';
export * from './operation-runner.js';
export * from './queues.js';
export * from './workers.module.js';
