import {
  type BatchRecord,
  type FleetEvent,
  FleetError,
  type HostDocument,
  NotFoundError,
  type OperationRecord,
  type VmRecord,
} from '#fleet';
import type { ChainableCommander, Redis } from 'ioredis';
import { encodeFleetEvents } from './fleet-events.js';
import { FleetKeys } from './keys.js';
import { LuaScript } from './lua-script.js';
import { decodeOperation, encodeOperation } from './operation-codec.js';

/** A document in Redis that is not what this version of the daemon wrote. */
export class CorruptRecordError extends Error {
  constructor(key: string, reason: string) {
    super(`${key}: ${reason}`);
    this.name = 'CorruptRecordError';
  }
}

/** A host id that is taken. */
export class HostExistsError extends FleetError {
  constructor(hostId: string) {
    super('already_exists', `a host with id ${hostId} exists already`, { hostId });
    this.name = 'HostExistsError';
  }
}

/** A compare-and-set that kept losing to other writers. */
export class CommitContentionError extends Error {
  constructor(hostId: string, attempts: number) {
    super(`host ${hostId}: gave up after ${attempts} conflicting updates`);
    this.name = 'CommitContentionError';
  }
}

/** What an idempotency key stands for. */
export interface IdempotencyRecord {
  /** What the request was (method, path, body), so a different request with the key is refused. */
  fingerprint: string;
  jobId: string;
  vmId: string;
}

/** Index entries read with one HMGET at most. */
const INDEX_READ_CHUNK = 1000;

/** How long finished jobs (and terminated VMs' last records) and idempotency keys are kept. */
export const FINISHED_JOB_TTL_SECONDS = 7 * 24 * 3600;
export const IDEMPOTENCY_TTL_SECONDS = 24 * 3600;

// A host document is one Redis hash: `version`, `core` (the host's own fields), `sim` (the
// simulated host), one field per VM not terminated (`vm:<id>`) and per active operation
// (`op:<id>`), and the plan of each running operation (`plan:<id>`). A commit writes only the
// fields that changed, so a job's commit does not rewrite the other VMs and the queued operations
// of its host, and a step does not rewrite its operation's plan (for a VM of many vCPUs, most of
// the record).
const VERSION_FIELD = 'version';
const CORE_FIELD = 'core';
const SIM_FIELD = 'sim';
const VM_FIELD = 'vm:';
const OP_FIELD = 'op:';
const PLAN_FIELD = 'plan:';
/** The whole document as one JSON field: what earlier versions wrote; read, and replaced on commit. */
const LEGACY_DOC_FIELD = 'doc';

// Commits a host document if its version is still ARGV[1] ('-1': the host must not exist yet).
// ARGV[6] 'full' replaces the whole hash; else only the ARGV[7] field/value pairs are written and
// the ARGV[8] fields after them deleted. Finished operations and terminated VMs (KEYS[3..], the
// values after that) are stored beside it in the same step, each for ARGV[3] seconds; the ids of
// the ARGV[9] terminated VMs (after the values) join the host's set of them (KEYS[2]), scored by
// when their records expire (ARGV[10], ms), and the set drops those expired by ARGV[11]. The
// change's events (ARGV[5], if any) are published on the channel ARGV[4]. Returns 1, or 0 on a
// conflict.
const COMMIT_SCRIPT = new LuaScript(`
local current = redis.call('HGET', KEYS[1], 'version')
if (current or '-1') ~= ARGV[1] then return 0 end
if ARGV[6] == 'full' then redis.call('DEL', KEYS[1]) end
redis.call('HSET', KEYS[1], 'version', ARGV[2])
local i = 12
for _ = 1, tonumber(ARGV[7]) do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
for _ = 1, tonumber(ARGV[8]) do
  redis.call('HDEL', KEYS[1], ARGV[i])
  i = i + 1
end
for k = 3, #KEYS do
  redis.call('SET', KEYS[k], ARGV[i], 'EX', ARGV[3])
  i = i + 1
end
local terminated = tonumber(ARGV[9])
if terminated > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[11])
  for _ = 1, terminated do
    redis.call('ZADD', KEYS[2], ARGV[10], ARGV[i])
    i = i + 1
  end
  -- No member outlives the records just written: the set need not either.
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
if ARGV[5] ~= '' then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
return 1
`);

