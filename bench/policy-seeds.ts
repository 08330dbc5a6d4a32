/**
 * The simulator alone, per seed and policy, one line each (for checking a policy change on more
 * traces than bench:policy's two): `node --import tsx bench/policy-seeds.ts 1,2,3 roam,oracle`
 * (names: the policies, or a variant from VARIANTS in policy-sim.ts, e.g. roam-no-images).
 * POLICY_DIR=<folder> runs the policy code in that folder instead (a copy of an older src/policy,
 * its config.ts reduced to `export type Policy = never;`); POLICY='{"finishMargin": 0.1}' overrides
 * fields of the default policy.
 */
import { pathToFileURL } from 'node:url';
import type * as Availability from '../src/policy/availability.js';
import { DEFAULT_POLICY, parsePolicy } from '../src/policy/config.js';
import type * as Decide from '../src/policy/decide.js';
import { CURRENT_CODE, POLICY_NAMES, row, simulate, type PolicyCode } from './policy-sim.js';
import { MINUTE, benchTrace, makeTrace } from './policy-trace.js';

async function codeIn(dir: string | undefined): Promise<PolicyCode> {
  if (!dir) return CURRENT_CODE;
  const a = (await import(pathToFileURL(`${dir}/availability.ts`).href)) as typeof Availability;
  const d = (await import(pathToFileURL(`${dir}/decide.ts`).href)) as typeof Decide;
  const { decide, placeGuest, rankCandidates, UtilityMonitor } = d;
  return { fitAvailability: a.fitAvailability, decide, placeGuest, rankCandidates, UtilityMonitor };
}

const code = await codeIn(process.env['POLICY_DIR']);
const policy = process.env['POLICY'] ? parsePolicy(process.env['POLICY'], 'POLICY.json') : DEFAULT_POLICY;

const seeds = (process.argv[2] ?? '1,2').split(',').map(Number);
const names = process.argv[3]?.split(',') ?? POLICY_NAMES;
for (const seed of seeds) {
  const trace = makeTrace(benchTrace(seed));
  for (const name of names) {
    const which = row(name, policy);
    if (!which) throw new Error(`no such policy or variant: ${name}`);
    const r = simulate(trace, which.name, { code, stepMs: 10_000, refitMs: 30 * MINUTE, policy: which.policy });
    console.log(
      [
        `seed ${seed}`,
        name.padEnd(14),
        `missed ${r.missed}/${r.guests}`,
        `killed ${r.kills}`,
        `restored ${r.restores}`,
        `lost ${r.lostHours.toFixed(1)} h`,
        `kept ${r.savedHours.toFixed(1)} h`,
        `images ${r.images} (${r.imagesLost} lost)`,
        `moves ${r.migrations}`,
        `failed ${r.failedMigrations}`,
        `backup ${r.backupMoves}`,
        `drained ${r.drainSaved}`,
        `done ${r.completedHours.toFixed(1)} h`,
        `${(r.wallMs / 1000).toFixed(1)} s`,
      ].join('  '),
    );
  }
}
