/**
 * Migration decisions (paper section IV-C), as pure functions of the roaming table and the policy:
 * which hosts are degraded, which of their guests should move, where to, and the backup if that
 * move fails. Every decision and every declined trigger comes with its reasons and numbers.
 */
import type { Policy } from './config.js';
import type { GuestSnapshot, HostSnapshot } from './model.js';
import { sortByKeyDescending } from './order.js';
import { computeRate, speed, utility } from './utility.js';

export interface Round {
  now: number;
  hosts: HostSnapshot[];
  guests: GuestSnapshot[];
  /** Since when each host has been degraded (monitor output). */
  lowSince: ReadonlyMap<string, number>;
  /** Each host's utility averaged over the window, where the monitor knows it. */
  meanUtility?: ReadonlyMap<string, number>;
  /** When each guest last moved (for the cooldown). */
  lastMoved: ReadonlyMap<string, number>;
  /** Guests being moved now. */
  moving: ReadonlySet<string>;
  pStay(hostId: string, ageMs: number, horizonMs: number): number;
}

export interface Candidate {
  host: HostSnapshot;
  speed: number;
  pStay: number;
  /**
   * For a guest with a deadline: the chance to finish in time there; for one too late for its
   * deadline on every candidate, the chance to finish there at all (the host stays until it is done).
   */
  pFinish: number | null;
  /** Why it cannot take the guest (undefined: it can). */
  rejected?: string;
}

export interface MoveDecision {
  kind: 'move';
  guestId: string;
  guestName: string;
  from: string;
  to: string;
  backup: string | null;
  message: string;
  data: Record<string, unknown>;
}

export interface DeclinedDecision {
  kind: 'declined';
  hostId: string;
  guestId: string | null;
  message: string;
  data: Record<string, unknown>;
}

export type Decision = MoveDecision | DeclinedDecision;

const fmt = (x: number, digits = 2): string => x.toFixed(digits);

/**
 * How far above the threshold a degraded host's mean utility must rise to end its low spell, so
 * that a host hovering at the threshold does not flap in and out of it.
 */
export const RECOVERY_BAND = 0.05;

/** One host's samples in the monitor's window (oldest first), and their mean as of the last observation. */
interface HostWindow {
  t: number[];
  u: number[];
  mean: number;
}

/**
 * The monitor: a host is degraded when its utility, averaged over the policy's window, is below
 * the threshold. Averaging (rather than asking every sample to be low) keeps a host whose busy
 * work gets a little less CPU now and then from restarting its window at every sample.
 */
export class UtilityMonitor {
  /** Per host: its window of samples (times and utilities in two arrays: no object per sample). */
  private readonly windows = new Map<string, HostWindow>();
  private low = new Map<string, number>();

  /** Takes this round's reports; returns since when each degraded host has been degraded. */
  observe(hosts: HostSnapshot[], policy: Policy, now: number): Map<string, number> {
    const windowMs = policy.windowSeconds * 1000;
    const from = now - windowMs;
    const next = new Map<string, number>();
    for (const h of hosts) {
      let w = this.windows.get(h.id);
      if (!h.up || !h.metrics) {
        // Its samples go (the mean it had stays readable).
        if (w) {
          w.t.length = 0;
          w.u.length = 0;
        }
        continue;
      }
      if (!w) {
        w = { t: [], u: [], mean: 0 };
        this.windows.set(h.id, w);
      }
      const { t, u } = w;
      t.push(now);
      u.push(utility(h.metrics, policy.weights));
      // Keep the window, plus the sample just before it (it shows the window is covered).
      while (t.length > 1 && (t[1] ?? now) <= from) {
        t.shift();
        u.shift();
      }
      const covered = (t[0] ?? now) <= from;
      let sum = 0;
      let count = 0;
      for (let i = 0; i < t.length; i++) {
        if ((t[i] ?? now) > from || windowMs === 0) {
          sum += u[i] ?? 0;
          count++;
        }
      }
      const mean = sum / Math.max(1, count);
      w.mean = mean;
      const since = this.low.get(h.id);
      if (covered && mean < policy.threshold) next.set(h.id, since ?? from);
      else if (since !== undefined && mean < policy.threshold + RECOVERY_BAND) next.set(h.id, since);
    }
    this.low = next;
    return next;
  }