// Returns nil for a missing document, {version} when the caller already holds that version,
// else every field and value of the hash.
const READ_SCRIPT = new LuaScript(`
local version = redis.call('HGET', KEYS[1], 'version')
if not version then return nil end
if version == ARGV[1] then return {version} end
return redis.call('HGETALL', KEYS[1])
`);

// Deletes each field ARGV[2i-1] of the hash KEYS[1] whose value is still ARGV[2i]; returns how many.
const DROP_INDEX_ENTRIES_SCRIPT = new LuaScript(`
local dropped = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    dropped = dropped + redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return dropped
`);

/** A VM id claimed for a host: the host its index entry named before, if any. */
export interface VmIdClaim {
  previousHostId: string | null;
}

/** The fleet's indexes: which host each job, and each VM, is on. */
export type FleetIndex = 'jobs' | 'vms';

/** A job or a VM, and the host its index says it is on. */
export interface IndexEntry {
  id: string;
  hostId: string;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function parseJson(key: string, field: string, json: string): unknown {
  try {
    return JSON.parse(json) as unknown;
  } catch {
    throw new CorruptRecordError(key, `${field} is not JSON`);
  }
}

/** The host's own fields: the document less its simulated host, VMs and operations. */
type HostCore = Omit<HostDocument, 'version' | 'sim' | 'vms' | 'ops'>;

function coreOf(doc: HostDocument): HostCore {
  const { version: _version, sim: _sim, vms: _vms, ops: _ops, ...core } = doc;
  return core;
}

/**
 * `doc` less its terminated VMs, and those VMs. A terminated VM leaves its host's document when
 * that is committed: its last record is kept beside it for as long as a finished job, so a host
 * whose VMs come and go does not grow for ever (and its id may be used again).
 */
function withoutTerminated(doc: HostDocument): { doc: HostDocument; terminated: VmRecord[] } {
  let terminated: VmRecord[] | null = null;
  for (const id in doc.vms) {
    const vm = doc.vms[id] as VmRecord;
    if (vm.state === 'terminated') (terminated ??= []).push(vm);
  }
  if (terminated === null) return { doc, terminated: [] };
  const vms: Record<string, VmRecord> = {};
  for (const id in doc.vms) {
    const vm = doc.vms[id] as VmRecord;
    if (vm.state !== 'terminated') vms[id] = vm;
  }
  return { doc: { ...doc, vms }, terminated };
}

function parseTerminatedVm(key: string, json: string): VmRecord {
  const vm = parseJson(key, 'value', json);
  if (!isRecord(vm) || typeof vm.id !== 'string' || vm.state !== 'terminated') {
    throw new CorruptRecordError(key, 'not a terminated VM');
  }
  return vm as unknown as VmRecord;
}

/** Documents read in the one-field layout: their next commit writes them whole. */
const legacyDocs = new WeakSet<HostDocument>();

/**
 * A host document from the fields of its hash (as HGETALL lists them), checked for the shape this
 * code relies on (Redis content is input like any other). Deeper consistency is the simulator's
 * `checkInvariants`.
 */
function parseHostFields(key: string, fields: ReadonlyMap<string, string>): HostDocument {
  const version = Number(fields.get(VERSION_FIELD));
  if (!Number.isSafeInteger(version)) throw new CorruptRecordError(key, 'bad version');
  let doc: unknown;
  const legacy = fields.get(LEGACY_DOC_FIELD);
  if (legacy !== undefined) {
    doc = parseJson(key, LEGACY_DOC_FIELD, legacy);
  } else {
    const core = fields.get(CORE_FIELD);
    const sim = fields.get(SIM_FIELD);
    if (core === undefined || sim === undefined) {
      throw new CorruptRecordError(key, 'not a host document');
    }
    const vms: Record<string, unknown> = {};
    const ops: Record<string, unknown> = {};
    const plans = new Map<string, unknown>();
    for (const [field, json] of fields) {
      if (field.startsWith(VM_FIELD))
        vms[field.slice(VM_FIELD.length)] = parseJson(key, field, json);
      else if (field.startsWith(OP_FIELD)) {
        const op = decodeOperation(parseJson(key, field, json));
        if (op === null) throw new CorruptRecordError(key, `${field}: not an operation record`);
        ops[field.slice(OP_FIELD.length)] = op;
      } else if (field.startsWith(PLAN_FIELD))
        plans.set(field.slice(PLAN_FIELD.length), parseJson(key, field, json));
    }
    for (const [id, op] of Object.entries(ops)) {
      if (isRecord(op)) op.plan = plans.get(id) ?? null;
    }
    const parsedCore = parseJson(key, CORE_FIELD, core);
    doc = isRecord(parsedCore)
      ? { ...parsedCore, sim: parseJson(key, SIM_FIELD, sim), vms, ops }
      : null;
  }
  if (
    !isRecord(doc) ||
    typeof doc.id !== 'string' ||
    !isRecord(doc.sim) ||
    !isRecord(doc.vms) ||
    !isRecord(doc.ops) ||
    !Array.isArray(doc.releases) ||
    typeof doc.hkidLockFreeAt !== 'number' ||
    typeof doc.clock !== 'number' ||
    typeof doc.clockAtMs !== 'number' ||
    typeof doc.arrivals !== 'number'
  ) {
    throw new CorruptRecordError(key, 'not a host document');
  }
  const parsed = { ...(doc as unknown as HostDocument), version };
  if (legacy !== undefined) legacyDocs.add(parsed);
  return parsed;
}

/** HGETALL's flat reply as a map. */
function fieldMap(reply: readonly string[]): Map<string, string> {
  const fields = new Map<string, string>();
  for (let i = 0; i + 1 < reply.length; i += 2) fields.set(reply[i] ?? '', reply[i + 1] ?? '');
  return fields;
}

/**
 * The fields a commit of `next` writes and deletes. Against `base` (the version it was read at,
 * when this process holds it): only what changed, found by identity, since documents are never
 * changed in place (every change makes new objects). Without a base: every field.
 */
function fieldChanges(
  base: HostDocument | null,
  next: HostDocument,
): { set: string[]; del: string[] } {
  const set: string[] = [CORE_FIELD, JSON.stringify(coreOf(next))];
  const del: string[] = [];
  if (base?.sim !== next.sim) set.push(SIM_FIELD, JSON.stringify(next.sim));
  const baseVms = base?.vms ?? {};
  if (baseVms !== next.vms) {
    for (const [id, vm] of Object.entries(next.vms)) {
      if (baseVms[id] !== vm) set.push(VM_FIELD + id, JSON.stringify(vm));
    }
    for (const id of Object.keys(baseVms)) if (next.vms[id] === undefined) del.push(VM_FIELD + id);
  }
  const baseOps = base?.ops ?? {};
  if (baseOps !== next.ops) {
    for (const [id, op] of Object.entries(next.ops)) {
      const before = baseOps[id];
      if (before === op) continue;
      // The record without its plan; the plan in its own field, written when it changes.
      set.push(OP_FIELD + id, encodeOperation(op));
      if (before?.plan !== op.plan) {
        if (op.plan !== null) set.push(PLAN_FIELD + id, JSON.stringify(op.plan));
        else if (before !== undefined) del.push(PLAN_FIELD + id);
      }
    }
    for (const id of Object.keys(baseOps)) {
      if (next.ops[id] === undefined) del.push(OP_FIELD + id, PLAN_FIELD + id);
    }
  }
  return { set, del };
}

function parseOperation(key: string, json: string): OperationRecord {
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch {
    throw new CorruptRecordError(key, 'not JSON');
  }
  const op = decodeOperation(parsed);
  if (op === null) throw new CorruptRecordError(key, 'not an operation record');
  return op;
}

/**
 * The fleet's state in Redis: one versioned document per host, updated by compare-and-set, and
 * the indexes that find a VM's or a job's host. The only class that reads or writes these keys.
 */
export class FleetStore {
  readonly keys: FleetKeys;
  /**
   * The last version of each host document this process read or wrote. Documents are treated as
   * immutable everywhere (every change makes a new one), so a document whose version Redis still
   * holds is reused instead of read and parsed again.
   */
  private readonly lastSeen = new Map<string, HostDocument>();

