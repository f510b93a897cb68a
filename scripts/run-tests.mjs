#!/usr/bin/env node
// Runs every compiled spec under dist/ with node's built-in test runner.
// Usage: node scripts/run-tests.mjs [filter...]   (a filter keeps specs whose path contains it)
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';

function findSpecs(dir) {
  const found = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) found.push(...findSpecs(path));
    else if (name.endsWith('.spec.js')) found.push(path);
  }
  return found;
}

const filters = process.argv.slice(2);
const specs = findSpecs('dist')
  .filter((path) => filters.length === 0 || filters.some((filter) => path.includes(filter)))
  .sort();
if (specs.length === 0) {
  console.error('no spec files found under dist/ (run npm run build first)');
  process.exit(1);
}
const result = spawnSync(process.execPath, ['--test', '--test-reporter=spec', ...specs], {
  stdio: 'inherit',
});
process.exit(result.status ?? 1);
