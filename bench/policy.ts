/**
 * Control-plane benchmark: `npm run bench:policy` (issue 5, section 5).
 *
 * 1. The simulator (bench/policy-sim.ts over traces from bench/policy-trace.ts): Roam's policy
 *    against never-migrate, threshold-only (no risk model), random candidate and an oracle, on the
 *    same traces, Roam's policy without backup images (what the images buy), plus Roam's policy as it was at ROAM_BENCH_BEFORE (default 4720082, before this
 *    branch) for a before/after in the same run; and the availability model's prediction accuracy
 *    on the held-out part of each trace. Targets: deadline misses >= 25% fewer than threshold-only
 *    and within 15% of the oracle; prediction accuracy >= 90%.
 * 2. Cost: one decision round (monitor + decide, which ranks candidates) over 10,000 hosts and
 *    10,000 guests <= 50 ms (median); a real `roam proxy` holding 2,000 controllers that report
 *    every second (bench/policy-load.ts, the real protocol) under 25% of one core (CPU time from
 *    /proc/PID/stat over a window after all have joined). Both with a "before" row: the round with
 *    src/policy at ROAM_BENCH_BEFORE, the proxy built from the whole tree at that commit (git archive
 *    into a temp folder, this tree's node_modules, its own build), under the same load generator.
 *
 * Knobs: BENCH_SEEDS=1,2 (one trace per seed), BENCH_HOSTS=160, BENCH_CONTROLLERS=2000,
 * BENCH_GENERATORS=2, BENCH_WINDOW_S=20, ROAM_BENCH_BEFORE=<commit> (empty: no before row),
 * BENCH_SKIP=sim,round,proxy (parts to leave out), BENCH_NO_WRITE=1 leaves BENCHMARKS.md alone.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type * as Availability from '../src/policy/availability.js';
import { DEFAULT_POLICY } from '../src/policy/config.js';
import type * as Decide from '../src/policy/decide.js';
import { machineInfo, markdownTable, median } from './checkpoint-lib.js';
import { writeBenchSection } from './report.js';
import { roundCost, type RoundCost } from './policy-round.js';
import {
  BENCH_ROWS,
  CURRENT_CODE,
  predictionAccuracy,
  row as benchRow,
  simulate,
  type Accuracy,
  type PolicyCode,
  type SimResult,
} from './policy-sim.js';
import { MINUTE, benchTrace, makeTrace } from './policy-trace.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const COMMAND = 'npm run bench:policy';
const SEEDS = (process.env['BENCH_SEEDS'] ?? '1,2').split(',').map(Number);
const CONTROLLERS = Number(process.env['BENCH_CONTROLLERS'] ?? 2000);
const GENERATORS = Number(process.env['BENCH_GENERATORS'] ?? 2);
const WINDOW_S = Number(process.env['BENCH_WINDOW_S'] ?? 20);
const BEFORE = process.env['ROAM_BENCH_BEFORE'] ?? '4720082';
const SKIP = new Set((process.env['BENCH_SKIP'] ?? '').split(',').filter(Boolean));
const STEP_MS = 10_000;
const REFIT_MS = 30 * MINUTE;
const TRACE = benchTrace(0);

const pct = (x: number): string => `${(100 * x).toFixed(1)}%`;
const f1 = (x: number): string => (Number.isFinite(x) ? x.toFixed(1) : 'n/a');

/** The policy code at an older commit, copied out of git into a temp folder and imported. */
async function codeAt(commit: string): Promise<{ code: PolicyCode; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'roam-bench-policy-'));
  const files = execFileSync('git', ['ls-tree', '--name-only', `${commit}:src/policy`], { cwd: ROOT, encoding: 'utf8' })
    .split('\n')
    .filter((f) => f.endsWith('.ts'));
  for (const file of files) {
    const text = execFileSync('git', ['show', `${commit}:src/policy/${file}`], { cwd: ROOT, encoding: 'utf8' });
    // config.ts is only imported for its types by the others; keep it out of the module graph.
    writeFileSync(join(dir, file), file === 'config.ts' ? 'export type Policy = never;\n' : text);
  }
  const a = (await import(pathToFileURL(join(dir, 'availability.ts')).href)) as typeof Availability;
  const d = (await import(pathToFileURL(join(dir, 'decide.ts')).href)) as typeof Decide;
  return {
    code: {
      fitAvailability: a.fitAvailability,
      UtilityMonitor: d.UtilityMonitor,
      decide: d.decide,
      placeGuest: d.placeGuest,
      rankCandidates: d.rankCandidates,
    },
    dir,
  };
}

