import {
  type CallValue,
  ERRNOS,
  type Errno,
  FALLOC_FLAGS,
  GUEST_MEMFD_FLAGS,
  HKID_RELEASE_FAILURE_NAMES,
  type HkidReleaseFailure,
  type HostConfigInput,
  type HkidUsage,
  type KvmExit,
  type MemoryUsageBytes,
  SIM_OPS,
  type SimCall,
  type SimOp,
  Simulator,
  VirtualClock,
  createHost,
  hkidUsage,
  makeHostConfig,
  memoryUsageBytes,
} from '#tdx-sim';

/** A script `sim exec` cannot run, with the place it went wrong. */
export class ScriptError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ScriptError';
  }
}

type FieldKind =
  | 'handle'
  | 'size'
  | 'integer'
  | 'boolean'
  | 'faultIn'
  | 'gmemFlags'
  | 'fallocMode'
  | 'releaseStep';

/** Flag names a script may spell for each kind of flag mask, with their bits. */
const FLAG_SETS: Partial<Record<FieldKind, Readonly<Record<string, number>>>> = {
  gmemFlags: GUEST_MEMFD_FLAGS,
  fallocMode: FALLOC_FLAGS,
};

/**
 * The arguments each op takes: handles (fd numbers or `$name`), sizes, integers, booleans, flag
 * masks (a number, or names joined by `|`) and the HKID release step to fail.
 */
const OP_FIELDS: Record<
  SimOp,
  { required: Record<string, FieldKind>; optional?: Record<string, FieldKind> }
> = {
  KVM_CREATE_VM: { required: {} },
  KVM_TDX_INIT_VM: { required: { vm: 'handle' } },
  KVM_CREATE_VCPU: { required: { vm: 'handle' } },
  KVM_TDX_INIT_VCPU: { required: { vcpu: 'handle' } },
  KVM_TDX_INIT_MEM_REGION: { required: { vcpu: 'handle', gpa: 'size', bytes: 'size' } },
  KVM_TDX_FINALIZE_VM: { required: { vm: 'handle' } },
  KVM_RUN: { required: { vcpu: 'handle' }, optional: { faultIn: 'faultIn' } },
  vcpu_exit: { required: { vcpu: 'handle' } },
  KVM_CREATE_GUEST_MEMFD: {
    required: { vm: 'handle', bytes: 'size' },
    optional: { flags: 'gmemFlags' },
  },
  KVM_SET_USER_MEMORY_REGION2: {
    required: { vm: 'handle', slot: 'integer', gpa: 'size', bytes: 'size' },
    optional: { gmem: 'handle', gmemOffset: 'size' },
  },
  KVM_TDX_TERMINATE_VM: { required: { vm: 'handle' } },
  KVM_LINK_GUEST_MEMFD: {
    required: { vm: 'handle', gmem: 'handle' },
    optional: { flags: 'integer' },
  },
  close: { required: { fd: 'handle' } },
  mmap: { required: { fd: 'handle' } },
  munmap: { required: { map: 'handle' } },
  fallocate_punch_hole: { required: { fd: 'handle', offset: 'size', bytes: 'size' } },
  fallocate: { required: { fd: 'handle', mode: 'fallocMode', offset: 'size', bytes: 'size' } },
  open_dev_kvm: { required: {} },
  memfd_create: { required: { bytes: 'size' } },
  fstat: { required: { fd: 'handle' } },
  read: { required: { fd: 'handle', bytes: 'size' } },
  write: { required: { fd: 'handle', bytes: 'size' } },
  cpu_hotplug: { required: { package: 'integer', online: 'boolean' } },
  tdx_module_busy: { required: { busy: 'boolean' } },
  tdx_fail_next: { required: { step: 'releaseStep' } },
};

const UNITS: Record<string, number> = {
  '': 1,
  B: 1,
  K: 1024,
  KiB: 1024,
  M: 1024 ** 2,
  MiB: 1024 ** 2,
  G: 1024 ** 3,
  GiB: 1024 ** 3,
};

/** A size: a byte count, or a string such as "4KiB", "2MiB", "18GiB". */
export function parseSize(value: unknown, where: string): number {
  if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0) return value;
  if (typeof value === 'string') {
    const match = /^(\d+(?:\.\d+)?)\s*([A-Za-z]*)$/.exec(value.trim());
    const unit = match?.[2] ?? '';
    const factor = UNITS[unit];
    if (match?.[1] !== undefined && factor !== undefined) {
      const bytes = Number(match[1]) * factor;
      if (Number.isSafeInteger(bytes)) return bytes;
    }
  }
  throw new ScriptError(
    `${where}: expected a byte count or a size like "2MiB", got ${JSON.stringify(value)}`,
  );
}

