/**
 * The kernel switches are declared once; the host's defaults, its validation and the list of
 * every kernel derive from that declaration, so each check here runs over the declared table.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { InvalidHostConfigError, makeHostConfig } from './config.js';
import {
  ALL_KERNELS,
  KERNEL_SWITCHES,
  KERNEL_SWITCH_NAMES,
  MAINLINE_KERNEL,
  isFlagSwitch,
  kernelLabel,
  kernelSwitchesText,
} from './kernel-switches.js';

/** Each switch, with a value it does not declare. */
const UNDECLARED: ReadonlyArray<[string, unknown]> = KERNEL_SWITCH_NAMES.map((name) => [
  name,
  isFlagSwitch(name) ? 'yes' : 'not-a-value',
]);

describe('kernel switches', () => {
  it('ALL_KERNELS holds every combination of the declared values once, mainline first', () => {
    const combinations = KERNEL_SWITCH_NAMES.reduce(
      (n, name) => n * KERNEL_SWITCHES[name].values.length,
      1,
    );
    assert.equal(ALL_KERNELS.length, combinations);
    assert.equal(new Set(ALL_KERNELS.map((k) => JSON.stringify(k))).size, combinations);
    assert.deepEqual(ALL_KERNELS[0], MAINLINE_KERNEL);
    for (const kernel of ALL_KERNELS) {
      assert.deepEqual(Object.keys(kernel), [...KERNEL_SWITCH_NAMES]);
    }
  });

  it('the mainline kernel has every switch at its declared mainline value', () => {
    for (const name of KERNEL_SWITCH_NAMES) {
      assert.equal(MAINLINE_KERNEL[name], KERNEL_SWITCHES[name].mainline, name);
      assert.ok(
        (KERNEL_SWITCHES[name].values as readonly unknown[]).includes(MAINLINE_KERNEL[name]),
      );
    }
    assert.deepEqual(makeHostConfig().kernel, MAINLINE_KERNEL);
  });

  it('a host takes every kernel of ALL_KERNELS as given', () => {
    for (const kernel of ALL_KERNELS) {
      assert.deepEqual(makeHostConfig({ kernel }).kernel, kernel, kernelLabel(kernel));
    }
  });

  for (const name of KERNEL_SWITCH_NAMES) {
    it(`a switch left out is mainline's (${name})`, () => {
      const { [name]: _left, ...others } = ALL_KERNELS[ALL_KERNELS.length - 1] ?? MAINLINE_KERNEL;
      assert.equal(makeHostConfig({ kernel: others }).kernel[name], KERNEL_SWITCHES[name].mainline);
    });
  }

  for (const [name, wrong] of UNDECLARED) {
    it(`a host refuses a ${name} the declaration does not have, naming kernel.${name}`, () => {
      assert.throws(
        () => makeHostConfig({ kernel: { [name]: wrong } }),
        (error: unknown) =>
          error instanceof InvalidHostConfigError && error.message.startsWith(`kernel.${name} `),
      );
    });
  }

  it('a host refuses a key that is not a switch, listing the declared ones', () => {
    assert.throws(
      () => makeHostConfig({ kernel: { turbo: true } as never }),
      new InvalidHostConfigError(
        `kernel.turbo is not a kernel switch (${KERNEL_SWITCH_NAMES.join(', ')})`,
      ),
    );
  });

  it('labels and switch texts tell every kernel apart, and name every switch', () => {
    const labels = new Set(ALL_KERNELS.map(kernelLabel));
    const texts = new Set(ALL_KERNELS.map(kernelSwitchesText));
    assert.equal(labels.size, ALL_KERNELS.length);
    assert.equal(texts.size, ALL_KERNELS.length);
    for (const kernel of ALL_KERNELS) {
      const text = kernelSwitchesText(kernel);
      for (const name of KERNEL_SWITCH_NAMES) {
        assert.ok(text.includes(`${name}=${String(kernel[name])}`), text);
      }
    }
  });

  it('keeps the labels and messages it always had; the guest_memfd switches show off mainline', () => {
    assert.equal(kernelLabel(MAINLINE_KERNEL), 'terminate=none link=off 4K');
    assert.equal(
      kernelLabel({ ...MAINLINE_KERNEL, guestMemfdFlags: 'none', guestMemfdTree: 'kvm-x86-2026' }),
      'terminate=none link=off 4K gmem-flags=none gmem-tree=kvm-x86-2026',
    );
    assert.equal(
      kernelSwitchesText({
        ...MAINLINE_KERNEL,
        terminateVm: 'v4',
        linkGuestMemfd: true,
        privatePageSize: '2M',
      }),
      'terminateVm=v4 linkGuestMemfd=true privatePageSize=2M guestMemfdFlags=mmap guestMemfdTree=mainline',
    );
    const messages: Array<[Record<string, unknown>, string]> = [
      [{ terminateVm: 'v9' }, 'kernel.terminateVm must be none, v4 or aug2025'],
      [{ linkGuestMemfd: 'yes' }, 'kernel.linkGuestMemfd must be a boolean'],
      [{ privatePageSize: '1G' }, 'kernel.privatePageSize must be 4K or 2M'],
      [{ guestMemfdFlags: 'all' }, 'kernel.guestMemfdFlags must be mmap or none'],
      [{ guestMemfdTree: 'next' }, 'kernel.guestMemfdTree must be mainline or kvm-x86-2026'],
    ];
    for (const [kernel, message] of messages) {
      assert.throws(() => makeHostConfig({ kernel }), { message });
    }
  });
});