  /** A host's utility averaged over the window (as of the last observation). */
  mean(hostId: string): number | undefined {
    return this.windows.get(hostId)?.mean;
  }
}

/** How long a guest with an expected run time needs on a host of compute rate `rate` (null: not declared). */
function needMs(guest: GuestSnapshot, rate: number): number | null {
  if (guest.expectMs === null) return null;
  const left = Math.max(0, guest.expectMs - guest.cpuMs);
  return rate > 0 ? left / rate : Infinity;
}

/** The chance a guest with an expected run time finishes on `host` at all: the host stays until its work is done. */
export function chanceToBeDone(guest: GuestSnapshot, host: HostSnapshot, rate: number, round: Round): number | null {
  const need = needMs(guest, rate);
  if (need === null) return null;
  if (!Number.isFinite(need)) return 0;
  return round.pStay(host.id, host.joinedAt === null ? 0 : round.now - host.joinedAt, need);
}

/**
 * The chance a guest with a deadline finishes in time on `host`: its work left at the host's compute
 * rate (score times free cores) must end before the deadline, and the host must stay that long.
 */
export function chanceToFinish(guest: GuestSnapshot, host: HostSnapshot, rate: number, round: Round): number | null {
  if (guest.deadline === null) return null;
  const need = needMs(guest, rate);
  if (need === null) return null;
  if (round.now + need > guest.deadline) return 0;
  return chanceToBeDone(guest, host, rate, round);
}

// Why a host cannot take a guest, as a code per host (the text is in REASONS, or per host for P(stay)).
const USABLE = 0;
const NOT_CONNECTED = 1;
const NO_REPORT = 2;
const NO_MEMORY = 3;
const DEGRADED = 4;
const LIKELY_TO_LEAVE = 5;
const TOO_LATE = 6;
/** The guest's own host, or the one excluded: not a candidate at all. */
const SKIPPED = 7;
/** A guest late everywhere: the host is likely to leave before its work is done. */
const LEAVES_BEFORE_DONE = 8;
/** In time there only if it stays, and that is less likely than minFinishProbability. */
const UNLIKELY_IN_TIME = 9;
const REASONS: ReadonlyArray<string | undefined> = [
  undefined,
  'not connected',
  'no report yet',
  'memory does not fit',
  'degraded itself',
  undefined, // per host: its P(stay)
  'cannot finish before the deadline there',
  undefined, // skipped
  undefined, // per guest and host: its P(stays until done)
  undefined, // per guest and host: its P(finishing in time)
];

/**
 * What a round knows about each host whatever the guest: its speed, its age, whether it can take
 * guests at all, and P(stays the horizon), asked of the model once per host and round (on first use)
 * however many guests are ranked. Hosts are numbered by their place in `round.hosts`.
 */
class RoundHosts {
  readonly speed: Float64Array;
  /** Compute rate (score times free cores, no RTT discount): for times to finish. */
  readonly rate: Float64Array;
  readonly age: Float64Array;
  /** NOT_CONNECTED, NO_REPORT, DEGRADED or USABLE: the reasons that do not depend on the guest. */
  readonly base: Uint8Array;
  private readonly stay: Float64Array;
  private readonly asked: Uint8Array;
  private readonly stayText: Array<string | undefined>;
  private readonly horizonMs: number;
  private fastest: Int32Array | undefined;