const HOST_FIELDS = [
  'packages',
  'cpus',
  'memoryBytes',
  'memoryGiB',
  'hkids',
  'hkidCgroupLimit',
  'kernel',
  'costModel',
  'costParams',
];

/** One call of a script, before its `$name` handles are resolved. */
export interface ScriptCall {
  op: SimOp;
  args: Record<string, number | string | boolean | { gpa: number; bytes: number }>;
  as?: string;
  expect?: Errno | 'ok';
}

/** A parsed script: the host to build and the calls to make. */
export interface Script {
  host: HostConfigInput;
  calls: ScriptCall[];
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Validates a script's JSON; throws {@link ScriptError} naming the first problem. */
export function parseScript(json: unknown): Script {
  if (!isRecord(json)) throw new ScriptError('a script is a JSON object with "host" and "calls"');
  for (const key of Object.keys(json)) {
    if (key !== 'host' && key !== 'calls')
      throw new ScriptError(`unknown top-level field "${key}"`);
  }
  const host = json.host ?? {};
  if (!isRecord(host)) throw new ScriptError('"host" must be an object');
  for (const key of Object.keys(host)) {
    if (!HOST_FIELDS.includes(key)) {
      throw new ScriptError(`host: unknown field "${key}"; fields are ${HOST_FIELDS.join(', ')}`);
    }
  }
  if (!Array.isArray(json.calls)) throw new ScriptError('"calls" must be an array');
  const calls = json.calls.map((raw: unknown, index) => parseCall(raw, `calls[${index}]`));
  return { host, calls };
}

function parseCall(raw: unknown, where: string): ScriptCall {
  if (!isRecord(raw)) throw new ScriptError(`${where}: a call is an object with "op"`);
  const op = raw.op;
  if (typeof op !== 'string' || !(SIM_OPS as readonly string[]).includes(op)) {
    throw new ScriptError(
      `${where}: unknown op ${JSON.stringify(op)}; ops are ${SIM_OPS.join(', ')}`,
    );
  }
  const fields = OP_FIELDS[op as SimOp];
  const call: ScriptCall = { op: op as SimOp, args: {} };
  for (const [key, value] of Object.entries(raw)) {
    if (key === 'op') continue;
    if (key === 'as') {
      if (typeof value !== 'string' || !/^[A-Za-z_][\w.-]*$/.test(value)) {
        throw new ScriptError(`${where}.as: a handle name of letters, digits, _ . -`);
      }
      call.as = value;
      continue;
    }
    if (key === 'expect') {
      if (value !== 'ok' && !(ERRNOS as readonly unknown[]).includes(value)) {
        throw new ScriptError(`${where}.expect: "ok" or one of ${ERRNOS.join(', ')}`);
      }
      call.expect = value as Errno | 'ok';
      continue;
    }
    const kind = fields.required[key] ?? fields.optional?.[key];
    if (kind === undefined) throw new ScriptError(`${where}: ${op} takes no argument "${key}"`);
    call.args[key] = parseField(kind, value, `${where}.${key}`);
  }
  for (const key of Object.keys(fields.required)) {
    if (!(key in call.args)) throw new ScriptError(`${where}: ${op} needs "${key}"`);
  }
  return call;
}

function parseField(kind: FieldKind, value: unknown, where: string): ScriptCall['args'][string] {
  switch (kind) {
    case 'handle':
      if (typeof value === 'number' && Number.isSafeInteger(value)) return value;
      if (typeof value === 'string' && value.startsWith('$')) return value;
      throw new ScriptError(`${where}: an fd number or a "$name" bound by an earlier call's "as"`);
    case 'size':
      return parseSize(value, where);
    case 'integer':
      if (typeof value === 'number' && Number.isSafeInteger(value)) return value;
      throw new ScriptError(`${where}: an integer`);
    case 'boolean':
      if (typeof value === 'boolean') return value;
      throw new ScriptError(`${where}: true or false`);
    case 'faultIn':
      if (!isRecord(value)) throw new ScriptError(`${where}: an object {"gpa", "bytes"}`);
      return {
        gpa: parseSize(value.gpa, `${where}.gpa`),
        bytes: parseSize(value.bytes, `${where}.bytes`),
      };
    case 'gmemFlags':
    case 'fallocMode':
      return parseFlags(value, FLAG_SETS[kind] ?? {}, where);
    case 'releaseStep':
      if (
        typeof value === 'string' &&
        (HKID_RELEASE_FAILURE_NAMES as readonly string[]).includes(value)
      ) {
        return value;
      }
      throw new ScriptError(`${where}: one of ${HKID_RELEASE_FAILURE_NAMES.join(', ')}`);
  }
}

/**
 * A flag mask: a non-negative integer, or flag names joined by `|` (`"FALLOC_FL_KEEP_SIZE |
 * FALLOC_FL_PUNCH_HOLE"`; `0` or `""` for none). Unknown bits as numbers are the kernel's to
 * refuse; an unknown name is a script error.
 */
function parseFlags(
  value: unknown,
  names: Readonly<Record<string, number>>,
  where: string,
): number {
  if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0) return value;
  if (typeof value === 'string') {
    let mask = 0;
    for (const word of value.split('|').map((w) => w.trim())) {
      if (word === '' || word === '0') continue;
      const bit = names[word];
      if (bit === undefined) {
        throw new ScriptError(
          `${where}: unknown flag "${word}"; flags are ${Object.keys(names).join(', ')}`,
        );
      }
      mask |= bit;
    }
    return mask;
  }
  throw new ScriptError(
    `${where}: a number or flag names joined by "|" (${Object.keys(names).join(', ')})`,
  );
}

