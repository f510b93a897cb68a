#!/usr/bin/env node
// `npm start` from a fresh clone: installs dependencies if needed, builds, then runs one of the
// daemon's processes in the foreground, passing SIGINT/SIGTERM on and exiting with its code.
// Usage: node scripts/start.mjs [fleetd|api|worker]   (default fleetd)
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { constants } from 'node:os';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const processes = ['fleetd', 'api', 'worker'];
const name = process.argv[2] ?? 'fleetd';
if (!processes.includes(name)) {
  console.error(`start: unknown process "${name}"; expected one of ${processes.join(', ')}`);
  process.exit(2);
}

let current;
let stopping = false;
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    stopping = true;
    // A Ctrl-C reaches the child from the terminal as well; a second SIGINT is harmless to it.
    if (current && current.exitCode === null && current.signalCode === null) {
      current.kill(signal);
    }
  });
}

/** Runs a command with inherited stdio; resolves with its exit code (128 + n for signal n). */
function run(command, args) {
  return new Promise((resolve) => {
    const child = spawn(command, args, { cwd: root, stdio: 'inherit' });
    current = child;
    child.once('error', (error) => {
      console.error(`start: cannot run ${command}: ${error.message}`);
      resolve(127);
    });
    child.once('exit', (code, signal) => {
      current = undefined;
      resolve(code ?? 128 + (constants.signals[signal] ?? 0));
    });
  });
}

async function step(command, args, what) {
  const code = await run(command, args);
  if (code !== 0) {
    if (!stopping) console.error(`start: ${what} failed (exit code ${code})`);
    process.exit(code);
  }
  if (stopping) process.exit(130);
}

if (!existsSync(join(root, 'node_modules'))) {
  console.error('start: node_modules is missing; running npm ci');
  await step('npm', ['ci', '--no-audit', '--no-fund'], 'npm ci');
}
await step('npm', ['run', '-s', 'build'], 'the build');
process.exitCode = await run(process.execPath, [
  join(root, 'dist', 'apps', name, 'src', 'main.js'),
]);
