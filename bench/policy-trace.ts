/**
 * Synthetic availability traces for the policy simulator (bench/policy-sim.ts): hosts that come and
 * go, their background load, and guests with work and deadlines. Pure and seeded: the same seed
 * gives the same trace, and every policy in a run sees the same one.
 *
 * Where the numbers come from. Desktop-grid measurements agree that the time a machine stays
 * available is heavy-tailed: many short sessions and a few very long ones, a hazard that falls with
 * age. Nurmi, Brevik and Wolski ("Modeling machine availability in enterprise and wide-area
 * distributed computing environments", Euro-Par 2005) fit Weibull distributions with shape well
 * below 1 (about 0.3 to 0.6 across their Condor, SETI@home-like and PlanetLab-like traces) and
 * 2- and 3-phase hyperexponentials that fit as well or better; Javadi, Kondo, Vincent and Anderson
 * (SETI@home, MASCOTS 2009) find the same families (Weibull shape about 0.3 to 0.6, hyperexponential
 * mixtures of a minutes-long, an hours-long and a day-long phase) for host clusters; Kondo et al.
 * ("Characterizing resource availability in enterprise desktop grids", FGCS 2007, the SDSC/DEUG
 * traces) show the daily pattern: machines are far more often taken back by their owners on
 * weekday working hours than at night or at weekends, with availability intervals of a few hours
 * on average. The parameters below were chosen inside those published ranges (shape, phases,
 * means); they are not copied from one table of one paper, and were set from memory of those
 * papers, so treat them as plausible desktop-grid behaviour, not a replay of a real trace.
 *
 * Host classes:
 *  - desktop (50%): session length Weibull(shape 0.45, scale 2.5 h) in "hazard time"; the hazard
 *    runs 3x faster on weekday working hours (08-18) and 0.5x at night (22-06), so departures bunch
 *    in the working day (Kondo et al.). Downtime hyperexponential: 70% mean 15 min, 30% mean 3 h.
 *  - lab (20%): Weibull(shape 0.7, scale 30 h); downtime exponential, mean 30 min.
 *  - volunteer (20%): 3-phase hyperexponential sessions, 55% mean 20 min, 35% mean 3 h, 10% mean
 *    20 h (Javadi et al.'s shape), daily pattern as desktops; downtime 50% mean 10 min, 50% 4 h.
 *  - adversarial (10%): "fast flappers", the fastest and idlest hosts in the pool (4 cores, score
 *    2.4-3.0, no owner load), so a ranking by speed alone always picks them; but each session lasts
 *    4-12 min (uniform), down 1-5 min, then back looking perfect again.
 *  - 30% of departures are graceful: a drain with a 60 s warning (the owner shutting down); the
 *    rest are hard (power off, network gone): guests not moved away are killed.
 */

export const HOUR = 3_600_000;
export const MINUTE = 60_000;
/** Monday 2 November 2026, 00:00 UTC: the trace's clock is real time so time-of-day features work. */
export const EPOCH = Date.UTC(2026, 10, 2);

export type HostClass = 'desktop' | 'lab' | 'volunteer' | 'adversarial';

export interface TraceSession {
  joinedAt: number;
  endedAt: number;
  /** Graceful departures warn `DRAIN_WARNING_MS` before `endedAt`. */
  graceful: boolean;
}

export interface TraceHost {
  id: string;
  name: string;
  kind: HostClass;
  score: number;
  cores: number;
  memoryBytes: number;
  /** Owner's memory use, a fraction of the total. */
  ownerMemory: number;
  rttMs: number;
  sessions: TraceSession[];
  /** Owner's CPU use (fraction of all cores) as change points, sorted by time. */
  load: Array<{ t: number; usage: number }>;
}

export interface TraceGuest {
  id: string;
  arrival: number;
  /** CPU work in ms on one core of a host of score 1. */
  workMs: number;
  deadline: number;
  memoryBytes: number;
}

export interface Trace {
  seed: number;
  start: number;
  /** History before `evalStart` trains the availability model; guests arrive after it. */
  evalStart: number;
  end: number;
  hosts: TraceHost[];
  guests: TraceGuest[];
}

export const DRAIN_WARNING_MS = 60_000;

export interface TraceOptions {
  seed: number;
  hosts: number;
  historyDays: number;
  evalHours: number;
  /** Guests arrive over the first `arrivalHours` of the evaluation, at `guestsPerHour`. */
  arrivalHours: number;
  guestsPerHour: number;
  /** Deadline = arrival + work (at score 1) times a factor drawn uniformly from this range. */
  slack: [number, number];
}

/**
 * The traces `npm run bench:policy` simulates (and its helper scripts, so that they see the same
 * guests): 160 hosts unless BENCH_HOSTS says otherwise, a week of history, 48 h evaluated.
 */
export function benchTrace(seed: number): TraceOptions {
  return {
    seed,
    hosts: Number(process.env['BENCH_HOSTS'] ?? 160),
    historyDays: 7,
    evalHours: 48,
    arrivalHours: 40,
    guestsPerHour: 40,
    slack: [1.2, 2.5],
  };
}

/** mulberry32: a small seeded generator (the trace must not depend on Math.random). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

const exponential = (r: () => number, mean: number): number => -mean * Math.log(1 - r());
const weibull = (r: () => number, shape: number, scale: number): number =>
  scale * Math.pow(-Math.log(1 - r()), 1 / shape);
function hyperexponential(r: () => number, phases: Array<[number, number]>): number {
  let u = r();
  for (const [p, mean] of phases) {
    if (u < p) return exponential(r, mean);
    u -= p;
  }
  return exponential(r, phases.at(-1)?.[1] ?? HOUR);
}

/** Weekday working hours 08-18 UTC (the pool is one enterprise's time zone). */
export function workingHours(t: number): boolean {
  const d = new Date(t);
  const day = d.getUTCDay();
  const h = d.getUTCHours();
  return day >= 1 && day <= 5 && h >= 8 && h < 18;
}