  constructor(
    private readonly redis: Redis,
    prefix: string,
  ) {
    this.keys = new FleetKeys(prefix);
  }

  /** Stores a new host; throws {@link HostExistsError} when the id is taken. */
  async createHost(doc: HostDocument): Promise<HostDocument> {
    // "-1" is the version of a host that does not exist: the script refuses one that does.
    const stored = await this.write(null, { ...doc, version: 1 }, '-1', [], []);
    if (stored === null) throw new HostExistsError(doc.id);
    await this.redis.sadd(this.keys.hosts, doc.id);
    return stored;
  }

  /**
   * The document this process last read or wrote for the host, without asking Redis (null if
   * none). It may be stale: only for a change that is then committed with compare-and-set.
   */
  cachedHost(hostId: string): HostDocument | null {
    return this.lastSeen.get(hostId) ?? null;
  }

  /** The host's document, or null. */
  async getHost(hostId: string): Promise<HostDocument | null> {
    const key = this.keys.hostDoc(hostId);
    const known = this.lastSeen.get(hostId);
    // One round trip: the version only, when this process already holds that version.
    const reply = (await READ_SCRIPT.run(
      this.redis,
      [key],
      [known === undefined ? '' : String(known.version)],
    )) as string[] | null;
    if (reply === null) {
      this.lastSeen.delete(hostId);
      return null;
    }
    if (reply.length === 1) {
      if (known !== undefined && String(known.version) === reply[0]) return known;
      return this.getHostFresh(hostId);
    }
    const doc = parseHostFields(key, fieldMap(reply));
    this.remember(doc);
    return doc;
  }

