/**
 * Why did a guest miss its deadline? Runs Roam's policy (and the oracle, for comparison) in the
 * simulator on the given seeds and prints, for every guest Roam made late, its whole history: each
 * host it was on, the model's P(stay) for that host at the time (for the policy's horizon and until
 * the guest's work would be done there), when the host really left, and why the guest left it;
 * its backup images (when taken, with how much work) and its restores from them.
 *
 *   node --import tsx bench/policy-misses.ts [seeds, default 1,2] [row, default roam]
 *     (BENCH_HOSTS=160, POLICY='{...}'; row: a policy name or a variant, e.g. roam-no-images)
 */
import { DEFAULT_POLICY, parsePolicy } from '../src/policy/config.js';
import { CURRENT_CODE, row, simulate, type SimEvent, type SimResult } from './policy-sim.js';
import { MINUTE, benchTrace, makeTrace, type Trace, type TraceHost } from './policy-trace.js';

const SEEDS = (process.argv[2] ?? '1,2').split(',').map(Number);
const ROW = process.argv[3] ?? 'roam';
/** POLICY='{"finishMargin": 0.1}' overrides fields of the default policy. */
const POLICY = process.env['POLICY'] ? parsePolicy(process.env['POLICY'], 'POLICY.json') : DEFAULT_POLICY;
const HORIZON_MS = POLICY.horizonMinutes * MINUTE;

const min = (ms: number): string => `${(ms / MINUTE).toFixed(1)} min`;

/** One line per event, with the numbers the model gave for the host the guest went to. */
function describe(trace: Trace, e: SimEvent, workMs: number, byId: Map<string, TraceHost>): string {
  const at = `+${min(e.now - trace.evalStart)}`;
  const hostInfo = (id: string, doneMs: number): string => {
    const h = byId.get(id);
    if (!h) return id;
    const s = h.sessions.find((x) => x.joinedAt <= e.now && x.endedAt > e.now);
    const age = s ? e.now - s.joinedAt : 0;
    const span = (workMs - doneMs) / h.score;
    const p = 'pStay' in e && e.pStay ? e.pStay : undefined;
    const model = p
      ? `P(stay ${min(HORIZON_MS)}) ${p(id, age, HORIZON_MS).toFixed(2)}, P(stay ${min(span)}) ${p(id, age, span).toFixed(2)}`
      : '';
    const truth = s ? `really leaves in ${min(s.endedAt - e.now)}${s.graceful ? ' (graceful)' : ' (hard)'}` : 'down';
    return `${h.name} (score ${h.score.toFixed(2)}, ${h.cores} cores, up ${min(age)}; ${model}; ${truth})`;
  };
  switch (e.kind) {
    case 'place':
      return `${at} placed (${e.via}) on ${hostInfo(e.to, 0)}`;
    case 'move':
      return `${at} ${e.cause} move ${byId.get(e.from ?? '')?.name ?? '-'} -> ${hostInfo(e.to, e.doneMs)}, backup ${byId.get(e.backup ?? '')?.name ?? 'none'}, done ${min(e.doneMs)}${e.message ? `\n        ${e.message}` : ''}`;
    case 'moved':
      return `${at} arrived on ${byId.get(e.to)?.name}`;
    case 'move-failed':
      return `${at} move to ${byId.get(e.to)?.name} failed (target left)`;
    case 'killed':
      return (
        `${at} KILLED with ${byId.get(e.host)?.name} (${e.graceful ? 'graceful, not drained' : 'hard'}), lost ${min(e.lostMs)}` +
        (e.image ? `; restoring the image of +${min(e.image.at - trace.evalStart)} (${min(e.image.doneMs)} done)` : '')
      );
    case 'imaged':
      return `${at} image of +${min(e.at - trace.evalStart)} at the proxy (${min(e.doneMs)} done, taken on ${byId.get(e.host)?.name})`;
    case 'image-lost':
      return `${at} image lost (${byId.get(e.host)?.name} left before it reached the proxy)`;
    case 'restore':
      return `${at} restoring (${e.via}) on ${hostInfo(e.to, e.doneMs)}, done ${min(e.doneMs)}`;
    case 'finished':
      return `${at} finished on ${byId.get(e.host)?.name} at +${min(e.at - trace.evalStart)}`;
  }
}

interface Run {
  result: SimResult;
  /** Per guest: its history as text (the model can only be asked during the event). */
  lines: Map<string, string[]>;
  finishedAt: Map<string, number>;
}

function run(trace: Trace, rowName: string): Run {
  const which = row(rowName, POLICY);
  if (!which) throw new Error(`no such policy or variant: ${rowName}`);
  const lines = new Map<string, string[]>();
  const finishedAt = new Map<string, number>();
  const byId = new Map(trace.hosts.map((h) => [h.id, h]));
  const work = new Map(trace.guests.map((g) => [g.id, g.workMs]));
  const result = simulate(trace, which.name, {
    code: CURRENT_CODE,
    stepMs: 10_000,
    refitMs: 30 * MINUTE,
    policy: which.policy,
    observe: (e) => {
      if (e.kind === 'finished') finishedAt.set(e.guest, e.at);
      const text = lines.get(e.guest) ?? [];
      text.push(describe(trace, e, work.get(e.guest) ?? 0, byId));
      lines.set(e.guest, text);
    },
  });
  return { result, lines, finishedAt };
}

for (const seed of SEEDS) {
  const trace = makeTrace(benchTrace(seed));
  const roam = run(trace, ROW);
  const oracle = run(trace, 'oracle');
  const r = roam.result;
  const o = oracle.result;
  console.log(
    `seed ${seed}: ${ROW} ${r.missed} missed, ${r.kills} killed (${r.restores} restored), ${r.migrations} moves, ` +
      `${r.lostHours.toFixed(1)} h lost; oracle ${o.missed} missed, ${o.kills} killed (${o.restores} restored), ` +
      `${o.migrations} moves`,
  );
  for (const g of trace.guests) {
    const at = roam.finishedAt.get(g.id);
    if (at !== undefined && at <= g.deadline) continue;
    console.log(
      `\n== ${g.id}: arrival +${min(g.arrival - trace.evalStart)}, work ${min(g.workMs)}, ` +
        `deadline +${min(g.deadline - trace.evalStart)} (slack ${min(g.deadline - g.arrival - g.workMs)}, ` +
        `factor ${((g.deadline - g.arrival) / g.workMs).toFixed(2)}), memory ${g.memoryBytes / 2 ** 20} MiB`,
    );
    for (const t of roam.lines.get(g.id) ?? []) console.log(`  roam:   ${t}`);
    for (const t of oracle.lines.get(g.id) ?? []) console.log(`  oracle: ${t}`);
  }
}