interface SimPart {
  results: SimResult[][];
  accuracy: Accuracy[];
  beforeLabel: string | null;
}

function runSim(before: { code: PolicyCode } | undefined): SimPart {
  const beforeLabel = before ? `roam (before, ${BEFORE})` : null;
  const results: SimResult[][] = [];
  const accuracy: Accuracy[] = [];
  for (const seed of SEEDS) {
    const trace = makeTrace(benchTrace(seed));
    const row: SimResult[] = [];
    for (const rowName of BENCH_ROWS) {
      const which = benchRow(rowName, DEFAULT_POLICY);
      if (!which) throw new Error(`no such bench row: ${rowName}`);
      const r = simulate(trace, which.name, {
        code: CURRENT_CODE,
        stepMs: STEP_MS,
        refitMs: REFIT_MS,
        policy: which.policy,
        ...(which.label === undefined ? {} : { label: which.label }),
      });
      console.error(
        `seed ${seed} ${r.name}: ${r.missed} missed, ${r.migrations} moves (${(r.wallMs / 1000).toFixed(1)} s)`,
      );
      row.push(r);
    }
    if (before && beforeLabel) {
      const r = simulate(trace, 'roam', {
        code: before.code,
        stepMs: STEP_MS,
        refitMs: REFIT_MS,
        policy: DEFAULT_POLICY,
        label: beforeLabel,
      });
      console.error(
        `seed ${seed} ${r.name}: ${r.missed} missed, ${r.migrations} moves (${(r.wallMs / 1000).toFixed(1)} s)`,
      );
      row.push(r);
    }
    results.push(row);
    accuracy.push(predictionAccuracy(trace, DEFAULT_POLICY.horizonMinutes * MINUTE, 5 * MINUTE));
  }
  return { results, accuracy, beforeLabel };
}

/** Sums each policy's numbers over the seeds. */
function totals(results: SimResult[][]): SimResult[] {
  const first = results[0] ?? [];
  return first.map((_, i) => {
    const rows = results.map((r) => r[i]).filter((r): r is SimResult => r !== undefined);
    const sum = (k: Exclude<keyof SimResult, 'name'>): number => rows.reduce((s, r) => s + r[k], 0);
    return {
      name: rows[0]?.name ?? '?',
      guests: sum('guests'),
      onTime: sum('onTime'),
      missed: sum('missed'),
      completedHours: sum('completedHours'),
      onTimeHours: sum('onTimeHours'),
      lostHours: sum('lostHours'),
      kills: sum('kills'),
      restores: sum('restores'),
      savedHours: sum('savedHours'),
      images: sum('images'),
      imagesLost: sum('imagesLost'),
      migrations: sum('migrations'),
      failedMigrations: sum('failedMigrations'),
      backupMoves: sum('backupMoves'),
      drainSaved: sum('drainSaved'),
      wallMs: sum('wallMs'),
    };
  });
}