  constructor(
    readonly round: Round,
    readonly policy: Policy,
  ) {
    const n = round.hosts.length;
    this.speed = new Float64Array(n);
    this.rate = new Float64Array(n);
    this.age = new Float64Array(n);
    this.base = new Uint8Array(n);
    this.stay = new Float64Array(n);
    this.asked = new Uint8Array(n);
    this.stayText = new Array<string | undefined>(n);
    this.horizonMs = policy.horizonMinutes * 60_000;
    for (let i = 0; i < n; i++) {
      const host = round.hosts[i] as HostSnapshot;
      this.speed[i] = speed(host, policy);
      this.rate[i] = computeRate(host);
      this.age[i] = host.joinedAt === null ? 0 : round.now - host.joinedAt;
      this.base[i] =
        !host.up || !host.canReceive
          ? NOT_CONNECTED
          : !host.metrics
            ? NO_REPORT
            : round.lowSince.has(host.id)
              ? DEGRADED
              : USABLE;
    }
  }

  /** P(host i stays the policy's horizon), from the round's model, asked once per round. */
  pStay(i: number): number {
    if (this.asked[i] === 0) {
      this.stay[i] = this.round.pStay((this.round.hosts[i] as HostSnapshot).id, this.age[i] ?? 0, this.horizonMs);
      this.asked[i] = 1;
    }
    return this.stay[i] ?? 0;
  }

  /** Why host i is refused for a guest held to minStayProbability. */
  stayReason(i: number): string {
    let text = this.stayText[i];
    if (text === undefined) {
      text = `P(stays ${this.policy.horizonMinutes} min) = ${fmt(this.pStay(i))} < ${this.policy.minStayProbability}`;
      this.stayText[i] = text;
    }
    return text;
  }

  /** Every host, fastest first (ties in table order). */
  bySpeed(): Int32Array {
    if (!this.fastest) {
      const n = this.speed.length;
      this.fastest = new Int32Array(n);
      for (let i = 0; i < n; i++) this.fastest[i] = i;
      sortByKeyDescending(this.fastest, this.speed);
    }
    return this.fastest;
  }
}

/** One guest's view of the hosts: per host, why it cannot take the guest, and its chance to finish there. */
interface Assessment {
  hosts: RoundHosts;
  guest: GuestSnapshot;
  reason: Uint8Array;
  /** Per host (deadline guests only; null: the guest has no deadline). */
  pFinish: Float64Array | null;
  /**
   * No candidate can finish it in time: pFinish then holds the chance to finish at all, hosts
   * likely to leave before that are refused, and the others rank by speed (the least late first).
   */
  late: boolean;
  /**
   * What deadline guests (not late) are ranked by: pFinish, less `finishMargin` where the guest
   * would finish with less than `deadlineBuffer` of its run time to spare. pFinish assumes the
   * host's rate holds until the deadline; a finish with seconds to spare is lost to any slowdown
   * (owner load, a guest placed beside it, a backup image's pause), so a chance higher by less than
   * the margin a move would need does not buy it. Null when pFinish is, or when late.
   */
  rank: Float64Array | null;
}

function assess(guest: GuestSnapshot, hosts: RoundHosts, exclude: string | undefined): Assessment {
  const { round, policy } = hosts;
  const n = round.hosts.length;
  const reason = new Uint8Array(n);
  const pFinish = guest.deadline !== null && guest.expectMs !== null ? new Float64Array(n) : null;
  const needs = guest.memoryBytes * 1.2;
  let usable = false;
  let tooLate = false;
  for (let i = 0; i < n; i++) {
    const host = round.hosts[i] as HostSnapshot;
    if (host.id === exclude || host.id === guest.hostId) {
      reason[i] = SKIPPED;
      continue;
    }
    const pStay = hosts.pStay(i);
    const finish = pFinish ? (chanceToFinish(guest, host, hosts.rate[i] ?? 0, round) ?? 0) : null;
    if (pFinish) pFinish[i] = finish ?? 0;
    const base = hosts.base[i] ?? USABLE;
    reason[i] =
      base === NOT_CONNECTED || base === NO_REPORT
        ? base
        : (host.metrics?.memory.freeBytes ?? 0) < needs
          ? NO_MEMORY
          : base === DEGRADED
            ? DEGRADED
            : finish === null && pStay < policy.minStayProbability
              ? LIKELY_TO_LEAVE
              : finish === 0
                ? TOO_LATE
                : finish !== null && finish < policy.minFinishProbability
                  ? UNLIKELY_IN_TIME
                  : USABLE;
    if (reason[i] === USABLE) usable = true;
    else if (reason[i] === TOO_LATE || reason[i] === UNLIKELY_IN_TIME) tooLate = true;
  }
  const late = pFinish !== null && !usable && tooLate;
  if (late) judgeLate(guest, hosts, reason, pFinish);
  let rank: Float64Array | null = null;
  if (pFinish && !late) {
    rank = new Float64Array(pFinish);
    for (let i = 0; i < n; i++) {
      if (reason[i] !== SKIPPED && tight(guest, hosts.rate[i] ?? 0, round, policy)) {
        rank[i] = (pFinish[i] ?? 0) - policy.finishMargin;
      }
    }
  }
  return { hosts, guest, reason, pFinish, late, rank };
}

