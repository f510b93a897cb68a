import {
  type BatchRecord,
  type FleetEvent,
  FleetError,
  type HostDocument,
  NotFoundError,
  type OperationRecord,
  type VmRecord,
} from '#fleet';
import type { Redis } from 'ioredis';
import { FleetKeys } from './keys.js';

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

/** How long finished jobs and idempotency keys are kept. */
export const FINISHED_JOB_TTL_SECONDS = 7 * 24 * 3600;
export const IDEMPOTENCY_TTL_SECONDS = 24 * 3600;

// Commits a host document if its version is still the one it was read at; finished operations
// (KEYS[2..], ARGV[7..]) are stored beside it in the same step, and the change's events (ARGV[6],
// if any) published on the channel ARGV[5]. Returns 1, or 0 on a conflict.
const COMMIT_SCRIPT = `
local current = redis.call('HGET', KEYS[1], 'version')
if (current or '-1') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'version', ARGV[2], 'doc', ARGV[3])
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 5], 'EX', ARGV[4])
end
if ARGV[6] ~= '' then redis.call('PUBLISH', ARGV[5], ARGV[6]) end
return 1
`;

// Returns nil for a missing document, {version} when the caller already holds that version,
// else {version, doc}.
const READ_SCRIPT = `
local version = redis.call('HGET', KEYS[1], 'version')
if not version then return nil end
if version == ARGV[1] then return {version} end
return {version, redis.call('HGET', KEYS[1], 'doc')}
`;

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Checks that a host document read from Redis has the shape this code relies on (Redis content
 * is input like any other). Deeper consistency is the simulator's `checkInvariants`.
 */
function parseHostDocument(key: string, json: string, version: string): HostDocument {
  let doc: unknown;
  try {
    doc = JSON.parse(json);
  } catch {
    throw new CorruptRecordError(key, 'not JSON');
  }
  if (
    !isRecord(doc) ||
    typeof doc.id !== 'string' ||
    !isRecord(doc.sim) ||
    !isRecord(doc.vms) ||
    !isRecord(doc.ops) ||
    !Array.isArray(doc.settles) ||
    typeof doc.hkidReleaseBusyUntilMs !== 'number'
  ) {
    throw new CorruptRecordError(key, 'not a host document');
  }
  const parsedVersion = Number(version);
  if (!Number.isSafeInteger(parsedVersion)) throw new CorruptRecordError(key, 'bad version');
  return { ...(doc as unknown as HostDocument), version: parsedVersion };
}

