export * from './fleet-events.js';
export * from './fleet-store.js';
export * from './keys.js';
