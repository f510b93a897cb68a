/**
 * experiments: load experiments over the offline fleet engine. Scenarios, the phases that pace
 * their operations, the metrics, thresholds and statistics, and the result they give. Pure: no
 * I/O, no clock, no hidden randomness; the command reads files, writes reports and talks to a
 * daemon.
 */
export * from './builtins.js';
export * from './compare.js';
export * from './experiment.js';
export * from './fleet-builder.js';
export * from './kernel-effects.js';
export * from './measure.js';
export * from './metrics.js';
export * from './phases.js';
export * from './result.js';
export * from './run-offline.js';
export * from './scenario.js';
export * from './stats.js';
export * from './sweep.js';
export * from './thresholds.js';
export * from './concurrency.js';
