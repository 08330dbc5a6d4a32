/**
 * Migration decisions (paper section IV-C), as pure functions of the roaming table and the policy:
 * which hosts are degraded, which of their guests should move, where to, and the backup if that
 * move fails. Every decision and every declined trigger comes with its reasons and numbers.
 */
import type { Policy } from './config.js';
import type { GuestSnapshot, HostSnapshot } from './model.js';
import { speed, utility } from './utility.js';

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
  /** For a guest with a deadline: the chance to finish in time there. */
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

/**
 * The monitor: a host is degraded when its utility, averaged over the policy's window, is below
 * the threshold. Averaging (rather than asking every sample to be low) keeps a host whose busy
 * work gets a little less CPU now and then from restarting its window at every sample.
 */
export class UtilityMonitor {
  private readonly samples = new Map<string, Array<{ t: number; u: number }>>();
  private low = new Map<string, number>();
  private readonly means = new Map<string, number>();

  /** Takes this round's reports; returns since when each degraded host has been degraded. */
  observe(hosts: HostSnapshot[], policy: Policy, now: number): Map<string, number> {
    const windowMs = policy.windowSeconds * 1000;
    const next = new Map<string, number>();
    for (const h of hosts) {
      if (!h.up || !h.metrics) {
        this.samples.delete(h.id);
        continue;
      }
      const list = this.samples.get(h.id) ?? [];
      list.push({ t: now, u: utility(h.metrics, policy.weights) });
      // Keep the window, plus the sample just before it (it shows the window is covered).
      while (list.length > 1 && (list[1]?.t ?? now) <= now - windowMs) list.shift();
      this.samples.set(h.id, list);
      const covered = (list[0]?.t ?? now) <= now - windowMs;
      let sum = 0;
      let count = 0;
      for (const x of list) {
        if (x.t > now - windowMs || windowMs === 0) {
          sum += x.u;
          count++;
        }
      }
      const mean = sum / Math.max(1, count);
      this.means.set(h.id, mean);
      const since = this.low.get(h.id);
      if (covered && mean < policy.threshold) next.set(h.id, since ?? now - windowMs);
      else if (since !== undefined && mean < policy.threshold + RECOVERY_BAND) next.set(h.id, since);
    }
    this.low = next;
    return next;
  }

  /** A host's utility averaged over the window (as of the last observation). */
  mean(hostId: string): number | undefined {
    return this.means.get(hostId);
  }
}

/** The chance a guest with a deadline finishes in time on `host` (work left at that host's speed). */
export function chanceToFinish(guest: GuestSnapshot, host: HostSnapshot, s: number, round: Round): number | null {
  if (guest.deadline === null || guest.expectMs === null) return null;
  const left = Math.max(0, guest.expectMs - guest.cpuMs);
  const needMs = s > 0 ? left / s : Infinity;
  if (round.now + needMs > guest.deadline) return 0;
  return round.pStay(host.id, host.joinedAt === null ? 0 : round.now - host.joinedAt, needMs);
}

/**
 * Every other host as a candidate for `guest`, best first: those that can take it (up, memory
 * fits, likely to stay) ahead of those that cannot, each with its numbers.
 */
export function rankCandidates(guest: GuestSnapshot, round: Round, policy: Policy, exclude?: string): Candidate[] {
  const horizonMs = policy.horizonMinutes * 60_000;
  const candidates = round.hosts
    .filter((h) => h.id !== exclude && h.id !== guest.hostId)
    .map((host): Candidate => {
      const s = speed(host, policy);
      const age = host.joinedAt === null ? 0 : round.now - host.joinedAt;
      const pStay = round.pStay(host.id, age, horizonMs);
      const pFinish = chanceToFinish(guest, host, s, round);
      let rejected: string | undefined;
      if (!host.up || !host.canReceive) rejected = 'not connected';
      else if (!host.metrics) rejected = 'no report yet';
      else if (host.metrics.memory.freeBytes < guest.memoryBytes * 1.2) rejected = 'memory does not fit';
      else if (round.lowSince.has(host.id)) rejected = 'degraded itself';
      else if (pFinish === null && pStay < policy.minStayProbability)
        rejected = `P(stays ${policy.horizonMinutes} min) = ${fmt(pStay)} < ${policy.minStayProbability}`;
      else if (pFinish === 0) rejected = 'cannot finish before the deadline there';
      const candidate: Candidate = { host, speed: s, pStay, pFinish };
      if (rejected) candidate.rejected = rejected;
      return candidate;
    });
  // Deadline guests: the chance to finish first (speed only breaks ties); others: speed.
  return candidates.sort(
    (a, b) => Number(!!a.rejected) - Number(!!b.rejected) || (b.pFinish ?? 0) - (a.pFinish ?? 0) || b.speed - a.speed,
  );
}

