import { type BatchView } from '#fleet';
import {
  ALL_STRATEGIES,
  REBOOT_STRATEGIES,
  STRATEGY_ACTIONS,
  TERMINATE_STRATEGIES,
  strategiesOf,
} from '#vmm';
import { z } from 'zod';
import { idReferenceSchema } from './common.dto.js';
import { type Documents, openApiSchema } from './openapi-schema.js';

const idListSchema = z.array(idReferenceSchema).min(1).max(10000);

const selectorSchema = z
  .strictObject({
    hostIds: idListSchema.optional().describe('Every live VM of these hosts'),
    vmIds: idListSchema.optional().describe('These VMs (unknown ones are rejected members)'),
    all: z.literal(true).optional().describe('Every live VM of the fleet'),
  })
  .refine(
    (s) => [s.hostIds, s.vmIds, s.all].filter((v) => v !== undefined).length === 1,
    'needs exactly one of hostIds, vmIds or all: true',
  )
  .describe('Exactly one of hostIds, vmIds or all');

const actionSchema = z.enum(STRATEGY_ACTIONS);
const strategySchema = z.enum(ALL_STRATEGIES);

/** `POST /v1/batches`. */
export const createBatchSchema = z
  .strictObject({
    selector: selectorSchema,
    action: actionSchema,
    strategy: strategySchema.describe(
      `A reboot strategy (${REBOOT_STRATEGIES.join(', ')}) or a terminate one (${TERMINATE_STRATEGIES.join(', ')})`,
    ),
    maxConcurrency: z.number().int().min(1).max(10000).describe('Operations running at once'),
    ratePerSecond: z
      .number()
      .positive()
      .max(1_000_000)
      .optional()
      .describe('Submissions per second; absent for as fast as concurrency allows'),
  })
  .superRefine((batch, context) => {
    const allowed = strategiesOf(batch.action);
    if (!allowed.includes(batch.strategy)) {
      context.addIssue({
        code: 'custom',
        path: ['strategy'],
        message: `a ${batch.action} takes one of ${allowed.join(', ')}`,
      });
    }
  });
export type CreateBatchDto = z.output<typeof createBatchSchema>;

const memberStateSchema = z.enum([
  'pending',
  'queued',
  'running',
  'succeeded',
  'failed',
  'cancelled',
  'rejected',
]);

export const batchViewSchema = z.strictObject({
  id: z.string(),
  spec: z.strictObject({
    selector: z.strictObject({
      hostIds: z.array(z.string()).optional(),
      vmIds: z.array(z.string()).optional(),
      all: z.boolean().optional(),
    }),
    action: actionSchema,
    strategy: strategySchema,
    maxConcurrency: z.number().int(),
    ratePerSecond: z.number().nullable(),
  }),
  state: z.enum(['running', 'done']),
  members: z.array(
    z.strictObject({
      vmId: z.string(),
      hostId: z.string().nullable(),
      state: memberStateSchema.describe('rejected: the operation was refused (see error)'),
      jobId: z.string().nullable(),
      error: z.strictObject({ code: z.string(), message: z.string() }).nullable(),
      submittedAtMs: z.number().nullable(),
    }),
  ),
  createdAtMs: z.number(),
  finishedAtMs: z.number().nullable(),
  counts: z.strictObject({
    pending: z.number().int(),
    queued: z.number().int(),
    running: z.number().int(),
    succeeded: z.number().int(),
    failed: z.number().int(),
    cancelled: z.number().int(),
    rejected: z.number().int(),
  }),
});
export type BatchViewDocumented = Documents<typeof batchViewSchema, BatchView>;

export const BATCH_SCHEMAS = {
  create: openApiSchema(createBatchSchema),
  view: openApiSchema(batchViewSchema, 'output'),
};
