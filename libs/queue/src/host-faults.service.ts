import { type HkidReleaseFaults, type HostView, hostView, setReleaseFaults } from '#fleet';
import type { FleetStore } from '#store';

/**
 * Changes a host's HKID release fault setting for experiments. Its workers read the setting
 * from the host document before each step: nothing else needs telling.
 */
export class HostFaultsService {
  constructor(
    private readonly store: FleetStore,
    private readonly now: () => number = () => Date.now(),
  ) {}

  /** Replaces the host's setting (the setting it has already changes nothing). */
  async setReleaseFaults(hostId: string, faults: HkidReleaseFaults): Promise<HostView> {
    const { doc } = await this.store.update(hostId, (current) => ({
      doc: setReleaseFaults(current, faults),
      value: null,
    }));
    return hostView(doc, this.now());
  }
}
