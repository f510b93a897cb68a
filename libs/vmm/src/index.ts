/**
 * vmm: what a VMM does to boot, reboot and terminate a TD, as ordered plans of tdx-sim calls,
 * the operation engine that advances a plan on a host in virtual time, and a runner that runs a
 * plan alone to completion. Pure: no I/O, no real clock.
 */
export * from './engine.js';
export * from './plan.js';
export * from './plans.js';
export * from './runner.js';
