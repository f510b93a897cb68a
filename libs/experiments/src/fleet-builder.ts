import { type HostSpec, createHostDocument, hostCapacity, pagesNeeded, seededRandom } from '#fleet';
import { gibToBytes } from '#tdx-sim';
import { ScenarioError, type Scenario, type VmSize } from './scenario.js';
import type { Variant } from './sweep.js';

// A scenario's fleet made concrete for one variant: host ids, each VM's size (drawn from its
// group's mix with the seed) and its host (placed here, so that every target puts the same VM
// on the same host). Placement checks memory and HKIDs as the daemon's boot would, and a VM that
// fits nowhere is an error naming its group.

/** A VM of the built fleet. */
export interface FleetVm {
  id: string;
  group: string;
  vcpus: number;
  memoryGiB: number;
  hostId: string;
}

/** A host of the built fleet, with the group it comes from. */
export interface FleetHost extends HostSpec {
  group: string;
}

export interface BuiltFleet {
  hosts: FleetHost[];
  vms: FleetVm[];
}

/** What placement tracks of a host while it fills it. */
interface Room {
  index: number;
  host: FleetHost;
  freePages: number;
  freeHkids: number;
  costParams: CostParams;
}

type CostParams = Parameters<typeof pagesNeeded>[2];

/** The hosts and VMs of `scenario` under `variant`, VM sizes drawn with `seed`. */
export function buildFleet(scenario: Scenario, variant: Variant, seed: number): BuiltFleet {
  const hosts: FleetHost[] = [];
  for (const group of scenario.fleet.hosts) {
    for (let i = 1; i <= group.count; i += 1) {
      hosts.push({
        id: `${group.name}-${String(i).padStart(4, '0')}`,
        group: group.name,
        memoryGiB: group.memoryGiB,
        hkids: group.hkids,
        packages: group.packages,
        cpus: group.cpus,
        kernel: { ...group.kernel, ...variant.kernel },
        ...(group.hkidReleaseFaults === undefined
          ? {}
          : { hkidReleaseFaults: { ...group.hkidReleaseFaults } }),
      });
    }
  }
  // Hosts of one group start alike: one document per group gives their capacity.
  const blank = new Map<string, Omit<Room, 'index' | 'host'>>();
  const rooms: Room[] = hosts.map((host, index) => {
    let start = blank.get(host.group);
    if (start === undefined) {
      const doc = createHostDocument(host, 0);
      const capacity = hostCapacity(doc);
      start = {
        freePages: capacity.freePages,
        freeHkids: capacity.freeHkids,
        costParams: doc.sim.config.costParams,
      };
      blank.set(host.group, start);
    }
    return { index, host, ...start };
  });
  const random = seededRandom(seed);
  const vms: FleetVm[] = [];
  scenario.fleet.vms.forEach((group, groupIndex) => {
    const candidates = rooms.filter(
      (room) => group.hostGroups === undefined || group.hostGroups.includes(room.host.group),
    );
    const total = group.count ?? (group.perHost ?? 0) * candidates.length;
    const sizes = variant.vmSize !== null ? [{ ...variant.vmSize, weight: 1 }] : group.sizes;
    const placer =
      scenario.fleet.placement === 'pack'
        ? new PackPlacer(candidates)
        : new SpreadPlacer(candidates);
    for (let i = 1; i <= total; i += 1) {
      const size = drawSize(sizes, random);
      const room = placer.take(size);
      if (room === null) {
        throw new ScenarioError(
          `fleet.vms[${groupIndex}]: VM ${i} of ${total} in group "${group.name}" ` +
            `(${size.vcpus} vCPUs, ${size.memoryGiB} GiB) fits on no host: too little memory, ` +
            `HKIDs or CPUs left on its ${candidates.length} candidate hosts`,
        );
      }
      vms.push({
        id: `${group.name}-${String(i).padStart(5, '0')}`,
        group: group.name,
        vcpus: size.vcpus,
        memoryGiB: size.memoryGiB,
        hostId: room.host.id,
      });
    }
  });
  return { hosts, vms };
}

/** A size from the mix, by weight. */
function drawSize(sizes: readonly (VmSize & { weight: number })[], random: () => number): VmSize {
  if (sizes.length === 1) return sizes[0] as VmSize;
  const total = sizes.reduce((sum, s) => sum + s.weight, 0);
  let x = random() * total;
  for (const size of sizes) {
    x -= size.weight;
    if (x < 0) return size;
  }
  return sizes[sizes.length - 1] as VmSize;
}

/** Takes a VM's memory and HKID from the room if it fits; false if it does not. */
function tryTake(room: Room, size: VmSize): boolean {
  const needed = pagesNeeded(size.vcpus, gibToBytes(size.memoryGiB), room.costParams);
  if (room.freeHkids < 1 || room.freePages < needed || size.vcpus > room.host.cpus) return false;
  room.freePages -= needed;
  room.freeHkids -= 1;
  return true;
}

/** pack: the first host (in declaration order) the VM fits on. */
class PackPlacer {
  /** Hosts before it have no HKID left: never looked at again. */
  private first = 0;
  constructor(private readonly rooms: readonly Room[]) {}

  take(size: VmSize): Room | null {
    while (this.first < this.rooms.length && (this.rooms[this.first] as Room).freeHkids < 1) {
      this.first += 1;
    }
    for (let i = this.first; i < this.rooms.length; i += 1) {
      const room = this.rooms[i] as Room;
      if (tryTake(room, size)) return room;
    }
    return null;
  }
}

/**
 * spread: the host with the most free memory (the first declared on a tie), kept in a max-heap
 * so that a fleet of thousands of hosts places each VM in log time. A host the VM does not fit
 * on for HKIDs or CPUs is set aside for this VM only.
 */
class SpreadPlacer {
  private readonly heap: Room[] = [];
  constructor(rooms: readonly Room[]) {
    for (const room of rooms) this.push(room);
  }

  take(size: VmSize): Room | null {
    const skipped: Room[] = [];
    let chosen: Room | null = null;
    while (this.heap.length > 0) {
      const room = this.pop();
      if (tryTake(room, size)) {
        chosen = room;
        this.push(room);
        break;
      }
      skipped.push(room);
      // The most free memory is not enough: no host has enough.
      const needed = pagesNeeded(size.vcpus, gibToBytes(size.memoryGiB), room.costParams);
      if (room.freePages < needed) break;
    }
    for (const room of skipped) if (room.freeHkids > 0) this.push(room);
    return chosen;
  }

  private before(a: Room, b: Room): boolean {
    return a.freePages > b.freePages || (a.freePages === b.freePages && a.index < b.index);
  }

  private push(room: Room): void {
    const heap = this.heap;
    heap.push(room);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.before(room, heap[parent] as Room)) break;
      heap[i] = heap[parent] as Room;
      i = parent;
    }
    heap[i] = room;
  }

  private pop(): Room {
    const heap = this.heap;
    const top = heap[0] as Room;
    const last = heap.pop() as Room;
    if (heap.length === 0) return top;
    let i = 0;
    for (;;) {
      let child = 2 * i + 1;
      if (child >= heap.length) break;
      const right = child + 1;
      if (right < heap.length && this.before(heap[right] as Room, heap[child] as Room))
        child = right;
      if (!this.before(heap[child] as Room, last)) break;
      heap[i] = heap[child] as Room;
      i = child;
    }
    heap[i] = last;
    return top;
  }
}
