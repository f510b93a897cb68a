import type { z } from 'zod';

// What the first of a document's validation issues says, naming its field the way a user writes
// it (`phases[1].maxPerHost: expected an integer > 0`): the scenario files and the fleet files
// report their errors alike.

/** `hosts[2].memoryGiB` from a zod path; `whole` names the document itself. */
function fieldPath(path: readonly PropertyKey[], whole: string): string {
  let out = '';
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else out += out === '' ? String(key) : `.${String(key)}`;
  }
  return out === '' ? whole : out;
}

function issueText(issue: z.core.$ZodIssue, whole: string): string {
  const where = fieldPath(issue.path, whole);
  if (issue.code === 'unrecognized_keys') {
    const keys = issue.keys.map((k) => `"${k}"`).join(', ');
    return `${where}: unknown ${issue.keys.length === 1 ? 'key' : 'keys'} ${keys}`;
  }
  if (issue.code === 'invalid_type' && issue.input === undefined) return `${where}: required`;
  return `${where}: ${issue.message}`;
}

/** The first issue, and how many more there are. */
export function describeIssues(issues: readonly z.core.$ZodIssue[], whole: string): string {
  const first = issues[0];
  if (first === undefined) return `${whole}: invalid`;
  const more = issues.length > 1 ? ` (and ${issues.length - 1} more)` : '';
  return `${issueText(first, whole)}${more}`;
}