/**
 * A guest that no candidate can finish in time (or with at least minFinishProbability) is still
 * better finished late than restarted: the hosts refused only for the deadline are judged by their
 * chance to stay until its work is done.
 */
function judgeLate(guest: GuestSnapshot, hosts: RoundHosts, reason: Uint8Array, pFinish: Float64Array): void {
  const { round, policy } = hosts;
  for (let i = 0; i < reason.length; i++) {
    if (reason[i] !== TOO_LATE && reason[i] !== UNLIKELY_IN_TIME) continue;
    const p = chanceToBeDone(guest, round.hosts[i] as HostSnapshot, hosts.rate[i] ?? 0, round) ?? 0;
    pFinish[i] = p;
    reason[i] = p >= policy.minStayProbability ? USABLE : LEAVES_BEFORE_DONE;
  }
}

function rejection(a: Assessment, i: number): string | undefined {
  const code = a.reason[i] ?? USABLE;
  if (code === LEAVES_BEFORE_DONE) {
    const need = needMs(a.guest, a.hosts.rate[i] ?? 0) ?? 0;
    return `too late for the deadline anywhere, and P(stays until done, ${fmt(need / 60_000, 0)} min) = ${fmt(a.pFinish?.[i] ?? 0)} < ${a.hosts.policy.minStayProbability}`;
  }
  if (code === UNLIKELY_IN_TIME) {
    return `P(finishing in time) = ${fmt(a.pFinish?.[i] ?? 0, 3)} < ${a.hosts.policy.minFinishProbability}`;
  }
  return code === LIKELY_TO_LEAVE ? a.hosts.stayReason(i) : REASONS[code];
}

/**
 * The candidates of an assessment, best first: usable hosts ahead of the others; within each,
 * deadline guests by their chance to finish in time, less `finishMargin` where the finish would be
 * without `deadlineBuffer` to spare (see Assessment.rank; speed breaks ties), other guests, and guests
 * too late for their deadline everywhere, by speed; ties in table order. The hosts are sorted by
 * speed once per round; a guest without a deadline only splits that order in two, a guest with one
 * sorts each part by its chance to finish.
 */
function ranking(a: Assessment): Int32Array {
  const fastest = a.hosts.bySpeed();
  const reason = a.reason;
  let usable = 0;
  let listed = 0;
  for (let k = 0; k < fastest.length; k++) {
    const code = reason[fastest[k] ?? 0];
    if (code === USABLE) usable++;
    if (code !== SKIPPED) listed++;
  }
  const out = new Int32Array(listed);
  let u = 0;
  let r = usable;
  for (let k = 0; k < fastest.length; k++) {
    const i = fastest[k] ?? 0;
    const code = reason[i];
    if (code === USABLE) out[u++] = i;
    else if (code !== SKIPPED) out[r++] = i;
  }
  // Both parts are in speed order: a stable sort by the chance to finish keeps it for ties.
  if (a.rank) {
    sortByKeyDescending(out.subarray(0, usable), a.rank);
    sortByKeyDescending(out.subarray(usable), a.rank);
  }
  return out;
}