  /** Reads the document whatever this process holds. */
  private async getHostFresh(hostId: string): Promise<HostDocument | null> {
    const key = this.keys.hostDoc(hostId);
    const reply = await this.redis.hgetall(key);
    if (reply[VERSION_FIELD] === undefined) return null;
    const doc = parseHostFields(key, new Map(Object.entries(reply)));
    this.remember(doc);
    return doc;
  }

  private remember(doc: HostDocument): void {
    this.lastSeen.set(doc.id, doc);
  }

  /** The host's document; throws {@link NotFoundError}. */
  async requireHost(hostId: string): Promise<HostDocument> {
    const doc = await this.getHost(hostId);
    if (doc === null) throw new NotFoundError('host', hostId);
    return doc;
  }

  /** Ids of every host, sorted. */
  async hostIds(): Promise<string[]> {
    return (await this.redis.smembers(this.keys.hosts)).sort();
  }

  /** Every host's document, in id order. */
  async listHosts(): Promise<HostDocument[]> {
    const ids = await this.hostIds();
    const replies = await this.pipelined(ids, (pipeline, id) =>
      pipeline.hgetall(this.keys.hostDoc(id)),
    );
    const docs: HostDocument[] = [];
    replies.forEach((reply, i) => {
      const fields = reply as Record<string, string>;
      const id = ids[i];
      if (id !== undefined && fields[VERSION_FIELD] !== undefined) {
        docs.push(parseHostFields(this.keys.hostDoc(id), new Map(Object.entries(fields))));
      }
    });
    return docs;
  }

  /**
   * Writes `doc` if the stored version is still `doc.version` (the version it was read at), as
   * version + 1; a finished operation is stored beside it in the same step. Returns the document
   * as stored (its terminated VMs moved out beside it), or null on a conflict.
   */
  async commit(
    doc: HostDocument,
    finished: OperationRecord | null = null,
  ): Promise<HostDocument | null> {
    return this.commitMany(doc, finished === null ? [] : [finished]);
  }

  /** {@link commit} with any number of finished operations, and the change's events. */
  async commitMany(
    doc: HostDocument,
    finished: readonly OperationRecord[],
    events: readonly FleetEvent[] = [],
  ): Promise<HostDocument | null> {
    const known = this.lastSeen.get(doc.id);
    // A document read in the earlier one-field layout is written whole, which converts it.
    const base = known?.version === doc.version && !legacyDocs.has(known) ? known : null;
    const next = { ...doc, version: doc.version + 1 };
    return this.write(base, next, String(doc.version), finished, events);
  }

