import { type JobView, VM_LIFECYCLES, type VmView } from '#fleet';
import { GIB_BYTES } from '#tdx-sim';
import { REBOOT_STRATEGIES, STRATEGIES, type StrategyAction, TERMINATE_STRATEGIES } from '#vmm';
import { z } from 'zod';
import { idReferenceSchema, resourceIdSchema, timestampSchema } from './common.dto.js';
import { jobViewSchema } from './job.dto.js';
import { type Documents, openApiSchema } from './openapi-schema.js';

const TWO_MIB = 2 * 1024 * 1024;

export const vmStateSchema = z.enum(VM_LIFECYCLES);

/** `POST /v1/vms`. */
export const createVmSchema = z.strictObject({
  id: resourceIdSchema.optional().describe('Chosen by the server when left out'),
  hostId: idReferenceSchema
    .optional()
    .describe('The host to boot on; left out, the host with the most free memory that fits'),
  vcpus: z.number().int().min(1).max(1024),
  memoryGiB: z
    .number()
    .positive()
    .max(65536)
    .refine((gib) => (gib * GIB_BYTES) % TWO_MIB === 0, 'must be a multiple of 2 MiB (1/512 GiB)')
    .describe('Guest memory; fractions are fine in steps of 2 MiB (at least 4 MiB)'),
});
export type CreateVmDto = z.output<typeof createVmSchema>;

/** The guest memory of a `POST /v1/vms` in bytes (exact: the schema allows 2 MiB steps only). */
export function memoryBytesOf(dto: CreateVmDto): number {
  return dto.memoryGiB * GIB_BYTES;
}

/** `GET /v1/vms` filters. */
export const listVmsQuerySchema = z.strictObject({
  hostId: idReferenceSchema.optional(),
  state: vmStateSchema.optional(),
});

/** `name: description; ...` for every strategy of `action`, as the declaration has them. */
function strategiesDescribed(action: StrategyAction): string {
  const declared: Record<string, { description: string }> = STRATEGIES[action];
  return Object.entries(declared)
    .map(([name, { description }]) => `${name}: ${description}`)
    .join('; ');
}

/** `POST /v1/vms/{id}/reboot`. */
export const rebootSchema = z.strictObject({
  strategy: z.enum(REBOOT_STRATEGIES).describe(strategiesDescribed('reboot')),
});
export type RebootDto = z.output<typeof rebootSchema>;

/** `POST /v1/vms/{id}/terminate`. */
export const terminateSchema = z.strictObject({
  strategy: z.enum(TERMINATE_STRATEGIES).describe(strategiesDescribed('terminate')),
});
export type TerminateDto = z.output<typeof terminateSchema>;

export const vmViewSchema = z.strictObject({
  id: z.string(),
  hostId: z.string(),
  state: vmStateSchema,
  hkid: z.number().int().nullable(),
  generation: z.number().int().describe('Boots so far: 1 after the first boot, +1 per reboot'),
  vcpus: z.number().int(),
  memoryGiB: z.number(),
  memoryBytes: z.number().int(),
  memslots: z.array(
    z.strictObject({
      slot: z.number().int(),
      gpa: z.number().int(),
      bytes: z.number().int(),
      guestMemfd: z.string().nullable(),
    }),
  ),
  guestMemfds: z.array(
    z.strictObject({
      id: z.string(),
      bytes: z.number().int(),
      allocatedBytes: z.number().int(),
      firstBootGeneration: z.number().int().describe('The boot that first allocated its memory'),
    }),
  ),
  activeJob: z.string().nullable().describe('The queued or running job, if any'),
  createdAt: timestampSchema,
  updatedAt: timestampSchema,
});
export type VmViewDocumented = Documents<typeof vmViewSchema, VmView>;

export const vmListSchema = z.strictObject({ vms: z.array(vmViewSchema) });
export const vmAndJobSchema = z.strictObject({ vm: vmViewSchema, job: jobViewSchema });
export type VmAndJobDocumented = Documents<typeof vmAndJobSchema, { vm: VmView; job: JobView }>;

export const VM_SCHEMAS = {
  create: openApiSchema(createVmSchema),
  reboot: openApiSchema(rebootSchema),
  terminate: openApiSchema(terminateSchema),
  view: openApiSchema(vmViewSchema, 'output'),
  list: openApiSchema(vmListSchema, 'output'),
  vmAndJob: openApiSchema(vmAndJobSchema, 'output'),
};