function candidate(a: Assessment, i: number): Candidate {
  const c: Candidate = {
    host: a.hosts.round.hosts[i] as HostSnapshot,
    speed: a.hosts.speed[i] ?? 0,
    pStay: a.hosts.pStay(i),
    pFinish: a.pFinish ? (a.pFinish[i] ?? 0) : null,
  };
  const rejected = rejection(a, i);
  if (rejected) c.rejected = rejected;
  return c;
}

/**
 * Every other host as a candidate for `guest`, best first: those that can take it (up, memory
 * fits, likely to stay) ahead of those that cannot, each with its numbers.
 */
export function rankCandidates(guest: GuestSnapshot, round: Round, policy: Policy, exclude?: string): Candidate[] {
  const a = assess(guest, new RoundHosts(round, policy), exclude);
  return Array.from(ranking(a), (i) => candidate(a, i));
}

/** What a move of one guest to its best candidate would change, for weighMove. */
export interface MoveCase {
  /** The candidate's speed over the guest's speed where it is. */
  speedRatio: number;
  /** The candidate's pFinish (see Candidate). */
  pFinish: number | null;
  /** The chance to finish in time where it is, and to finish there at all (null: no deadline). */
  hereFinish: number | null;
  hereDone: number | null;
  /** In time here, but without `deadlineBuffer` to spare (at the present rate there). */
  hereTight: boolean;
  /** No candidate can finish it in time. */
  late: boolean;
}

/** Whether a deadline guest would finish at `rate` with less than `deadlineBuffer` of its run time to spare. */
function tight(guest: GuestSnapshot, rate: number, round: Round, policy: Policy): boolean {
  const need = needMs(guest, rate);
  return guest.deadline !== null && need !== null && round.now + need * (1 + policy.deadlineBuffer) > guest.deadline;
}

/**
 * Whether a guest of a degraded host should move to its best candidate, and why (or why not).
 * Without a deadline: if the candidate is faster by the margin. With one, a move is judged by the
 * chance to finish in time, not by speed: if the new host leaves, the work done so far is lost,
 * so a guest that can still finish in time where it is moves only for a chance higher by
 * `finishMargin`, or, if it would finish there without `deadlineBuffer` to spare (the rate of a
 * degraded host may fall further), for speed, to a host no less likely to finish it in time. One
 * that cannot finish in time where it is moves to a candidate that can. One too late everywhere moves
 * for speed, to a host no less likely to stay until it is done.
 */
export function weighMove(c: MoveCase, policy: Policy): { move: boolean; why: string; reason: string } {
  const fast = c.speedRatio >= policy.margin;
  const speedText = `${fmt(c.speedRatio)}× as fast (a move needs ${policy.margin}×)`;
  if (c.pFinish === null || c.hereFinish === null) return { move: fast, why: speedText, reason: 'margin' };
  if (c.late && c.hereFinish > 0) {
    return { move: false, why: 'too late for the deadline there, in time here', reason: 'finish' };
  }
  if (c.late) {
    const steady = c.pFinish >= (c.hereDone ?? 0);
    const why = steady
      ? speedText
      : `P(finishing there at all) ${fmt(c.pFinish)} < ${fmt(c.hereDone ?? 0)} here, the deadline missed anyway`;
    return { move: fast && steady, why, reason: steady ? 'margin' : 'finish' };
  }
  if (c.hereFinish === 0) return { move: true, why: 'it cannot finish in time here', reason: 'finish' };
  if (c.hereTight && fast && c.pFinish >= c.hereFinish) {
    const why = `in time here with less than ${fmt(100 * policy.deadlineBuffer, 0)}% of its run time to spare; ${speedText}`;
    return { move: true, why, reason: 'finish' };
  }
  const gain = c.pFinish - c.hereFinish;
  return gain >= policy.finishMargin
    ? { move: true, why: `P(finishing in time) ${fmt(c.pFinish)} there vs ${fmt(c.hereFinish)} here`, reason: 'finish' }
    : {
        move: false,
        why: `P(finishing in time) ${fmt(c.pFinish)} there vs ${fmt(c.hereFinish)} here (a move needs +${policy.finishMargin}; the work done is at stake, speed alone is no reason)`,
        reason: 'finish',
      };
}

