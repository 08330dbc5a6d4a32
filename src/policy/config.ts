/**
 * The control plane's policy: one file (YAML or JSON), validated with clear errors; everything
 * left out takes the documented default. `roam policy show` prints the policy in force.
 */
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { RoamError } from '../errors.js';
import { SURVIVAL_PRIOR_SESSIONS } from './availability.js';

const fraction = z.number().min(0).max(1);

export const policySchema = z.strictObject({
  /** Whether the control plane moves guests by itself. */
  enabled: z.boolean().default(true),
  /** Weights of each resource's headroom in a host's utility (normalised to sum to 1). */
  weights: z
    .strictObject({
      cpu: z.number().min(0).default(0.7),
      memory: z.number().min(0).default(0.2),
      network: z.number().min(0).default(0.1),
    })
    .default({ cpu: 0.7, memory: 0.2, network: 0.1 })
    .refine((w) => w.cpu + w.memory + w.network > 0, 'at least one weight must be above 0'),
  /** A host whose utility stays below this for `windowSeconds` makes its guests look elsewhere. */
  threshold: fraction.default(0.4),
  windowSeconds: z.number().min(0).max(3600).default(10),
  /** A move needs a candidate this many times better than where the guest is (hysteresis). */
  margin: z.number().min(1).max(100).default(1.3),
  /** After a move, a guest stays put at least this long. */
  cooldownSeconds: z.number().min(0).max(86_400).default(60),
  /**
   * A deadline guest is not held to `minStayProbability`, but a host where its chance to finish in
   * time is below this counts as one where it cannot (a near-certain restart is no chance); if no
   * host is left, the guest is too late everywhere and goes where it is likely to finish at all.
   */
  minFinishProbability: fraction.default(0.1),
  /**
   * A guest with a deadline that can still finish in time where it is moves only for a chance to
   * finish in time at least this much higher (if the new host leaves, its work so far is lost);
   * being faster is no reason by itself.
   */
  finishMargin: fraction.default(0.05),
  /**
   * ...unless it would finish there with less than this share of its work's time to spare (at the
   * rate it gets now, which on a degraded host may fall further): then a candidate faster by the
   * margin and no less likely to finish it in time takes it. Ranking hosts for a deadline guest (to
   * place it, or as move targets), a host where it would finish with less than this to spare
   * counts as `finishMargin` less likely to finish it in time.
   */
  deadlineBuffer: z.number().min(0).max(10).default(0.25),
  /** Candidates must stay this long with at least `minStayProbability`. */
  horizonMinutes: z.number().min(0).max(10_080).default(10),
  minStayProbability: fraction.default(0.5),
  /**
   * How many sessions of the whole fleet's history a host's own history is weighed against: its
   * P(stay) at an age is shrunk towards the fleet's by n / (n + this), n its sessions that lasted
   * that long (a handful of sessions would otherwise say "certain to stay" between their ends).
   */
  survivalPriorSessions: z.number().min(0).max(1000).default(SURVIVAL_PRIOR_SESSIONS),
  /** Round-trip time to the proxy that halves a candidate's worth. */
  rttHalfMs: z.number().positive().max(60_000).default(50),
  /** Moves under way at once, fleet-wide. */
  maxConcurrentMoves: z.int().min(1).max(1000).default(2),
  precopy: z.boolean().default(true),
  /**
   * How often each running guest's image is copied to the proxy (0: never). A host that leaves
   * without a drain (it crashed, lost power, was cut off) then costs its guests at most this much
   * work: each resumes from its last image on its backup host, or the best host the policy finds.
   */
  backupEverySeconds: z.number().min(0).max(86_400).default(300),
  /** Backup images being taken at once, fleet-wide (each is a guest's whole memory on the wire). */
  maxConcurrentBackups: z.int().min(1).max(1000).default(2),
});

export type Policy = z.infer<typeof policySchema>;

export const DEFAULT_POLICY: Policy = policySchema.parse({});

/** Parses a policy from a file's text; errors name the file and the field. */
export function parsePolicy(text: string, file = 'the policy'): Policy {
  let raw: unknown;
  try {
    raw = file.endsWith('.json') ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    throw new RoamError(
      'ROAM_ERR_USAGE',
      `${file} is not valid ${file.endsWith('.json') ? 'JSON' : 'YAML'}: ${(err as Error).message}`,
    );
  }
  const result = policySchema.safeParse(raw ?? {});
  if (!result.success) {
    const problems = result.error.issues.map((i) => `${i.path.length ? i.path.join('.') : '(top)'}: ${i.message}`);
    throw new RoamError('ROAM_ERR_USAGE', `${file}: ${problems.join('; ')}`);
  }
  return result.data;
}

export function loadPolicy(file: string | undefined): Policy {
  if (!file) return DEFAULT_POLICY;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new RoamError('ROAM_ERR_IO', `cannot read the policy file ${file}: ${(err as Error).message}`);
  }
  return parsePolicy(text, file);
}