  /**
   * Writes `next` if Redis still holds version `expected`: only what changed since `base` (that
   * version as this process holds it), or the whole hash without one.
   */
  private async write(
    base: HostDocument | null,
    next: HostDocument,
    expected: string,
    finished: readonly OperationRecord[],
    events: readonly FleetEvent[],
  ): Promise<HostDocument | null> {
    const { doc: kept, terminated } = withoutTerminated(next);
    const { set, del } = fieldChanges(base, kept);
    const now = Date.now();
    const result = await COMMIT_SCRIPT.run(
      this.redis,
      [
        this.keys.hostDoc(next.id),
        this.keys.terminatedVms(next.id),
        ...finished.map((op) => this.keys.finishedJob(next.id, op.id)),
        ...terminated.map((vm) => this.keys.terminatedVm(next.id, vm.id)),
      ],
      [
        expected,
        String(next.version),
        String(FINISHED_JOB_TTL_SECONDS),
        this.keys.events,
        events.length === 0 ? '' : encodeFleetEvents(events),
        base === null ? 'full' : 'delta',
        String(set.length / 2),
        String(del.length),
        String(terminated.length),
        String(now + FINISHED_JOB_TTL_SECONDS * 1000),
        String(now),
        ...set,
        ...del,
        ...finished.map(encodeOperation),
        ...terminated.map((vm) => JSON.stringify(vm)),
        ...terminated.map((vm) => vm.id),
      ],
    );
    if (result !== 1) return null;
    this.remember(kept);
    return kept;
  }

  /**
   * Read-modify-write of one host with compare-and-set, retried on conflict. `change` is pure
   * (it may run several times) and may throw a domain error to refuse, which changes nothing.
   */
  async update<T>(
    hostId: string,
    change: (doc: HostDocument) => {
      doc: HostDocument;
      value: T;
      finished?: OperationRecord | null;
    },
    attempts = 50,
  ): Promise<{ doc: HostDocument; value: T }> {
    for (let attempt = 0; attempt < attempts; attempt += 1) {
      const current = await this.requireHost(hostId);
      const { doc, value, finished } = change(current);
      if (doc === current) return { doc, value };
      const committed = await this.commit({ ...doc, version: current.version }, finished ?? null);
      if (committed !== null) return { doc: committed, value };
    }
    throw new CommitContentionError(hostId, attempts);
  }

  /**
   * Claims a VM id for a host before the VM is committed there. Null when the id belongs to a VM
   * that exists; an entry left by a create that never committed, or by a VM since terminated, is
   * taken over.
   */
  async claimVmId(vmId: string, hostId: string): Promise<VmIdClaim | null> {
    if ((await this.redis.hsetnx(this.keys.vmHost, vmId, hostId)) === 1) {
      return { previousHostId: null };
    }
    const owner = await this.redis.hget(this.keys.vmHost, vmId);
    if (owner === hostId) return { previousHostId: owner };
    if (owner !== null && (await this.getHost(owner))?.vms[vmId] !== undefined) return null;
    // Stale: swap it only if nobody changed it in between.
    const swapped = await this.redis.eval(
      "if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) return 1 end return 0",
      1,
      this.keys.vmHost,
      vmId,
      owner ?? '',
      hostId,
    );
    return swapped === 1 ? { previousHostId: owner } : null;
  }

  /** Records which host a VM lives on, unconditionally (tools that place VMs themselves). */
  async indexVm(vmId: string, hostId: string): Promise<void> {
    await this.redis.hset(this.keys.vmHost, vmId, hostId);
  }

  /**
   * Gives back a VM id claimed for a create that was refused: its index entry names again what it
   * named before the claim (a terminated VM's host, whose last record stays in reach), or goes.
   */
  async releaseVmId(vmId: string, hostId: string, claim: VmIdClaim): Promise<void> {
    await this.redis.eval(
      `if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
if ARGV[3] == '' then return redis.call('HDEL', KEYS[1], ARGV[1]) end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1`,
      1,
      this.keys.vmHost,
      vmId,
      hostId,
      claim.previousHostId ?? '',
    );
  }

  async indexJob(jobId: string, hostId: string): Promise<void> {
    await this.redis.hset(this.keys.jobHost, jobId, hostId);
  }

  private indexKey(index: FleetIndex): string {
    return index === 'jobs' ? this.keys.jobHost : this.keys.vmHost;
  }

