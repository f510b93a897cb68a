import { type HostView } from '#fleet';
import {
  COST_MODELS,
  GIB_BYTES,
  HKID_RELEASE_FAILURES,
  KERNEL_SWITCHES,
  KERNEL_SWITCH_NAMES,
  type KernelSwitchName,
  type KernelSwitchValue,
  MAINLINE_KERNEL,
  PAGE_BYTES,
  isFlagSwitch,
} from '#tdx-sim';
import { z } from 'zod';
import { resourceIdSchema, timestampSchema } from './common.dto.js';
import { type Documents, openApiSchema } from './openapi-schema.js';

/** Each kernel switch's schema, from its declaration: its values and its description. */
type KernelSwitchSchemas = { [K in KernelSwitchName]: z.ZodType<KernelSwitchValue<K>> };
/** The same, each taking mainline's value when left out. */
type DefaultedKernelSwitchSchemas = {
  [K in KernelSwitchName]: z.ZodDefault<z.ZodType<KernelSwitchValue<K>>>;
};

function kernelSwitchSchema(name: KernelSwitchName): z.ZodType {
  const { values, description } = KERNEL_SWITCHES[name];
  const choices = (values as readonly (string | boolean)[]).filter((v) => typeof v === 'string');
  return (isFlagSwitch(name) ? z.boolean() : z.enum(choices)).describe(description);
}

function kernelSwitchSchemas<T>(schema: (name: KernelSwitchName) => z.ZodType): T {
  return Object.fromEntries(KERNEL_SWITCH_NAMES.map((name) => [name, schema(name)])) as T;
}

const kernelSwitches = kernelSwitchSchemas<KernelSwitchSchemas>(kernelSwitchSchema);
const costModelSchema = z.enum(COST_MODELS);

/** The kernel switches of a new host; each one left out is mainline's. */
export const kernelSchema = z.strictObject(
  kernelSwitchSchemas<DefaultedKernelSwitchSchemas>((name) =>
    (kernelSwitches[name] as z.ZodType).default(MAINLINE_KERNEL[name]),
  ),
);

/** Largest count a fault rule may name. */
const MAX_FAULT_COUNT = 1_000_000_000;

/** When one step of the HKID release fails, counting its attempts since the setting was made. */
const releaseFaultRuleSchema = z.union([
  z.strictObject({
    failNext: z
      .number()
      .int()
      .min(0)
      .max(MAX_FAULT_COUNT)
      .describe('The next n attempts fail, then none'),
  }),
  z.strictObject({
    everyNth: z
      .number()
      .int()
      .min(1)
      .max(MAX_FAULT_COUNT)
      .describe('Every k-th attempt fails (1: every one)'),
  }),
]);

/** A host's HKID release fault setting (`PUT /v1/hosts/{id}/faults`, and at creation). */
export const hkidReleaseFaultsSchema = z
  .strictObject({
    VPFLUSHDONE: releaseFaultRuleSchema
      .optional()
      .describe(`TDH.MNG.VPFLUSHDONE fails: ${HKID_RELEASE_FAILURES.VPFLUSHDONE}`),
    FREEID: releaseFaultRuleSchema
      .optional()
      .describe(`TDH.MNG.KEY.FREEID fails: ${HKID_RELEASE_FAILURES.FREEID}`),
  })
  .describe(
    'Which HKID release attempts fail on the host, for experiments; a step left out never fails',
  );
export type HkidReleaseFaultsDto = z.output<typeof hkidReleaseFaultsSchema>;

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
  kernel: kernelSchema.default({ ...MAINLINE_KERNEL }),
  costModel: costModelSchema.optional().describe('Default: calibrated'),
  hkidReleaseFaults: hkidReleaseFaultsSchema.optional(),
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
  kernel: z.strictObject(kernelSwitches),
  costModel: costModelSchema,
  usage: z.strictObject({
    memory: z.strictObject({
      freeBytes: z.number().int(),
      privateBytes: z.number().int().describe('Private guest memory of live VMs'),
      retainedBytes: z.number().int().describe('Kept in guest_memfds for a reuse reboot'),
      orphanedBytes: z.number().int().describe('Held by guest_memfds no live VM uses'),
      controlBytes: z.number().int().describe('TDX control structures and Secure EPT'),
      inFlightBytes: z.number().int().describe('Freed by running steps, not yet back'),
      leakedBytes: z
        .number()
        .int()
        .describe('Held by TDs whose HKID release failed: never reclaimed until the host reboots'),
    }),
    hkids: z.strictObject({
      used: z.number().int().describe('Held by VMs or being released'),
      total: z.number().int().describe('used + leaked + free'),
      zombies: z.number().int().describe('Of the used ones, those of VMs whose fds are closed'),
      leaked: z
        .number()
        .int()
        .describe(
          'Lost to a failed KEY.FREEID (or a release failed at destruction): owned by no VM',
        ),
    }),
  }),
  hkidReleaseFaults: hkidReleaseFaultsSchema,
  hkidReleaseAttempts: z
    .strictObject({ VPFLUSHDONE: z.number().int(), FREEID: z.number().int() })
    .describe('Release attempts at each step since the fault setting was made: what it counts'),
  vms: z.number().int().describe('VMs not terminated'),
  activeJobs: z.number().int().describe('Jobs queued or running on the host'),
  runningJobs: z.number().int().describe('Of the active jobs, those running'),
  queuedJobs: z
    .number()
    .int()
    .describe('Of the active jobs, those waiting on the host (for a slot or a worker)'),
  createdAt: timestampSchema,
});
export type HostViewDocumented = Documents<typeof hostViewSchema, HostView>;

export const hostListSchema = z.strictObject({ hosts: z.array(hostViewSchema) });

export const HOST_SCHEMAS = {
  create: openApiSchema(createHostSchema),
  faults: openApiSchema(hkidReleaseFaultsSchema),
  view: openApiSchema(hostViewSchema, 'output'),
  list: openApiSchema(hostListSchema, 'output'),
};
