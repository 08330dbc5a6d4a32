/**
 * How likely a host is to stay: learned from its history of sessions (join to leave, eviction or
 * disconnect) in the proxy's database. A Kaplan-Meier estimate per host gives
 * P(stays at least T more | up for a) = S(a + T) / S(a), shrunk towards the fleet's own estimate by
 * how many of the host's sessions reached age a (a host with few sessions borrows the fleet's
 * experience). A naive Bayes classifier over simple host features competes with it on held-out
 * history for the policy's horizon; the better one answers, and its held-out accuracy is reported.
 */

export interface Session {
  hostId: string;
  joinedAt: number;
  /** null: still up (censored). */
  endedAt: number | null;
  /** `left`, `evicted`, `disconnected` count as departures; a proxy restart censors. */
  endReason: string | null;
}

/** A survival curve: S(t) as a step function. */
export class Survival {
  private constructor(
    private readonly times: number[],
    private readonly values: number[],
    readonly sessions: number,
    /** Every duration, sorted: who was still at risk at an age. */
    private readonly durations: Float64Array,
  ) {}

  /** Kaplan-Meier from durations; `event` false marks a censored one (still running). */
  static fit(samples: Array<{ duration: number; event: boolean }>): Survival {
    const sorted = [...samples].sort((a, b) => a.duration - b.duration);
    const times: number[] = [];
    const values: number[] = [];
    let atRisk = sorted.length;
    let s = 1;
    for (let i = 0; i < sorted.length;) {
      const t = sorted[i]?.duration ?? 0;
      let deaths = 0;
      let leaving = 0;
      while (i < sorted.length && sorted[i]?.duration === t) {
        if (sorted[i]?.event) deaths++;
        leaving++;
        i++;
      }
      if (deaths > 0 && atRisk > 0) {
        s *= 1 - deaths / atRisk;
        times.push(t);
        values.push(s);
      }
      atRisk -= leaving;
    }
    return new Survival(
      times,
      values,
      samples.length,
      Float64Array.from(sorted, (x) => x.duration),
    );
  }

  /**
   * How many of the sessions reached age t (ended at or after it, or still running): the evidence
   * S(.)/S(t) rests on. A host's session still running has lasted exactly its age, so it counts:
   * counted only beyond t, a host's own record was left out at its current age, and a host up for
   * hours answered as the fleet does.
   */
  reached(t: number): number {
    return this.durations.length - countBefore(this.durations, t, false);
  }

  /** S(t): the probability of lasting beyond t. */
  at(t: number): number {
    const n = countBefore(this.times, t, true);
    return n === 0 ? 1 : (this.values[n - 1] ?? 1);
  }
}

/** How many values of an ascending array are below t (or at most t, with `orEqual`): a binary search. */
function countBefore(sorted: ArrayLike<number>, t: number, orEqual: boolean): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    const v = sorted[mid] ?? 0;
    if (v < t || (orEqual && v === t)) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

const DEPARTURES = new Set(['left', 'evicted', 'disconnected']);

/**
 * How many of the fleet's sessions a host's own survival curve is worth at first: its answer at an
 * age is shrunk towards the fleet's by n / (n + this), n its sessions that reached that age.
 */
export const SURVIVAL_PRIOR_SESSIONS = 2;

function samplesOf(sessions: Session[], now: number): Array<{ duration: number; event: boolean }> {
  return sessions.map((s) => ({
    duration: Math.max(0, (s.endedAt ?? now) - s.joinedAt),
    event: s.endedAt !== null && DEPARTURES.has(s.endReason ?? ''),
  }));
}

export interface AvailabilityModel {
  /**
   * P(the host stays at least `horizonMs` more, having been up `ageMs`), asked at time `now` (the
   * round's clock, which a simulator runs: never the wall clock).
   */
  pStay(hostId: string, ageMs: number, horizonMs: number, now: number): number;
  readonly kind: 'kaplan-meier' | 'naive-bayes' | 'none';
  /** Accuracy on held-out history (null: too little history to tell). */
  readonly accuracy: number | null;
  readonly heldOut: number;
}