  /** One page of an index (HSCAN): `next` is the cursor of the page after, '0' after the last. */
  async scanIndex(
    index: FleetIndex,
    cursor: string,
    count: number,
  ): Promise<{ next: string; entries: IndexEntry[] }> {
    const [next, flat] = await this.redis.hscan(this.indexKey(index), cursor, 'COUNT', count);
    const entries: IndexEntry[] = [];
    for (let i = 0; i + 1 < flat.length; i += 2) {
      entries.push({ id: flat[i] ?? '', hostId: flat[i + 1] ?? '' });
    }
    return { next, entries };
  }

  /**
   * The ids among `entries` of jobs (or VMs) that exist: in their host's document, or finished
   * (terminated) and kept beside it.
   */
  async existingEntries(index: FleetIndex, entries: readonly IndexEntry[]): Promise<Set<string>> {
    const existing = new Set<string>();
    const keptChecks: IndexEntry[] = [];
    const byHost = new Map<string, IndexEntry[]>();
    for (const entry of entries) {
      const onHost = byHost.get(entry.hostId);
      if (onHost === undefined) byHost.set(entry.hostId, [entry]);
      else onHost.push(entry);
    }
    for (const [hostId, onHost] of byHost) {
      const doc = await this.getHost(hostId);
      const live: Record<string, unknown> = (index === 'jobs' ? doc?.ops : doc?.vms) ?? {};
      for (const entry of onHost) {
        if (live[entry.id] !== undefined) existing.add(entry.id);
        else keptChecks.push(entry);
      }
    }
    const kept = await this.pipelined(keptChecks, (pipeline, e) =>
      pipeline.exists(
        index === 'jobs'
          ? this.keys.finishedJob(e.hostId, e.id)
          : this.keys.terminatedVm(e.hostId, e.id),
      ),
    );
    kept.forEach((reply, i) => {
      const entry = keptChecks[i];
      if (entry !== undefined && reply === 1) existing.add(entry.id);
    });
    return existing;
  }

  /** Drops index entries, each only if it still names the same host; returns how many. */
  async dropIndexEntries(index: FleetIndex, entries: readonly IndexEntry[]): Promise<number> {
    if (entries.length === 0) return 0;
    const dropped = await DROP_INDEX_ENTRIES_SCRIPT.run(
      this.redis,
      [this.indexKey(index)],
      entries.flatMap((e) => [e.id, e.hostId]),
    );
    return Number(dropped);
  }

  /** The VM and its host's document; throws {@link NotFoundError}. */
  async requireVm(vmId: string): Promise<{ doc: HostDocument; vm: VmRecord }> {
    const hostId = await this.redis.hget(this.keys.vmHost, vmId);
    const doc = hostId === null ? null : await this.getHost(hostId);
    if (doc === null) throw new NotFoundError('vm', vmId);
    const vm = doc.vms[vmId] ?? (await this.terminatedVm(doc.id, vmId));
    if (vm === null) throw new NotFoundError('vm', vmId);
    return { doc, vm };
  }

  /**
   * The VMs terminated on these hosts whose last records are still kept (7 days), each as
   * `GET /v1/vms/{id}` shows it: one whose id is now a VM's on its host again, or whose index
   * entry names another host (its id given to a VM there), is left out.
   */
  async terminatedVms(
    docs: readonly HostDocument[],
  ): Promise<Array<{ doc: HostDocument; vm: VmRecord }>> {
    const now = Date.now();
    const listed = await this.pipelined(docs, (pipeline, doc) =>
      pipeline.zrangebyscore(this.keys.terminatedVms(doc.id), now, '+inf'),
    );
    const candidates = docs.flatMap((doc, i) =>
      (listed[i] as string[])
        .filter((vmId) => doc.vms[vmId] === undefined)
        .map((vmId) => ({ doc, vmId })),
    );
    const owners: Array<string | null> = [];
    for (let i = 0; i < candidates.length; i += INDEX_READ_CHUNK) {
      const chunk = candidates.slice(i, i + INDEX_READ_CHUNK);
      owners.push(...(await this.redis.hmget(this.keys.vmHost, ...chunk.map((c) => c.vmId))));
    }
    const owned = candidates.filter((c, i) => owners[i] === c.doc.id);
    const records = await this.pipelined(owned, (pipeline, c) =>
      pipeline.get(this.keys.terminatedVm(c.doc.id, c.vmId)),
    );
    return owned.flatMap((c, i) => {
      const json = records[i] as string | null;
      const key = this.keys.terminatedVm(c.doc.id, c.vmId);
      return json === null ? [] : [{ doc: c.doc, vm: parseTerminatedVm(key, json) }];
    });
  }