function parseOperation(key: string, json: string): OperationRecord {
  let op: unknown;
  try {
    op = JSON.parse(json);
  } catch {
    throw new CorruptRecordError(key, 'not JSON');
  }
  if (
    !isRecord(op) ||
    typeof op.id !== 'string' ||
    typeof op.state !== 'string' ||
    !Array.isArray(op.steps)
  ) {
    throw new CorruptRecordError(key, 'not an operation record');
  }
  return op as unknown as OperationRecord;
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
    const key = this.keys.hostDoc(doc.id);
    const created = await this.redis.hsetnx(key, 'version', '1');
    if (created === 0) throw new HostExistsError(doc.id);
    const stored = { ...doc, version: 1 };
    await this.redis.hset(key, 'doc', JSON.stringify(stored));
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
    const reply = (await this.redis.eval(
      READ_SCRIPT,
      1,
      key,
      known === undefined ? '' : String(known.version),
    )) as [string, string?] | null;
    if (reply === null) {
      this.lastSeen.delete(hostId);
      return null;
    }
    const [version, json] = reply;
    if (json === undefined) {
      if (known !== undefined && String(known.version) === version) return known;
      return this.getHostFresh(hostId);
    }
    const doc = parseHostDocument(key, json, version);
    this.remember(doc);
    return doc;
  }

  /** Reads the document whatever this process holds. */
  private async getHostFresh(hostId: string): Promise<HostDocument | null> {
    const key = this.keys.hostDoc(hostId);
    const [version, json] = await this.redis.hmget(key, 'version', 'doc');
    if (version == null || json == null) return null;
    const doc = parseHostDocument(key, json, version);
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
    if (ids.length === 0) return [];
    const pipeline = this.redis.pipeline();
    for (const id of ids) pipeline.hmget(this.keys.hostDoc(id), 'version', 'doc');
    const replies = (await pipeline.exec()) ?? [];
    const docs: HostDocument[] = [];
    replies.forEach(([error, reply], i) => {
      if (error !== null) throw error;
      const [version, json] = reply as [string | null, string | null];
      const id = ids[i];
      if (id !== undefined && version !== null && json !== null) {
        docs.push(parseHostDocument(this.keys.hostDoc(id), json, version));
      }
    });
    return docs;
  }

  /**
   * Writes `doc` if the stored version is still `doc.version` (the version it was read at), as
   * version + 1; a finished operation is stored beside it in the same step. False on a conflict.
   */
  async commit(
    doc: HostDocument,
    finished: OperationRecord | null = null,
  ): Promise<HostDocument | null> {
    return this.commitMany(doc, finished === null ? [] : [finished]);
  }

  /** {@link commit} with any number of finished operations. */
  async commitMany(
    doc: HostDocument,
    finished: readonly OperationRecord[],
    events: readonly FleetEvent[] = [],
  ): Promise<HostDocument | null> {
    const next = { ...doc, version: doc.version + 1 };
    const result = await this.redis.eval(
      COMMIT_SCRIPT,
      1 + finished.length,
      this.keys.hostDoc(doc.id),
      ...finished.map((op) => this.keys.finishedJob(doc.id, op.id)),
      String(doc.version),
      String(next.version),
      JSON.stringify(next),
      String(FINISHED_JOB_TTL_SECONDS),
      this.keys.events,
      events.length === 0 ? '' : JSON.stringify(events),
      ...finished.map((op) => JSON.stringify(op)),
    );
    if (result !== 1) return null;
    this.remember(next);
    return next;
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
   * Claims a VM id for a host before the VM is committed there. False when the id belongs to a
   * VM that exists; an entry left by a create that never committed is taken over.
   */
  async claimVmId(vmId: string, hostId: string): Promise<boolean> {
    if ((await this.redis.hsetnx(this.keys.vmHost, vmId, hostId)) === 1) return true;
    const owner = await this.redis.hget(this.keys.vmHost, vmId);
    if (owner === hostId) return true;
    if (owner !== null && (await this.getHost(owner))?.vms[vmId] !== undefined) return false;
    // Stale: swap it only if nobody changed it in between.
    const swapped = await this.redis.eval(
      "if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) return 1 end return 0",
      1,
      this.keys.vmHost,
      vmId,
      owner ?? '',
      hostId,
    );
    return swapped === 1;
  }

  /** Records which host a VM lives on, unconditionally (tools that place VMs themselves). */
  async indexVm(vmId: string, hostId: string): Promise<void> {
    await this.redis.hset(this.keys.vmHost, vmId, hostId);
  }

  /** Gives back a VM id claimed for a create that was refused. */
  async releaseVmId(vmId: string, hostId: string): Promise<void> {
    await this.redis.eval(
      "if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('HDEL', KEYS[1], ARGV[1]) end return 0",
      1,
      this.keys.vmHost,
      vmId,
      hostId,
    );
  }

  async indexJob(jobId: string, hostId: string): Promise<void> {
    await this.redis.hset(this.keys.jobHost, jobId, hostId);
  }

  /** The VM and its host's document; throws {@link NotFoundError}. */
  async requireVm(vmId: string): Promise<{ doc: HostDocument; vm: VmRecord }> {
    const hostId = await this.redis.hget(this.keys.vmHost, vmId);
    const doc = hostId === null ? null : await this.getHost(hostId);
    const vm = doc?.vms[vmId];
    if (doc === null || vm === undefined) throw new NotFoundError('vm', vmId);
    return { doc, vm };
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

  async saveBatch(batch: BatchRecord): Promise<void> {
    await this.redis
      .multi()
      .set(this.keys.batch(batch.id), JSON.stringify(batch))
      .zadd(this.keys.batches, batch.createdAtMs, batch.id)
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
