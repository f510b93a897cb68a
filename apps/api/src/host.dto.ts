import { type HostView } from '#fleet';
import { GIB_BYTES, PAGE_BYTES } from '#tdx-sim';
import { z } from 'zod';
import { resourceIdSchema, timestampSchema } from './common.dto.js';
import { type Documents, openApiSchema } from './openapi-schema.js';

const terminateVmSchema = z
  .enum(['none', 'v4', 'aug2025'])
  .describe('KVM_TDX_TERMINATE_VM: none (mainline), the v4 series, or the August 2025 semantics');
const linkGuestMemfdSchema = z
  .boolean()
  .describe('Whether KVM_LINK_GUEST_MEMFD exists (needed by the reuse reboot)');
const privatePageSizeSchema = z.enum(['4K', '2M']).describe('Leaf size of private mappings');
const costModelSchema = z.enum(['calibrated', 'mechanistic']);

/** The kernel switches of a new host; each one left out is mainline's. */
export const kernelSchema = z.strictObject({
  terminateVm: terminateVmSchema.default('none'),
  linkGuestMemfd: linkGuestMemfdSchema.default(false),
  privatePageSize: privatePageSizeSchema.default('4K'),
});

/** `POST /v1/hosts`. */
export const createHostSchema = z.strictObject({
  id: resourceIdSchema.optional().describe('Chosen by the server when left out'),
  memoryGiB: z
    .number()
    .positive()
    .max(65536)
    .refine((gib) => (gib * GIB_BYTES) % PAGE_BYTES === 0, 'must be a whole number of 4 KiB pages')
    .describe('Host memory for guests and TDX metadata (a multiple of 4 KiB)'),
  hkids: z.number().int().min(1).max(1024).default(63).describe('Usable TD key IDs'),
  packages: z.number().int().min(1).max(64).default(2).describe('CPU packages (sockets)'),
  cpus: z.number().int().min(1).max(16384).default(128).describe('Logical CPUs'),
  hkidCgroupLimit: z
    .number()
    .int()
    .min(0)
    .max(1024)
    .nullable()
    .optional()
    .describe('The misc cgroup tdx limit; null or absent for none'),
  kernel: kernelSchema.default({
    terminateVm: 'none',
    linkGuestMemfd: false,
    privatePageSize: '4K',
  }),
  costModel: costModelSchema.optional().describe('Default: calibrated'),
});
export type CreateHostDto = z.output<typeof createHostSchema>;

export const hostViewSchema = z.strictObject({
  id: z.string(),
  capacity: z.strictObject({
    memoryBytes: z.number().int(),
    memoryGiB: z.number(),
    hkids: z.number().int(),
    packages: z.number().int(),
    cpus: z.number().int(),
    hkidCgroupLimit: z.number().int().nullable(),
  }),
  kernel: z.strictObject({
    terminateVm: terminateVmSchema,
    linkGuestMemfd: linkGuestMemfdSchema,
    privatePageSize: privatePageSizeSchema,
  }),
  costModel: costModelSchema,
  usage: z.strictObject({
    memory: z.strictObject({
      freeBytes: z.number().int(),
      privateBytes: z.number().int().describe('Private guest memory of live VMs'),
      retainedBytes: z.number().int().describe('Kept in guest_memfds for a reuse reboot'),
      orphanedBytes: z.number().int().describe('Held by guest_memfds no live VM uses'),
      controlBytes: z.number().int().describe('TDX control structures and Secure EPT'),
      inFlightBytes: z.number().int().describe('Freed by running steps, not yet back'),
    }),
    hkids: z.strictObject({
      used: z.number().int(),
      total: z.number().int(),
      zombies: z.number().int().describe('HKIDs held by VMs whose fds are closed'),
    }),
  }),
  vms: z.number().int().describe('VMs not terminated'),
  activeJobs: z.number().int(),
  createdAt: timestampSchema,
});
export type HostViewDocumented = Documents<typeof hostViewSchema, HostView>;

export const hostListSchema = z.strictObject({ hosts: z.array(hostViewSchema) });

export const HOST_SCHEMAS = {
  create: openApiSchema(createHostSchema),
  view: openApiSchema(hostViewSchema, 'output'),
  list: openApiSchema(hostListSchema, 'output'),
};