/**
 * Kaplan-Meier where the history has data; beyond the longest session seen, an exponential tail
 * with the host's departure rate (departures per ms up), shrunk towards the fleet's rate by one
 * pseudo-session of the fleet's average length (empirical Bayes: a gamma prior worth one session). Without the tail, a host whose sessions all ended within
 * seconds would look certain to stay once it passed its longest one (the curve is flat there).
 */
class KaplanMeierModel {
  private readonly perHost = new Map<string, { curve: Survival; last: number; rate: number }>();
  private readonly fleet: { curve: Survival; last: number; rate: number };

  constructor(
    sessions: Session[],
    now: number,
    private readonly priorSessions: number,
  ) {
    const all = samplesOf(sessions, now);
    const fleetRate = rateOf(all, 0, 0);
    const priorExposure = all.length > 0 ? all.reduce((sum, s) => sum + s.duration, 0) / all.length : 0;
    this.fleet = { curve: Survival.fit(all), last: longest(all), rate: fleetRate };
    const byHost = new Map<string, Session[]>();
    for (const s of sessions) {
      const list = byHost.get(s.hostId);
      if (list) list.push(s);
      else byHost.set(s.hostId, [s]);
    }
    for (const [id, list] of byHost) {
      const samples = samplesOf(list, now);
      this.perHost.set(id, {
        curve: Survival.fit(samples),
        last: longest(samples),
        rate: rateOf(samples, fleetRate * priorExposure, priorExposure),
      });
    }
  }

  /**
   * The host's own answer, shrunk towards the fleet's by how many of its sessions reached this age:
   * from a handful of sessions its curve is flat between their ends and would say "certain to stay".
   * Beyond its longest session, its tail (whose rate is shrunk already).
   */
  pStay(hostId: string, ageMs: number, horizonMs: number): number {
    const host = this.perHost.get(hostId);
    const fleet = conditional(this.fleet, ageMs, horizonMs);
    if (!host) return fleet;
    const own = conditional(host, ageMs, horizonMs);
    if (ageMs > host.last) return own;
    const n = host.curve.reached(ageMs);
    const w = n / (n + this.priorSessions);
    return w * own + (1 - w) * fleet;
  }
}

/** P(lasts `horizonMs` more | lasted `ageMs`) from one curve. */
function conditional(model: { curve: Survival; last: number; rate: number }, ageMs: number, horizonMs: number): number {
  const now = survival(model, ageMs);
  return now > 0 ? survival(model, ageMs + horizonMs) / now : Math.exp(-model.rate * horizonMs);
}

/** S(t) from the curve, and beyond the longest session from the exponential tail. */
function survival(model: { curve: Survival; last: number; rate: number }, t: number): number {
  return t <= model.last ? model.curve.at(t) : model.curve.at(model.last) * Math.exp(-model.rate * (t - model.last));
}

function longest(samples: Array<{ duration: number }>): number {
  return samples.reduce((m, s) => Math.max(m, s.duration), 0);
}

/** Departures per ms of time up, with `priorEvents` over `priorExposure` added (a gamma prior). */
function rateOf(
  samples: Array<{ duration: number; event: boolean }>,
  priorEvents: number,
  priorExposure: number,
): number {
  const events = samples.filter((s) => s.event).length + priorEvents;
  const exposure = samples.reduce((sum, s) => sum + s.duration, 0) + priorExposure;
  return exposure > 0 ? events / exposure : 0;
}

/**
 * Naive Bayes over features a proxy knows about a host when it must predict: the share of its
 * past sessions that ended before the horizon (in thirds), and the hour of day (in quarters).
 */
class NaiveBayesModel {
  private readonly counts = new Map<string, number>();
  /** Per host: past sessions with a known label, and how many of them ended before the horizon. */
  private readonly history = new Map<string, { labelled: number; early: number }>();