/** One decision round: for each degraded host, its guests heaviest first. */
export function decide(round: Round, policy: Policy): Decision[] {
  const decisions: Decision[] = [];
  if (!policy.enabled) return decisions;
  let budget = policy.maxConcurrentMoves - round.moving.size;
  const windowMs = policy.windowSeconds * 1000;
  // The guests of degraded hosts, by host, found once (not by a scan of every guest for each).
  let byHost: Map<string, GuestSnapshot[]> | undefined;
  // What the round knows of every host, worked out once, when the first guest is ranked.
  let hosts: RoundHosts | undefined;
  for (const source of round.hosts) {
    // Without budget no host can decide anything more (not even a declined move): stop here.
    if (budget <= 0) break;
    const since = round.lowSince.get(source.id);
    if (since === undefined || round.now - since < windowMs || !source.metrics) continue;
    const u = round.meanUtility?.get(source.id) ?? utility(source.metrics, policy.weights);
    const trigger = `utility of ${source.name} ${fmt(u)} < ${policy.threshold} for ${Math.round((round.now - since) / 1000)} s`;
    if (!byHost) {
      byHost = new Map();
      for (const g of round.guests) {
        if (!round.lowSince.has(g.hostId)) continue;
        const list = byHost.get(g.hostId);
        if (list) list.push(g);
        else byHost.set(g.hostId, [g]);
      }
    }
    const guests = [...(byHost.get(source.id) ?? [])].sort(
      (a, b) => b.cpuRate - a.cpuRate || b.memoryBytes - a.memoryBytes,
    );
    if (guests.length === 0) continue;

    for (const guest of guests) {
      if (budget <= 0) break;
      if (round.moving.has(guest.id)) continue;
      const last = round.lastMoved.get(guest.id);
      if (last !== undefined && round.now - last < policy.cooldownSeconds * 1000) {
        decisions.push(
          declined(
            source,
            guest,
            `${trigger}; ${guest.name} moved ${Math.round((round.now - last) / 1000)} s ago (cooldown ${policy.cooldownSeconds} s)`,
            { utility: u, reason: 'cooldown' },
          ),
        );
        continue;
      }
      // The guest's own CPU use is part of its host's load: counted against the host, a busy guest
      // alone on a small host would look starved and move at every cooldown (ping-pong).
      const here = speed(source, policy, -guest.cpuRate / 1000);
      hosts ??= new RoundHosts(round, policy);
      const a = assess(guest, hosts, undefined);
      const ranked = ranking(a);
      // Usable candidates come first: the best, and the backup, are the first two if usable.
      const first = ranked[0];
      const second = ranked[1];
      const best = first !== undefined && a.reason[first] === USABLE ? candidate(a, first) : undefined;
      const backupHost = second !== undefined && a.reason[second] === USABLE ? round.hosts[second] : undefined;
      const hereRate = computeRate(source, -guest.cpuRate / 1000);
      const hereFinish = chanceToFinish(guest, source, hereRate, round);
      const weighed = best
        ? weighMove(
            {
              speedRatio: best.speed / Math.max(here, 1e-9),
              pFinish: best.pFinish,
              hereFinish,
              hereDone: chanceToBeDone(guest, source, hereRate, round),
              hereTight: tight(guest, hereRate, round, policy),
              late: a.late,
            },
            policy,
          )
        : undefined;
      if (!best || !weighed?.move) {
        const why = best
          ? `the best candidate ${best.host.name}: ${weighed?.why ?? ''}`
          : `no candidate: ${noCandidate(a, ranked)}`;
        decisions.push(
          declined(source, guest, `${trigger}; ${guest.name} stays: ${why}`, {
            utility: u,
            reason: weighed?.reason ?? 'no-candidate',
            hereFinish,
            ...summaries(a, ranked),
          }),
        );
        continue;
      }
      const backup = backupHost?.name ?? null;
      const risk =
        best.pFinish === null
          ? `P(${best.host.name} stays ${policy.horizonMinutes} min) = ${fmt(best.pStay)}`
          : `${weighed.why}; ${
              a.late
                ? `too late for the deadline anywhere, P(finishing on ${best.host.name} at all) = ${fmt(best.pFinish)}`
                : `P(finishing in time on ${best.host.name}) = ${fmt(best.pFinish)}${hereFinish === null ? '' : ` (here ${fmt(hereFinish)})`}`
            }`;
      decisions.push({
        kind: 'move',
        guestId: guest.id,
        guestName: guest.name,
        from: source.name,
        to: best.host.name,
        backup,
        message: `move ${guest.name} from ${source.name} to ${best.host.name}: ${trigger}; ${best.host.name} ${fmt(best.speed / Math.max(here, 1e-9), 1)}× as fast; ${risk}; backup ${backup ?? 'none'}`,
        data: {
          utility: u,
          lowForMs: round.now - since,
          speedRatio: best.speed / Math.max(here, 1e-9),
          pStay: best.pStay,
          pFinish: best.pFinish,
          hereFinish,
          late: a.late,
          backup,
          ...summaries(a, ranked),
        },
      });
      budget--;

      break; // one guest per degraded host per round: the next round sees the effect
    }
  }
  return decisions;
}