function simTable(rows: SimResult[]): string {
  return markdownTable(
    [
      'policy',
      'guests',
      'deadline misses',
      'miss rate',
      'on time',
      'completed work h',
      'on-time work h',
      'work lost to departures h',
      'guests killed',
      'of which restored from an image',
      'work the images kept h',
      'backup images (lost on the way)',
      'migrations',
      'failed migrations',
      'moves to backup',
      'saved by a drain',
      'sim wall s',
    ],
    rows.map((r) => [
      r.name,
      String(r.guests),
      String(r.missed),
      pct(r.missed / r.guests),
      String(r.onTime),
      f1(r.completedHours),
      f1(r.onTimeHours),
      f1(r.lostHours),
      String(r.kills),
      String(r.restores),
      f1(r.savedHours),
      `${r.images} (${r.imagesLost})`,
      String(r.migrations),
      String(r.failedMigrations),
      String(r.backupMoves),
      String(r.drainSaved),
      f1(r.wallMs / 1000),
    ]),
  );
}

// ---- the proxy under 2,000 controllers ----

interface ProxyPart {
  controllers: number;
  generators: number;
  windowS: number;
  cpuS: number;
  /** Median of the windows' shares. */
  coreShare: number;
  shares: number[];
  reports: number;
  pings: number;
  errors: number;
  joinS: number;
  fdLimit: string;
  rssMiB: number;
}

function procCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // Fields 14 and 15 (utime, stime) are the 12th and 13th after the command name.
  const ticks = Number(fields[11]) + Number(fields[12]);
  return ticks / clockTicks();
}

let ticksPerSecond: number | undefined;
function clockTicks(): number {
  if (ticksPerSecond === undefined) {
    try {
      ticksPerSecond = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      ticksPerSecond = 100;
    }
  }
  return ticksPerSecond;
}

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