  constructor(
    sessions: Session[],
    now: number,
    private readonly horizonMs: number,
  ) {
    const sorted = [...sessions].sort((a, b) => a.joinedAt - b.joinedAt);
    for (const s of sorted) {
      const [sample] = samplesOf([s], now);
      if (!sample) continue;
      const label = this.label(sample);
      if (label !== undefined) {
        const features = this.features(s.hostId, s.joinedAt);
        this.bump(`y:${label}`);
        features.forEach((f, i) => this.bump(`x${i}:${f}|${label}`));
      }
      const past = this.history.get(s.hostId) ?? { labelled: 0, early: 0 };
      if (label !== undefined) {
        past.labelled++;
        if (!label) past.early++;
      }
      this.history.set(s.hostId, past);
    }
  }

  private label(sample: { duration: number; event: boolean }): boolean | undefined {
    if (sample.duration >= this.horizonMs) return true;
    return sample.event ? false : undefined; // censored before the horizon: unknown
  }

  private features(hostId: string, at: number): number[] {
    const past = this.history.get(hostId);
    const early = !past?.labelled ? -1 : Math.min(2, Math.floor((3 * past.early) / past.labelled));
    return [early, Math.floor(new Date(at).getUTCHours() / 6)];
  }

  private bump(key: string): void {
    this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
  }

  pStay(hostId: string, _ageMs: number, horizonMs: number, now: number): number {
    if (horizonMs !== this.horizonMs) return 0.5;
    const features = this.features(hostId, now);
    const score = (label: boolean): number => {
      const n = this.counts.get(`y:${label}`) ?? 0;
      let p = (n + 1) / (this.total() + 2);
      features.forEach((f, i) => (p *= ((this.counts.get(`x${i}:${f}|${label}`) ?? 0) + 1) / (n + 4)));
      return p;
    };
    const yes = score(true);
    const no = score(false);
    return yes / (yes + no);
  }

  private total(): number {
    return (this.counts.get('y:true') ?? 0) + (this.counts.get('y:false') ?? 0);
  }
}

/**
 * Fits both models on the older 70% of sessions, scores them on the newer 30% (did the host stay
 * the horizon from its join?), and answers with the better one, refitted on everything.
 */
export function fitAvailability(
  sessions: Session[],
  now: number,
  horizonMs: number,
  priorSessions = SURVIVAL_PRIOR_SESSIONS,
): AvailabilityModel {
  const sorted = [...sessions].sort((a, b) => a.joinedAt - b.joinedAt);
  const cut = Math.floor(sorted.length * 0.7);
  const train = sorted.slice(0, cut);
  const test = sorted.slice(cut).flatMap((s) => {
    const [sample] = samplesOf([s], now);
    if (!sample) return [];
    const stayed = sample.duration >= horizonMs ? true : sample.event ? false : undefined;
    return stayed === undefined ? [] : [{ s, stayed }];
  });
  const km = new KaplanMeierModel(sessions, now, priorSessions);
  if (test.length < 5 || train.length < 5) {
    return {
      pStay: (h, a, t) => km.pStay(h, a, t),
      kind: sessions.length ? 'kaplan-meier' : 'none',
      accuracy: null,
      heldOut: test.length,
    };
  }
  const kmTrain = new KaplanMeierModel(train, train.at(-1)?.joinedAt ?? now, priorSessions);
  const nbTrain = new NaiveBayesModel(train, train.at(-1)?.joinedAt ?? now, horizonMs);
  const score = (p: (x: { s: Session }) => number): number =>
    test.filter((x) => p(x) >= 0.5 === x.stayed).length / test.length;
  const kmAccuracy = score((x) => kmTrain.pStay(x.s.hostId, 0, horizonMs));
  const nbAccuracy = score((x) => nbTrain.pStay(x.s.hostId, 0, horizonMs, x.s.joinedAt));
  if (nbAccuracy > kmAccuracy) {
    const nb = new NaiveBayesModel(sessions, now, horizonMs);
    return {
      pStay: (h, a, t, at) => (t === horizonMs ? nb.pStay(h, a, t, at) : km.pStay(h, a, t)),
      kind: 'naive-bayes',
      accuracy: nbAccuracy,
      heldOut: test.length,
    };
  }
  return { pStay: (h, a, t) => km.pStay(h, a, t), kind: 'kaplan-meier', accuracy: kmAccuracy, heldOut: test.length };
}