/**
 * Where to place a new guest: the best candidate by the same model (deadline guests by P(finish),
 * a tight finish counted `finishMargin` lower).
 * Only the best is wanted, so one pass finds it (the order is rankCandidates'; no sort).
 */
export function placeGuest(guest: GuestSnapshot, round: Round, policy: Policy): Candidate | undefined {
  const a = assess(guest, new RoundHosts(round, policy), undefined);
  const s = a.hosts.speed;
  const pf = a.rank;
  let best = -1;
  for (let i = 0; i < a.reason.length; i++) {
    if (a.reason[i] !== USABLE) continue;
    if (best < 0) {
      best = i;
      continue;
    }
    const byChance = pf ? (pf[i] ?? 0) - (pf[best] ?? 0) : 0;
    if (byChance > 0 || (byChance === 0 && (s[i] ?? 0) - (s[best] ?? 0) > 0)) best = i;
  }
  return best < 0 ? undefined : candidate(a, best);
}

function declined(
  host: HostSnapshot,
  guest: GuestSnapshot,
  message: string,
  data: Record<string, unknown>,
): DeclinedDecision {
  return { kind: 'declined', hostId: host.id, guestId: guest.id, message, data };
}

/**
 * How many of the ranked candidates a decision names, best first (usable ones come first). With
 * thousands of hosts, the whole list made each event about a megabyte in the proxy's log.
 */
export const LISTED_CANDIDATES = 20;

/** The best ranked candidates as a decision's data says them, and how many there were in all. */
function summaries(
  a: Assessment,
  ranked: Int32Array,
): { candidates: Array<Record<string, unknown>>; candidatesTotal: number } {
  const candidates = Array.from(ranked.subarray(0, LISTED_CANDIDATES), (i) => {
    const c = candidate(a, i);
    return { host: c.host.name, speed: c.speed, pStay: c.pStay, pFinish: c.pFinish, rejected: c.rejected ?? null };
  });
  return { candidates, candidatesTotal: ranked.length };
}

/** Why no candidate can take the guest, for a message: the first few hosts, and how many more. */
function noCandidate(a: Assessment, ranked: Int32Array): string {
  const shown = Array.from(
    ranked.subarray(0, 10),
    (i) => `${(a.hosts.round.hosts[i] as HostSnapshot).name} (${rejection(a, i) ?? '?'})`,
  );
  if (shown.length === 0) return 'no other host';
  return ranked.length > shown.length
    ? `${shown.join(', ')} and ${ranked.length - shown.length} more`
    : shown.join(', ');
}
