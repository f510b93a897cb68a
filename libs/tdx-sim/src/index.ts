/**
 * tdx-sim: one simulated Intel TDX host (KVM + the TDX module + guest_memfd) as plain data and
 * pure transitions. No I/O, no real clock, no randomness.
 */
export * from './accounting.js';
export * from './calls.js';
export * from './config.js';
export * from './cost-model.js';
export * from './errno.js';
export * from './faults.js';
export * from './flags.js';
export * from './host.js';
export * from './kernel-switches.js';
export * from './ranges.js';
export * from './simulator.js';
export * from './state.js';
export * from './units.js';