  /** How many VMs were terminated on each host within the last 7 days (their records kept). */
  async terminatedVmCounts(hostIds: readonly string[]): Promise<number[]> {
    const now = Date.now();
    const counts = await this.pipelined(hostIds, (pipeline, hostId) =>
      pipeline.zcount(this.keys.terminatedVms(hostId), now, '+inf'),
    );
    return counts.map(Number);
  }

  /** One command per item, sent in one pipeline; their replies in order (the first error thrown). */
  private async pipelined<T>(
    items: readonly T[],
    add: (pipeline: ChainableCommander, item: T) => void,
  ): Promise<unknown[]> {
    if (items.length === 0) return [];
    const pipeline = this.redis.pipeline();
    for (const item of items) add(pipeline, item);
    const replies = (await pipeline.exec()) ?? [];
    return replies.map(([error, reply]) => {
      if (error) throw error;
      return reply;
    });
  }

  /** The last record of a VM terminated on the host (kept 7 days), or null. */
  private async terminatedVm(hostId: string, vmId: string): Promise<VmRecord | null> {
    const key = this.keys.terminatedVm(hostId, vmId);
    const json = await this.redis.get(key);
    return json === null ? null : parseTerminatedVm(key, json);
  }

  /** A job, running (in its host's document) or finished; null when unknown. */
  async getJob(jobId: string): Promise<OperationRecord | null> {
    const hostId = await this.redis.hget(this.keys.jobHost, jobId);
    if (hostId === null) return null;
    const doc = await this.getHost(hostId);
    const active = doc?.ops[jobId];
    if (active !== undefined) return active;
    const key = this.keys.finishedJob(hostId, jobId);
    const json = await this.redis.get(key);
    return json === null ? null : parseOperation(key, json);
  }

  /**
   * Claims an idempotency key for a request. Returns null when the key is new (now taken), or
   * what it already stands for.
   */
  async claimIdempotency(
    key: string,
    record: IdempotencyRecord,
  ): Promise<IdempotencyRecord | null> {
    const redisKey = this.keys.idempotency(key);
    const set = await this.redis.set(
      redisKey,
      JSON.stringify(record),
      'EX',
      IDEMPOTENCY_TTL_SECONDS,
      'NX',
    );
    if (set === 'OK') return null;
    const json = await this.redis.get(redisKey);
    if (json === null) return this.claimIdempotency(key, record);
    const parsed = JSON.parse(json) as IdempotencyRecord;
    return parsed;
  }

  /** Gives an idempotency key back (the request it was claimed for was refused). */
  async releaseIdempotency(key: string): Promise<void> {
    await this.redis.del(this.keys.idempotency(key));
  }

  /**
   * Stores a batch. A finished one is kept as long as finished jobs are (7 days), and the list of
   * batches by creation time forgets those created longer ago than that before this one.
   */
  async saveBatch(batch: BatchRecord): Promise<void> {
    const key = this.keys.batch(batch.id);
    const json = JSON.stringify(batch);
    const tx = this.redis.multi();
    if (batch.state === 'done') tx.set(key, json, 'EX', FINISHED_JOB_TTL_SECONDS);
    else tx.set(key, json);
    await tx
      .zadd(this.keys.batches, batch.createdAtMs, batch.id)
      .zremrangebyscore(
        this.keys.batches,
        '-inf',
        `(${batch.createdAtMs - FINISHED_JOB_TTL_SECONDS * 1000}`,
      )
      .exec();
  }

  async getBatch(batchId: string): Promise<BatchRecord | null> {
    const key = this.keys.batch(batchId);
    const json = await this.redis.get(key);
    if (json === null) return null;
    const batch = JSON.parse(json) as unknown;
    if (!isRecord(batch) || typeof batch.id !== 'string' || !Array.isArray(batch.members)) {
      throw new CorruptRecordError(key, 'not a batch record');
    }
    return batch as unknown as BatchRecord;
  }
}
