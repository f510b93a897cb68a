import type { JobStep, OperationRecord } from '#fleet';

/**
 * How an operation record is stored (a host document's `op:<id>` field, and a finished job's own
 * key): JSON, with each step as an array instead of an object. The steps are most of a record (a
 * reboot has 15 to 17 of them) and their keys most of each step, so a record is about half as
 * long: every finished job is written once and kept for days, and a running one is rewritten at
 * every step. Lossless: reading it back gives the record that was written.
 */

/** A step as stored: these fields in this order, then any other it has in an object. */
const STEP_FIELDS = [
  'name',
  'track',
  'state',
  'virtualSeconds',
  'virtualStart',
  'wallMs',
  'startedAtMs',
  'endsAtMs',
  'waitedMs',
  'waitedSeconds',
] as const satisfies ReadonlyArray<keyof JobStep>;
const IN_ORDER: ReadonlySet<string> = new Set(STEP_FIELDS);

/** Marks the stored form (a record without it is the plain one that earlier versions wrote). */
const STEPS_AS_ARRAYS = 'stepArrays';

/** Step names, tracks and states come from small sets: each is quoted once. */
const quoted = new Map<string, string>();
function quote(text: string): string {
  let json = quoted.get(text);
  if (json === undefined) {
    json = JSON.stringify(text);
    if (quoted.size < 1000) quoted.set(text, json);
  }
  return json;
}

/** A number or null as JSON.stringify writes it. */
function numberJson(n: number | null): string {
  return n !== null && Number.isFinite(n) ? String(n) : 'null';
}

/**
 * One step as a JSON array. Written by hand: JSON.stringify takes about three times as long over
 * a record's steps, and a worker writes one record per job.
 */
function stepJson(s: JobStep): string {
  let others: Record<string, unknown> | null = null;
  for (const key in s) {
    const value = s[key as keyof JobStep];
    if (!IN_ORDER.has(key) && value !== undefined) (others ??= {})[key] = value;
  }
  return (
    `[${quote(s.name)},${quote(s.track)},${quote(s.state)},${numberJson(s.virtualSeconds)},` +
    `${numberJson(s.virtualStart)},${numberJson(s.wallMs)},${numberJson(s.startedAtMs)},` +
    `${numberJson(s.endsAtMs)},${numberJson(s.waitedMs)},${numberJson(s.waitedSeconds)}` +
    `${others === null ? '' : `,${JSON.stringify(others)}`}]`
  );
}

function stepFrom(fields: unknown[]): JobStep {
  const step: Record<string, unknown> = {};
  STEP_FIELDS.forEach((name, i) => {
    step[name] = fields[i];
  });
  const others = fields[STEP_FIELDS.length];
  if (typeof others === 'object' && others !== null) Object.assign(step, others);
  return step as unknown as JobStep;
}

/** The stored form of `op`, without its plan (stored apart while it runs, dropped when it ends). */
export function encodeOperation(op: OperationRecord): string {
  const rest = JSON.stringify({ ...op, plan: undefined, steps: undefined });
  let steps = '';
  for (const step of op.steps) steps += (steps === '' ? '' : ',') + stepJson(step);
  // `rest` is an object with at least an id: the steps go in before its closing brace.
  return `${rest.slice(0, -1)},"${STEPS_AS_ARRAYS}":[${steps}]}`;
}

/**
 * The record from its stored form (or the plain JSON earlier versions wrote), with `plan` null;
 * null when it is not a record of this shape.
 */
export function decodeOperation(value: unknown): OperationRecord | null {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return null;
  const record = value as Record<string, unknown>;
  const stored = record[STEPS_AS_ARRAYS];
  if (Array.isArray(stored)) {
    if (!stored.every((s) => Array.isArray(s) && s.length >= STEP_FIELDS.length)) return null;
    delete record[STEPS_AS_ARRAYS];
    record.steps = (stored as unknown[][]).map(stepFrom);
  }
  if (
    typeof record.id !== 'string' ||
    typeof record.state !== 'string' ||
    !Array.isArray(record.steps)
  ) {
    return null;
  }
  record.plan ??= null;
  // JSON has no Infinity: a track that waits with nothing known to change was written as null.
  const tracks = record.tracks as Record<string, { readyAt: number | null }> | undefined;
  if (tracks !== undefined && tracks !== null) {
    for (const cursor of Object.values(tracks)) cursor.readyAt ??= Infinity;
  }
  return record as unknown as OperationRecord;
}
