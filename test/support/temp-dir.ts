import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A fresh temporary directory and a function that removes it. */
export async function makeTempDir(
  label: string,
): Promise<{ readonly path: string; remove(): Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), `tdxfleet-${label}-`));
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}
