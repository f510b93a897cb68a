import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

// What a result records of the tool that made it: the package's version and, in a clone, the
// git revision it was built from.

/** The project's root, from this file in dist/apps/cli/src/experiment. */
const ROOT = new URL('../../../../../', import.meta.url);

/** The version in the package's package.json. */
export function packageVersion(): string {
  const manifest = JSON.parse(readFileSync(new URL('package.json', ROOT), 'utf8')) as {
    version?: unknown;
  };
  if (typeof manifest.version !== 'string') throw new Error('package.json has no version');
  return manifest.version;
}

/** The git revision of the checkout the tool runs from, or null outside a git checkout. */
export function gitRevision(): string | null {
  try {
    const out = execFileSync('git', ['rev-parse', 'HEAD'], {
      cwd: ROOT,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    const revision = out.trim();
    return /^[0-9a-f]{40}$/.test(revision) ? revision : null;
  } catch {
    return null;
  }
}
