import { NoCapacityError } from './errors.js';
import type { HostDocument } from './model.js';
import { capacityProblem, hostCapacity } from './operations.js';

/**
 * Picks the host for a new VM among `docs`: one with enough free memory and a free HKID, the
 * one with the most free memory first (spreads load, keeps reboot headroom). Throws
 * {@link NoCapacityError} listing why each host was passed over.
 */
export function chooseHost(
  docs: readonly HostDocument[],
  vcpus: number,
  memoryBytes: number,
): HostDocument {
  const reasons: string[] = [];
  let best: { doc: HostDocument; free: number } | null = null;
  for (const doc of docs) {
    const problem = capacityProblem(doc, vcpus, memoryBytes);
    if (problem !== null) {
      reasons.push(problem);
      continue;
    }
    const free = hostCapacity(doc).freePages;
    if (best === null || free > best.free || (free === best.free && doc.id < best.doc.id))
      best = { doc, free };
  }
  if (best === null) {
    throw new NoCapacityError(
      docs.length === 0 ? 'there are no hosts' : `no host can take the VM: ${reasons.join('; ')}`,
      { reasons },
    );
  }
  return best.doc;
}