/** One decision round: for each degraded host, its guests heaviest first. */
export function decide(round: Round, policy: Policy): Decision[] {
  const decisions: Decision[] = [];
  if (!policy.enabled) return decisions;
  let budget = policy.maxConcurrentMoves - round.moving.size;
  const windowMs = policy.windowSeconds * 1000;
  // Each host's guests, found once (not by a scan of every guest for each degraded host).
  const byHost = new Map<string, GuestSnapshot[]>();
  for (const g of round.guests) {
    const list = byHost.get(g.hostId);
    if (list) list.push(g);
    else byHost.set(g.hostId, [g]);
  }
  for (const source of round.hosts) {
    // Without budget no host can decide anything more (not even a declined move): stop here.
    if (budget <= 0) break;
    const since = round.lowSince.get(source.id);
    if (since === undefined || round.now - since < windowMs || !source.metrics) continue;
    const u = round.meanUtility?.get(source.id) ?? utility(source.metrics, policy.weights);
    const trigger = `utility of ${source.name} ${fmt(u)} < ${policy.threshold} for ${Math.round((round.now - since) / 1000)} s`;
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
      const ranked = rankCandidates(guest, round, policy);
      const usable = ranked.filter((c) => !c.rejected);
      const best = usable[0];
      const hereFinish = chanceToFinish(guest, source, here, round);
      const better =
        best &&
        (best.pFinish !== null && hereFinish !== null
          ? best.pFinish > hereFinish || best.speed >= here * policy.margin
          : best.speed >= here * policy.margin);
      if (!best || !better) {
        const why = best
          ? `the best candidate ${best.host.name} is only ${fmt(best.speed / Math.max(here, 1e-9))}× as fast (needs ${policy.margin}×)`
          : `no candidate: ${ranked.map((c) => `${c.host.name} (${c.rejected ?? '?'})`).join(', ') || 'no other host'}`;
        decisions.push(
          declined(source, guest, `${trigger}; ${guest.name} stays: ${why}`, {
            utility: u,
            reason: best ? 'margin' : 'no-candidate',
            candidates: ranked.map(summary),
          }),
        );
        continue;
      }
      const backup = usable[1]?.host.name ?? null;
      const risk =
        best.pFinish !== null
          ? `P(finishing in time on ${best.host.name}) = ${fmt(best.pFinish)}`
          : `P(${best.host.name} stays ${policy.horizonMinutes} min) = ${fmt(best.pStay)}`;
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
          backup,
          candidates: ranked.map(summary),
        },
      });
      budget--;

      break; // one guest per degraded host per round: the next round sees the effect
    }
  }
  return decisions;
}

/** Where to place a new guest: the best candidate by the same model (deadline guests by P(finish)). */
export function placeGuest(guest: GuestSnapshot, round: Round, policy: Policy): Candidate | undefined {
  return rankCandidates(guest, round, policy).find((c) => !c.rejected);
}

function declined(
  host: HostSnapshot,
  guest: GuestSnapshot,
  message: string,
  data: Record<string, unknown>,
): DeclinedDecision {
  return { kind: 'declined', hostId: host.id, guestId: guest.id, message, data };
}

function summary(c: Candidate): Record<string, unknown> {
  return { host: c.host.name, speed: c.speed, pStay: c.pStay, pFinish: c.pFinish, rejected: c.rejected ?? null };
}
