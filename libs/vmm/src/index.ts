/**
 * vmm: what a VMM does to boot, reboot and terminate a TD, as ordered plans of tdx-sim calls,
 * and a runner that executes a plan in virtual time. Pure: no I/O, no real clock.
 */
export * from './plan.js';
export * from './plans.js';
export * from './runner.js';