/** One call's line in the report. */
export interface ExecResult {
  index: number;
  at: number;
  call: SimCall;
  ok: boolean;
  value?: CallValue;
  errno?: Errno;
  message?: string;
  seconds: number;
  expect?: Errno | 'ok';
  expectationMet?: boolean;
  /** Why `KVM_RUN` stopped, when it failed with a memory fault. */
  exit?: KvmExit;
  /** An HKID release step this call made fail (armed by `tdx_fail_next`). */
  hkidReleaseFailure?: HkidReleaseFailure;
  /** The HKID this call leaked for good. */
  leakedHkid?: number;
}

/** What `sim exec` prints. */
export interface ExecReport {
  host: ReturnType<typeof makeHostConfig>;
  results: ExecResult[];
  memory: MemoryUsageBytes;
  hkids: HkidUsage;
  failedExpectations: number;
}

/**
 * Runs a script against one new host. Each call happens when the previous one's virtual time
 * has passed, and what it frees is back with the host before the next.
 */
export function runScript(script: Script): ExecReport {
  let config;
  try {
    config = makeHostConfig(script.host);
  } catch (error) {
    throw new ScriptError(`host: ${(error as Error).message}`);
  }
  const clock = new VirtualClock();
  const sim = new Simulator(createHost(config), clock);
  const handles = new Map<string, number>();
  const results: ExecResult[] = [];
  script.calls.forEach((scriptCall, index) => {
    const resolved: Record<string, unknown> = { op: scriptCall.op };
    for (const [key, value] of Object.entries(scriptCall.args)) {
      if (typeof value === 'string' && value.startsWith('$')) {
        const bound = handles.get(value.slice(1));
        if (bound === undefined) {
          throw new ScriptError(
            `calls[${index}].${key}: ${value} is not bound by an earlier call's "as"`,
          );
        }
        resolved[key] = bound;
      } else {
        resolved[key] = value;
      }
    }
    const call = resolved as SimCall;
    const at = clock.now();
    const outcome = sim.call(call);
    const result: ExecResult = { index, at, call, ok: outcome.ok, seconds: outcome.seconds };
    if (outcome.ok) {
      result.value = outcome.value;
      const bound = outcome.value.fd ?? outcome.value.map;
      if (scriptCall.as !== undefined && bound !== undefined) handles.set(scriptCall.as, bound);
      const { hkidReleaseFailure, leakedHkid } = outcome.effects;
      if (hkidReleaseFailure !== null) result.hkidReleaseFailure = hkidReleaseFailure;
      if (leakedHkid !== null) result.leakedHkid = leakedHkid;
    } else {
      result.errno = outcome.errno;
      result.message = outcome.message;
      if (outcome.exit !== undefined) result.exit = outcome.exit;
    }
    if (scriptCall.expect !== undefined) {
      result.expect = scriptCall.expect;
      result.expectationMet = scriptCall.expect === (outcome.ok ? 'ok' : outcome.errno);
    }
    results.push(result);
    clock.advance(outcome.seconds);
  });
  return {
    host: config,
    results,
    memory: memoryUsageBytes(sim.state),
    hkids: hkidUsage(sim.state),
    failedExpectations: results.filter((r) => r.expectationMet === false).length,
  };
}
