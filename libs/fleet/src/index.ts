/**
 * fleet: the fleet model shared by the apps: host documents, VMs, operations and the pure
 * executor that moves an operation forward step by step. No I/O: the store and the workers
 * persist and schedule what these functions return.
 */
export * from './batch.js';
export * from './errors.js';
export * from './executor.js';
export * from './host-document.js';
export * from './model.js';
export * from './offline-engine.js';
export * from './operations.js';
export * from './placement.js';
export * from './release-faults.js';
export * from './seeded-random.js';
export * from './views.js';
export * from './input-issues.js';