/** How fast the departure hazard runs at time t (desktops and volunteers). */
function hazardFactor(t: number): number {
  if (workingHours(t)) return 3;
  const h = new Date(t).getUTCHours();
  return h >= 22 || h < 6 ? 0.5 : 1;
}

/** The wall-clock time at which `hazardMs` of hazard time has run from `from` (hour by hour). */
function warp(from: number, hazardMs: number): number {
  let t = from;
  let left = hazardMs;
  for (;;) {
    const nextHour = (Math.floor(t / HOUR) + 1) * HOUR;
    const f = hazardFactor(t);
    const span = (nextHour - t) * f;
    if (span >= left) return t + left / f;
    left -= span;
    t = nextHour;
  }
}

function sessionLength(kind: HostClass, r: () => number, joinedAt: number): number {
  switch (kind) {
    case 'desktop':
      return warp(joinedAt, weibull(r, 0.45, 2.5 * HOUR)) - joinedAt;
    case 'lab':
      return weibull(r, 0.7, 30 * HOUR);
    case 'volunteer':
      return (
        warp(
          joinedAt,
          hyperexponential(r, [
            [0.55, 20 * MINUTE],
            [0.35, 3 * HOUR],
            [0.1, 20 * HOUR],
          ]),
        ) - joinedAt
      );
    case 'adversarial':
      return (4 + 8 * r()) * MINUTE;
  }
}

function downtime(kind: HostClass, r: () => number): number {
  switch (kind) {
    case 'desktop':
      return hyperexponential(r, [
        [0.7, 15 * MINUTE],
        [0.3, 3 * HOUR],
      ]);
    case 'lab':
      return exponential(r, 30 * MINUTE);
    case 'volunteer':
      return hyperexponential(r, [
        [0.5, 10 * MINUTE],
        [0.5, 4 * HOUR],
      ]);
    case 'adversarial':
      return (1 + 4 * r()) * MINUTE;
  }
}

/** Owner load: on/off, busier in working hours; flappers are always idle. */
function ownerLoad(kind: HostClass, r: () => number, from: number, to: number): Array<{ t: number; usage: number }> {
  const load: Array<{ t: number; usage: number }> = [];
  if (kind === 'adversarial') return [{ t: from, usage: 0.02 }];
  let t = from;
  let busy = false;
  while (t < to) {
    const work = workingHours(t);
    const usage = busy ? 0.75 + 0.25 * r() : 0.15 * r();
    load.push({ t, usage });
    const mean = busy ? (work ? 20 : 10) * MINUTE : (work ? 40 : kind === 'lab' ? 240 : 150) * MINUTE;
    t += Math.max(MINUTE, exponential(r, mean));
    busy = !busy;
  }
  return load;
}

export function makeTrace(options: TraceOptions): Trace {
  const r = rng(options.seed);
  const start = EPOCH;
  const evalStart = start + options.historyDays * 24 * HOUR;
  const end = evalStart + options.evalHours * HOUR;
  const hosts: TraceHost[] = [];
  for (let i = 0; i < options.hosts; i++) {
    const u = i / options.hosts;
    const kind: HostClass = u < 0.5 ? 'desktop' : u < 0.7 ? 'lab' : u < 0.9 ? 'volunteer' : 'adversarial';
    const hr = rng(options.seed * 1000 + i + 1);
    const adversarial = kind === 'adversarial';
    const sessions: TraceSession[] = [];
    // Start somewhere in a cycle: up or down at the trace's start.
    let t = start - hr() * 2 * HOUR;
    while (t < end) {
      const length = sessionLength(kind, hr, t);
      sessions.push({ joinedAt: t, endedAt: t + length, graceful: hr() < 0.3 });
      t += length + downtime(kind, hr);
    }
    hosts.push({
      id: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
      name: `${kind}-${i}`,
      kind,
      score: adversarial ? 2.4 + 0.6 * hr() : 0.6 + 1.4 * hr(),
      cores: adversarial ? 4 : ([1, 2, 2, 4][Math.floor(hr() * 4)] ?? 2),
      memoryBytes: (adversarial ? 16 : ([4, 8, 8, 16][Math.floor(hr() * 4)] ?? 8)) * 2 ** 30,
      ownerMemory: adversarial ? 0.1 : 0.2 + 0.3 * hr(),
      rttMs: 1 + 29 * hr(),
      sessions: sessions.filter((s) => s.endedAt > start),
      load: ownerLoad(kind, hr, evalStart, end),
    });
  }
  const guests: TraceGuest[] = [];
  let t = evalStart;
  for (let n = 0; ; n++) {
    t += exponential(r, HOUR / options.guestsPerHour);
    if (t >= evalStart + options.arrivalHours * HOUR) break;
    // Work: log-normal, median 45 min on one core of score 1, clipped to 5 min - 6 h.
    const normal = Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
    const workMs = Math.min(6 * HOUR, Math.max(5 * MINUTE, 45 * MINUTE * Math.exp(0.8 * normal)));
    guests.push({
      id: `guest-${n}`,
      arrival: t,
      workMs,
      deadline: t + workMs * (options.slack[0] + (options.slack[1] - options.slack[0]) * r()),
      memoryBytes: 64 * 2 ** 20 * Math.pow(2, Math.floor(r() * 5)),
    });
  }
  return { seed: options.seed, start, evalStart, end, hosts, guests };
}
