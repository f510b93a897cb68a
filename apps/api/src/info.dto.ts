import { type AppConfig } from '#config';
import { z } from 'zod';
import { openApiSchema } from './openapi-schema.js';

/**
 * `GET /v1/info`: the settings that shape when operations run, so that a client can put a job's
 * virtual times (on its host's clock) on its own clock, and check it drives the fleet it means to.
 */
export const daemonInfoSchema = z.strictObject({
  timeScale: z
    .number()
    .min(0)
    .describe(
      'TIME_SCALE: virtual seconds per real second by which the hosts are paced (0: no waiting, ' +
        'a host runs straight to the end of what it can do and its clock stays at its last event)',
    ),
  hostConcurrency: z
    .number()
    .int()
    .describe('HOST_CONCURRENCY: operations running at once on one host, the rest wait on it'),
  globalConcurrency: z
    .number()
    .int()
    .nullable()
    .describe('GLOBAL_CONCURRENCY: running operations over all workers; null for no limit'),
  stepWaitTimeoutMs: z
    .number()
    .int()
    .describe(
      'STEP_WAIT_TIMEOUT_MS: real milliseconds a step may wait with nothing pending to end ' +
        'its wait before its operation fails',
    ),
});
export type DaemonInfo = z.output<typeof daemonInfoSchema>;

/** What this process is configured with (the workers are meant to share it). */
export function daemonInfo(config: AppConfig): DaemonInfo {
  return {
    timeScale: config.timeScale,
    hostConcurrency: config.hostConcurrency,
    globalConcurrency: config.globalConcurrency ?? null,
    stepWaitTimeoutMs: config.stepWaitTimeoutMs,
  };
}

export const INFO_SCHEMAS = { view: openApiSchema(daemonInfoSchema, 'output') };