function waitForLine(child: ChildProcess, re: RegExp, timeoutMs: number, what: string): Promise<RegExpMatchArray> {
  return new Promise((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}: ${seen.slice(-2000)}`)), timeoutMs);
    const onData = (d: Buffer): void => {
      seen += d.toString();
      const m = seen.match(re);
      if (m) {
        clearTimeout(timer);
        child.stdout?.off('data', onData);
        resolve(m);
      }
    };
    child.stdout?.on('data', onData);
    child.once('exit', (code) => reject(new Error(`${what}: the process exited (${code}): ${seen.slice(-2000)}`)));
  });
}

/** The whole tree at `commit`, built, in a temp folder (this tree's node_modules): the proxy as it was. */
function treeAt(commit: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'roam-bench-tree-'));
  execFileSync('sh', ['-c', `git archive "$0" | tar -x -C "$1"`, commit, dir], { cwd: ROOT });
  symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
  execFileSync(process.execPath, [join(dir, 'scripts', 'build.mjs')], { cwd: dir, stdio: 'ignore' });
  return dir;
}

/** `roam proxy` from the tree at `root` (this tree, or treeAt's) under the load generator of this tree. */
async function runProxy(root: string): Promise<ProxyPart> {
  const dir = mkdtempSync(join(tmpdir(), 'roam-bench-proxy-'));
  const token = 'bench-policy-join-token-0123456789abcdef';
  writeFileSync(join(dir, 'join-token-copy'), token);
  const children: ChildProcess[] = [];
  try {
    // A shell raises the file-descriptor limit for the proxy (2,000 sockets and the database).
    const proxy = spawn(
      'sh',
      [
        '-c',
        `ulimit -n 65536 2>/dev/null || ulimit -n 8192; exec "$0" "$@"`,
        process.execPath,
        join(root, 'bin', 'roam'),
        'proxy',
        '--bind',
        '127.0.0.1',
        '--control-port',
        '0',
        '--api-port',
        '0',
        '--data-dir',
        dir,
        '--join-token',
        token,
        '--admin-token',
        'bench-policy-admin-token-0123456789abcdef',
        '--name',
        'bench-proxy',
      ],
      { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] },
    );
    children.push(proxy);
    const port = Number((await waitForLine(proxy, /control port (\d+)/, 30_000, 'the proxy'))[1]);
    const pid = proxy.pid ?? 0;
    const fdLimit = /Max open files\s+(\d+)/.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'))?.[1] ?? '?';
    const per = Math.ceil(CONTROLLERS / GENERATORS);
    const t0 = performance.now();
    const gens: Array<{ child: ChildProcess; last: () => string }> = [];
    for (let k = 0; k < GENERATORS; k++) {
      const count = Math.min(per, CONTROLLERS - k * per);
      const child = spawn(
        'sh',
        [
          '-c',
          `ulimit -n 65536 2>/dev/null || ulimit -n 8192; exec "$0" "$@"`,
          process.execPath,
          '--import',
          'tsx',
          join(ROOT, 'bench', 'policy-load.ts'),
          '127.0.0.1',
          String(port),
          join(dir, 'join-token-copy'),
          String(count),
          String(k * per),
        ],
        { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] },
      );
      children.push(child);
      let last = '';
      child.stdout?.on('data', (d: Buffer) => {
        const lines = d.toString().trim().split('\n');
        last = lines.filter((l) => l.startsWith('stats')).at(-1) ?? last;
      });
      gens.push({ child, last: () => last });
    }
    await Promise.all(gens.map((g) => waitForLine(g.child, /joined \d+/, 120_000, 'the load generator')));
    const joinS = (performance.now() - t0) / 1000;
    // Let joins settle (the model refits after host events), then measure.
    await new Promise((r) => setTimeout(r, 5000));
    const stat = (): { reports: number; pings: number; errors: number } => {
      let reports = 0;
      let pings = 0;
      let errors = 0;
      for (const g of gens) {
        const m = /reports=(\d+) pings=(\d+) errors=(\d+)/.exec(g.last());
        reports += Number(m?.[1] ?? 0);
        pings += Number(m?.[2] ?? 0);
        errors += Number(m?.[3] ?? 0);
      }
      return { reports, pings, errors };
    };
    const s0 = stat();
    // Three windows back to back: the machine is shared, so the median says more than one window.
    const shares: number[] = [];
    let cpuS = 0;
    let windowS = 0;
    for (let k = 0; k < 3; k++) {
      const c0 = procCpuSeconds(pid);
      const w0 = performance.now();
      await new Promise((r) => setTimeout(r, WINDOW_S * 1000));
      const c1 = procCpuSeconds(pid);
      const w = (performance.now() - w0) / 1000;
      shares.push((c1 - c0) / w);
      cpuS += c1 - c0;
      windowS += w;
    }
    await new Promise((r) => setTimeout(r, 5200)); // one more stats line covers the windows
    const s1 = stat();
    return {
      controllers: CONTROLLERS,
      generators: GENERATORS,
      windowS,
      cpuS,
      coreShare: median(shares),
      shares,
      reports: s1.reports - s0.reports,
      pings: s1.pings - s0.pings,
      errors: s1.errors,
      joinS,
      fdLimit,
      rssMiB: rssMiB(pid),
    };
  } finally {
    for (const c of children.reverse()) c.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 500));
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---- report ----

interface Verdict {
  what: string;
  value: string;
  target: string;
  pass: boolean;
}

async function main(): Promise<number> {
  const machine = machineInfo();
  const loadBefore = loadavg()[0] ?? NaN;
  const t0 = performance.now();
  let before: { code: PolicyCode; dir: string } | undefined;
  if (BEFORE) {
    try {
      before = await codeAt(BEFORE);
    } catch (err) {
      console.error(`no before rows: cannot load src/policy at ${BEFORE}: ${(err as Error).message}`);
    }
  }
  try {
    return await report(before, machine, loadBefore, t0);
  } finally {
    if (before) rmSync(before.dir, { recursive: true, force: true });
  }
}

async function report(
  before: { code: PolicyCode } | undefined,
  machine: ReturnType<typeof machineInfo>,
  loadBefore: number,
  t0: number,
): Promise<number> {
  const verdicts: Verdict[] = [];
  const lines: string[] = [];
  if (!SKIP.has('sim')) {
    const sim = runSim(before);
    const total = totals(sim.results);
    const by = (name: string): SimResult | undefined => total.find((r) => r.name === name);
    const roam = by('roam');
    const threshold = by('threshold-only');
    const oracle = by('oracle');
    lines.push(
      `### Simulator (${SEEDS.length} trace(s), seeds ${SEEDS.join(', ')}; totals over them)`,
      '',
      `Each trace: ${TRACE.hosts} hosts, ${TRACE.historyDays} days of history (the model's training data), then ` +
        `${TRACE.evalHours} h simulated in ${STEP_MS / 1000} s steps with guests arriving over the first ` +
        `${TRACE.arrivalHours} h at ${TRACE.guestsPerHour}/h (work log-normal, median 45 min at score 1; deadline = ` +
        `arrival + work x U(${TRACE.slack[0]}, ${TRACE.slack[1]})). Default policy. Model refitted every ` +
        `${REFIT_MS / MINUTE} min of simulated time.`,
      '',
      simTable(total),
      '',
      'Per trace (deadline misses / migrations):',
      '',
      markdownTable(
        ['policy', ...SEEDS.map((s) => `seed ${s}`)],
        (sim.results[0] ?? []).map((r, i) => [
          r.name,
          ...sim.results.map((row) => `${row[i]?.missed ?? '?'} / ${row[i]?.migrations ?? '?'}`),
        ]),
      ),
      '',
      'Prediction accuracy on the held-out window of each trace (model fitted on the history only; every host up, ' +
        `every 5 min: does it stay ${DEFAULT_POLICY.horizonMinutes} more min? said = P(stay) >= 0.5):`,
      '',
      markdownTable(
        [
          'seed',
          'queries',
          'accuracy',
          '"always stays" accuracy',
          'departures foreseen',
          'desktop / lab / volunteer / adversarial',
          'model chosen',
          "fitAvailability's own held-out accuracy (stays from join)",
        ],
        sim.accuracy.map((a, i) => [
          String(SEEDS[i]),
          String(a.queries),
          pct(a.accuracy),
          pct(a.alwaysStays),
          pct(a.leavesCaught),
          ['desktop', 'lab', 'volunteer', 'adversarial'].map((k) => pct(a.byClass[k]?.accuracy ?? NaN)).join(' / '),
          a.fitted.kind,
          a.fitted.accuracy === null ? 'n/a' : `${pct(a.fitted.accuracy)} of ${a.fitted.heldOut}`,
        ]),
      ),
      '',
    );
    if (roam && threshold && oracle) {
      const fewer = 1 - roam.missed / Math.max(1, threshold.missed);
      verdicts.push({
        what: 'deadline misses vs threshold-only',
        value: `${roam.missed} vs ${threshold.missed} (${pct(fewer)} fewer)`,
        target: '>= 25% fewer',
        pass: fewer >= 0.25,
      });
      const ratio = roam.missed / Math.max(1, oracle.missed);
      verdicts.push({
        what: 'deadline misses vs the oracle',
        value: `${roam.missed} vs ${oracle.missed} (${ratio.toFixed(2)}x; miss rate ${pct(roam.missed / roam.guests)} vs ${pct(oracle.missed / oracle.guests)})`,
        target: '<= 1.15x the oracle',
        pass: roam.missed <= 1.15 * oracle.missed,
      });
    }
    const worst = Math.min(...sim.accuracy.map((a) => a.accuracy));
    verdicts.push({
      what: 'prediction accuracy, held out',
      value: sim.accuracy.map((a) => pct(a.accuracy)).join(', '),
      target: '>= 90% on every trace',
      pass: worst >= 0.9,
    });
  }

  if (!SKIP.has('round')) {
    // This tree's code and the code before this branch, alternately, so both see the same machine.
    const now: RoundCost[] = [];
    const then: RoundCost[] = [];
    for (let k = 0; k < 3; k++) {
      now.push(roundCost(CURRENT_CODE, 10_000, DEFAULT_POLICY, 5));
      if (before) then.push(roundCost(before.code, 10_000, DEFAULT_POLICY, 5));
    }
    const merge = (list: RoundCost[], label: string): RoundCost & { label: string } => ({
      ...(list[0] as RoundCost),
      label,
      roundMs: list.flatMap((c) => c.roundMs),
      roundCpuMs: list.flatMap((c) => c.roundCpuMs),
      observeMs: list.flatMap((c) => c.observeMs),
      decideMs: list.flatMap((c) => c.decideMs),
    });
    const main = merge(now, 'this tree');
    const costs = [main, ...(before ? [merge(then, `before (${BEFORE})`)] : [])];
    const busy = roundCost(CURRENT_CODE, 10_000, { ...DEFAULT_POLICY, maxConcurrentMoves: 20 }, 5);
    costs.push({ ...busy, label: 'this tree' });
    lines.push(
      '### One decision round at 10,000 hosts and 10,000 guests',
      '',
      markdownTable(
        [
          'code',
          'maxConcurrentMoves',
          'degraded hosts',
          'moves / declined',
          'round median ms (wall)',
          'round median ms (CPU)',
          'round max ms (wall)',
          'observe median ms',
          'decide median ms',
          'rounds',
          'model fit ms (30,000 sessions; every 60 s in the proxy)',
        ],
        costs.map((c) => [
          c.label,
          String(c.maxConcurrentMoves),
          String(c.degraded),
          `${c.moves} / ${c.declined}`,
          f1(median(c.roundMs)),
          f1(median(c.roundCpuMs)),
          f1(Math.max(...c.roundMs)),
          f1(median(c.observeMs)),
          f1(median(c.decideMs)),
          String(c.roundMs.length),
          f1(c.fitMs),
        ]),
      ),
      '',
    );
    const old = costs[1];
    verdicts.push({
      what: 'decision round, 10k hosts x 10k guests (default policy)',
      value:
        `${f1(median(main.roundMs))} ms median wall, ${f1(median(main.roundCpuMs))} ms CPU` +
        (old
          ? ` (before: ${f1(median(old.roundMs))} ms wall, ${(median(old.roundMs) / median(main.roundMs)).toFixed(1)}x)`
          : ''),
      target: '<= 50 ms',
      pass: median(main.roundMs) <= 50,
    });
  }

  if (!SKIP.has('proxy')) {
    // The proxy as it was at BEFORE first, then this tree's, one after the other on the same machine.
    const runs: Array<ProxyPart & { label: string }> = [];
    if (BEFORE) {
      let tree: string | undefined;
      try {
        tree = treeAt(BEFORE);
        runs.push({ ...(await runProxy(tree)), label: `before (${BEFORE})` });
      } catch (err) {
        console.error(`no proxy before row: cannot build the tree at ${BEFORE}: ${(err as Error).message}`);
      } finally {
        if (tree) rmSync(tree, { recursive: true, force: true });
      }
    }
    const p = { ...(await runProxy(ROOT)), label: 'this tree' };
    runs.unshift(p);
    lines.push(
      `### The proxy under ${p.controllers} controllers reporting every second`,
      '',
      markdownTable(
        [
          'code',
          'controllers',
          'generator processes',
          'joined in s',
          'windows s',
          'proxy CPU s',
          'share of one core (median)',
          'each window',
          'reports sent in the windows',
          'pings answered in the windows',
          'generator errors',
          'proxy RSS MiB',
          'proxy fd limit',
        ],
        runs.map((r) => [
          r.label,
          String(r.controllers),
          String(r.generators),
          f1(r.joinS),
          `3 x ${f1(r.windowS / 3)}`,
          r.cpuS.toFixed(2),
          pct(r.coreShare),
          r.shares.map(pct).join(', '),
          String(r.reports),
          String(r.pings),
          String(r.errors),
          f1(r.rssMiB),
          r.fdLimit,
        ]),
      ),
      '',
    );
    const old = runs[1];
    verdicts.push({
      what: `proxy CPU with ${p.controllers} controllers reporting every second`,
      value:
        `${pct(p.coreShare)} of one core (median of ${p.shares.map(pct).join(', ')})` +
        (old ? ` (before: ${pct(old.coreShare)})` : ''),
      target: '< 25%',
      pass: p.coreShare < 0.25 && p.errors === 0,
    });
  }

  const method = [
    'How it runs. Simulator: bench/policy-trace.ts makes the traces (host classes, distributions and where their',
    'parameters come from are in its header comment: Weibull and hyperexponential session lengths in the ranges',
    'Nurmi/Brevik/Wolski and Javadi/Kondo et al. report, departures three times as likely on weekday working hours,',
    'and an adversarial class of fast hosts that leave after 4-12 min); bench/policy-sim.ts runs the policies over',
    'them with the code in src/policy (monitor, decide, placeGuest, fitAvailability), a move taking 2 s + memory at',
    "100 Mbit/s, 30% of departures drained with a 60 s warning (to the backup, else the best host by the policy's",
    'ranking, as Proxy.evacuate does), the rest killing the guests left. A guest killed with its host resumes from',
    `its last backup image (one every ${DEFAULT_POLICY.backupEverySeconds} s per guest, at most`,
    `${DEFAULT_POLICY.maxConcurrentBackups} on their way at once, each memory at 100 Mbit/s to the proxy) on the backup`,
    "its last move named, else where the policy's placement puts it, after a restore as long as a move; without an",
    'image it starts again from scratch. Every policy but "never" takes images; "roam without backup images" is',
    'roam with backupEverySeconds 0. "Before" rows run src/policy as it was at the named commit (with images), copied',
    'out of git, on the same traces and machine. Prediction accuracy: the model fitted on the 7 days of history,',
    'asked every 5 min about every host up in the 48 held-out hours. Decision round: synthetic 10,000 hosts (a tenth saturated) and 10,000 guests (a',
    'quarter with deadlines), P(stay) from a model fitted on 30,000 past sessions; wall and process CPU time of',
    'monitor.observe + decide, after the window has filled. Proxy: `roam proxy` on loopback with a temp data dir,',
    `${GENERATORS} generator processes (bench/policy-load.ts) each holding their share of the connections: HELLO`,
    'with the join token, then a CONTROL report per second per connection (encodeFrame from src/wire), PONG for every',
    'PING; CPU time (utime + stime from /proc/PID/stat) over three back-to-back windows once all have joined and',
    'settled 5 s; the file-descriptor limit is raised in the shell that starts each process (ulimit -n). The proxy',
    '"before" row runs the whole tree at the named commit (git archive, built in a temp folder), just before this',
    "tree's run, under the same load generator.",
  ].join('\n');
  const report = [
    '## Control plane: policy simulator, decision cost, proxy under many controllers',
    '',
    `- Date: ${machine.date}`,
    `- Machine: ${machine.cpus} CPUs (nproc), ${machine.cpuModel}, ${machine.memory} RAM, ${machine.os}`,
    `- Node: ${machine.node}`,
    `- Command: \`${COMMAND}\` (whole run: ${((performance.now() - t0) / 1000).toFixed(0)} s)`,
    `- 1-minute load average: ${loadBefore.toFixed(2)} before, ${(loadavg()[0] ?? NaN).toFixed(2)} after` +
      ' (the machine is shared; other work running at the same time inflates the timings)',
    '',
    markdownTable(
      ['target', 'value', 'limit', 'verdict'],
      verdicts.map((v) => [v.what, v.value, v.target, v.pass ? 'PASS' : 'FAIL']),
    ),
    '',
    ...lines,
    method,
  ].join('\n');
  console.log(report);
  for (const v of verdicts) console.log(`${v.pass ? 'PASS' : 'FAIL'} ${v.what}: ${v.value}; target ${v.target}`);
  if (process.env['BENCH_NO_WRITE'] !== '1') writeBenchSection('policy', report, 'Policy findings');
  return 0;
}

process.exitCode = await main();
