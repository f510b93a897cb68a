export * from './fleet-metrics.js';
export * from './metrics.controller.js';
export * from './metrics.module.js';
