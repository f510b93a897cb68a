import { type JobView } from '#fleet';
import { ERRNOS } from '#tdx-sim';
import { ALL_STRATEGIES } from '#vmm';
import { z } from 'zod';
import { timestampSchema } from './common.dto.js';
import { type Documents, openApiSchema } from './openapi-schema.js';

export const jobStateSchema = z.enum(['queued', 'running', 'succeeded', 'failed', 'cancelled']);
const errnoSchema = z.enum(ERRNOS);

export const jobViewSchema = z.strictObject({
  id: z.string(),
  vmId: z.string(),
  hostId: z.string(),
  action: z.enum(['boot', 'reboot', 'terminate']),
  strategy: z.enum(ALL_STRATEGIES).nullable(),
  state: jobStateSchema,
  progress: z.strictObject({
    stepsDone: z.number().int(),
    stepsTotal: z.number().int(),
    fraction: z.number().min(0).max(1),
  }),
  steps: z.array(
    z.strictObject({
      name: z.string(),
      track: z.string().describe('teardown or boot: the two run side by side'),
      state: z.enum(['pending', 'waiting', 'running', 'done', 'failed', 'skipped']),
      virtualSeconds: z.number().describe('Simulated seconds the step costs'),
      virtualStart: z
        .number()
        .nullable()
        .describe('Simulated seconds from the start of the job to the start of the step'),
      waitedSeconds: z
        .number()
        .describe('Simulated seconds the step waited for an HKID, memory or the HKID lock'),
      wallMs: z.number().describe('Real milliseconds until its simulated time had passed'),
      waitedMs: z
        .number()
        .describe('Real milliseconds spent waiting (its simulated wait at the time scale)'),
      errno: z
        .string()
        .optional()
        .describe(`The errno the step got (${ERRNOS.join(', ')})`),
      cleanup: z.boolean().optional().describe('Added to clean up after a cancel or a failure'),
    }),
  ),
  virtualArrivedAt: z
    .number()
    .describe(
      "Its host's virtual clock (seconds) when it arrived there: at once when submitted, at the " +
        "host's current virtual time",
    ),
  virtualStartedAt: z
    .number()
    .nullable()
    .describe(
      "Its host's virtual clock when it started (it waits on the host while HOST_CONCURRENCY " +
        'operations run); null until then, and for a job cancelled before it started',
    ),
  virtualFinishedAt: z
    .number()
    .nullable()
    .describe(
      "Its host's virtual clock when its last step ended; null until then, and for a job " +
        'cancelled before it started',
    ),
  result: z
    .strictObject({
      downtimeSeconds: z.number(),
      reclaimSeconds: z.number(),
      bytesReclaimed: z.number(),
      bytesFreed: z.number(),
      bytesReused: z.number(),
      bytesAllocated: z.number(),
      hkidHeldSeconds: z.number(),
      totalSeconds: z.number(),
    })
    .optional()
    .describe('When the job succeeded'),
  error: z
    .strictObject({
      code: z.enum(['step_failed', 'cancelled', 'wait_timeout']),
      message: z.string(),
      step: z.string().optional(),
      errno: errnoSchema.optional(),
    })
    .optional()
    .describe('When the job failed or was cancelled'),
  cancelRequested: z.boolean(),
  batchId: z.string().nullable(),
  createdAt: timestampSchema,
  startedAt: timestampSchema.nullable(),
  finishedAt: timestampSchema.nullable(),
});
export type JobViewDocumented = Documents<typeof jobViewSchema, JobView>;

export const jobEnvelopeSchema = z.strictObject({ job: jobViewSchema });

export const JOB_SCHEMAS = {
  view: openApiSchema(jobViewSchema, 'output'),
  envelope: openApiSchema(jobEnvelopeSchema, 'output'),
};
