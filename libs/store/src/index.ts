export * from './fleet-store.js';
export * from './keys.js';
