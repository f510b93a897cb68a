#!/usr/bin/env node
// `npm run sim`: the sim command alone, as `tdx-fleet sim` runs it (see sim-command.ts).
import { runSim } from './sim-command.js';

process.exitCode = runSim(process.argv.slice(2));
