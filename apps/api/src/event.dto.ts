import { type FleetEvent } from '#fleet';
import { ERRNOS } from '#tdx-sim';
import { z } from 'zod';
import { idReferenceSchema } from './common.dto.js';
import { type Documents, openApiSchema } from './openapi-schema.js';

/** `GET /v1/events` filters: only the events of one host, VM or job. */
export const eventFilterSchema = z.strictObject({
  hostId: idReferenceSchema.optional(),
  vmId: idReferenceSchema.optional(),
  jobId: idReferenceSchema.optional(),
});
export type EventFilter = z.output<typeof eventFilterSchema>;

/** The `data:` of one server-sent event (its `event:` is the type). */
export const fleetEventSchema = z.strictObject({
  type: z.enum(['job.started', 'job.step', 'job.waiting', 'job.finished', 'vm.state']),
  atMs: z.number().describe('When it happened (ms since the epoch)'),
  virtualTime: z
    .number()
    .describe("When it happened in the host's virtual time (seconds of its clock)"),
  hostId: z.string(),
  vmId: z.string(),
  jobId: z.string(),
  step: z.string().optional(),
  state: z.string().optional(),
  errno: z.enum(ERRNOS).optional(),
});
export type FleetEventDocumented = Documents<typeof fleetEventSchema, FleetEvent>;

export const EVENT_SCHEMAS = { event: openApiSchema(fleetEventSchema, 'output') };
