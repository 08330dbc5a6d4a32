/**
 * The decision round's bookkeeping (src/policy/decide.ts, order.ts) against plain reference
 * implementations, on random tables: the ranking sorts the hosts by speed once per round and asks
 * the model for each host's P(stay) once, the monitor keeps its samples in arrays; none of that may
 * change a decision. The references below are the straightforward code (filter, map, a sort with a
 * comparator), kept here as the specification.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { DEFAULT_POLICY, type Policy } from '../src/policy/config.js';
import {
  RECOVERY_BAND,
  UtilityMonitor,
  chanceToBeDone,
  chanceToFinish,
  LISTED_CANDIDATES,
  decide,
  placeGuest,
  rankCandidates,
  type Candidate,
  type Round,
} from '../src/policy/decide.js';
import type { GuestSnapshot, HostSnapshot } from '../src/policy/model.js';
import { sortByKeyDescending } from '../src/policy/order.js';
import { computeRate, speed, utility } from '../src/policy/utility.js';

const GiB = 2 ** 30;
const NOW = Date.UTC(2026, 10, 26, 12);

const TOO_LATE = 'cannot finish before the deadline there';

/**
 * Every host but the guest's own (and `exclude`), best first, by the comparator the ranking is
 * specified by. Times to finish come from the compute rate (no RTT discount: distance does not slow
 * a computation); a finish with less than deadlineBuffer of its run time to spare counts
 * finishMargin less likely; a deadline guest that no host can finish in time (or with
 * minFinishProbability) is judged by each host's chance to stay until it is done, and ranked by speed.
 */
function referenceRanking(guest: GuestSnapshot, round: Round, policy: Policy, exclude?: string): Candidate[] {
  const horizonMs = policy.horizonMinutes * 60_000;
  const candidates = round.hosts
    .filter((h) => h.id !== exclude && h.id !== guest.hostId)
    .map((host): Candidate => {
      const s = speed(host, policy);
      const pStay = round.pStay(host.id, host.joinedAt === null ? 0 : round.now - host.joinedAt, horizonMs);
      const pFinish = chanceToFinish(guest, host, computeRate(host), round);
      let rejected: string | undefined;
      if (!host.up || !host.canReceive) rejected = 'not connected';
      else if (!host.metrics) rejected = 'no report yet';
      else if (host.metrics.memory.freeBytes < guest.memoryBytes * 1.2) rejected = 'memory does not fit';
      else if (round.lowSince.has(host.id)) rejected = 'degraded itself';
      else if (pFinish === null && pStay < policy.minStayProbability)
        rejected = `P(stays ${policy.horizonMinutes} min) = ${pStay.toFixed(2)} < ${policy.minStayProbability}`;
      else if (pFinish === 0) rejected = TOO_LATE;
      else if (pFinish !== null && pFinish < policy.minFinishProbability)
        rejected = `P(finishing in time) = ${pFinish.toFixed(3)} < ${policy.minFinishProbability}`;
      const candidate: Candidate = { host, speed: s, pStay, pFinish };
      if (rejected) candidate.rejected = rejected;
      return candidate;
    });
  const unlikely = (c: Candidate): boolean =>
    c.rejected === TOO_LATE || !!c.rejected?.startsWith('P(finishing in time)');
  const late = guest.deadline !== null && !candidates.some((c) => !c.rejected) && candidates.some(unlikely);
  if (late) {
    for (const c of candidates) {
      if (!unlikely(c)) continue;
      const rate = computeRate(c.host);
      const p = chanceToBeDone(guest, c.host, rate, round) ?? 0;
      const needMin = Math.max(0, (guest.expectMs ?? 0) - guest.cpuMs) / rate / 60_000;
      c.pFinish = p;
      if (p >= policy.minStayProbability) delete c.rejected;
      else
        c.rejected = `too late for the deadline anywhere, and P(stays until done, ${needMin.toFixed(0)} min) = ${p.toFixed(2)} < ${policy.minStayProbability}`;
    }
  }
  // A finish without deadlineBuffer of its run time to spare counts finishMargin less likely.
  const rank = (c: Candidate): number => {
    const rate = computeRate(c.host);
    const need = rate > 0 ? Math.max(0, (guest.expectMs ?? 0) - guest.cpuMs) / rate : Infinity;
    const tight = guest.deadline !== null && round.now + need * (1 + policy.deadlineBuffer) > guest.deadline;
    return (c.pFinish ?? 0) - (tight ? policy.finishMargin : 0);
  };
  return candidates.sort(
    (a, b) => Number(!!a.rejected) - Number(!!b.rejected) || (late ? 0 : rank(b) - rank(a)) || b.speed - a.speed,
  );
}

/** The monitor as first written: one object per sample, the window's mean summed afresh. */
class ReferenceMonitor {
  private readonly samples = new Map<string, Array<{ t: number; u: number }>>();
  private low = new Map<string, number>();
  private readonly means = new Map<string, number>();

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
      while (list.length > 1 && (list[1]?.t ?? now) <= now - windowMs) list.shift();
      this.samples.set(h.id, list);
      const covered = (list[0]?.t ?? now) <= now - windowMs;
      const inWindow = list.filter((x) => x.t > now - windowMs || windowMs === 0);
      const mean = inWindow.reduce((sum, x) => sum + x.u, 0) / Math.max(1, inWindow.length);
      this.means.set(h.id, mean);
      const since = this.low.get(h.id);
      if (covered && mean < policy.threshold) next.set(h.id, since ?? now - windowMs);
      else if (since !== undefined && mean < policy.threshold + RECOVERY_BAND) next.set(h.id, since);
    }
    this.low = next;
    return next;
  }

  mean(hostId: string): number | undefined {
    return this.means.get(hostId);
  }
}

// Coarse values, so that ties (equal speeds, equal chances) are common.
const hostArb = (i: number): fc.Arbitrary<HostSnapshot> =>
  fc
    .record({
      up: fc.nat({ max: 9 }).map((x) => x > 0),
      canReceive: fc.nat({ max: 19 }).map((x) => x > 0),
      score: fc.option(fc.constantFrom(0.5, 1, 2, 1.37), { freq: 10 }),
      rttMs: fc.option(fc.constantFrom(0, 10, 25), { freq: 10 }),
      metrics: fc.option(
        fc.record({
          usage: fc.constantFrom(0, 0.25, 0.5, 0.9, 1),
          capacity: fc.constantFrom(1, 2, 4),
          waiting: fc.option(fc.constantFrom(0.05, 0.2), { nil: undefined }),
          freeGiB: fc.constantFrom(0.5, 1, 2, 6),
          net: fc.option(fc.constantFrom(0, 0.5, 1)),
        }),
        { freq: 12 },
      ),
      joinedAgoMin: fc.option(fc.integer({ min: 0, max: 600 }), { freq: 10 }),
    })
    .map((h): HostSnapshot => ({
      id: `h${i}`,
      name: `host-${i}`,
      up: h.up,
      canReceive: h.canReceive,
      score: h.score,
      rttMs: h.rttMs,
      metrics: h.metrics && {
        cpu: {
          usage: h.metrics.usage,
          capacity: h.metrics.capacity,
          ...(h.metrics.waiting === undefined ? {} : { waiting: h.metrics.waiting }),
        },
        memory: { totalBytes: 8 * GiB, freeBytes: h.metrics.freeGiB * GiB, limitBytes: null },
        network: { utilisation: h.metrics.net },
      },
      joinedAt: h.joinedAgoMin === null ? null : NOW - h.joinedAgoMin * 60_000,
    }));

const tableArb = fc.integer({ min: 1, max: 30 }).chain((n) =>
  fc.record({
    hosts: fc.tuple(...Array.from({ length: n }, (_, i) => hostArb(i))),
    guests: fc.array(
      fc.record({
        host: fc.nat({ max: n - 1 }),
        memoryMiB: fc.constantFrom(100, 1000, 3000),
        cpuRate: fc.constantFrom(0, 10, 500, 1000),
        deadlineMin: fc.option(fc.constantFrom(5, 60, 180)),
        expectMin: fc.constantFrom(10, 60),
        cpuMin: fc.constantFrom(0, 5, 30),
      }),
      { maxLength: 2 * n },
    ),
    degraded: fc.array(fc.nat({ max: n - 1 }), { maxLength: n }),
    cooling: fc.array(fc.nat({ max: 2 * n }), { maxLength: 3 }),
    // P(stay) as a pure function of host, age and horizon: a step (ties) or a smooth curve.
    stay: fc.constantFrom('step', 'curve', 'one'),
    maxConcurrentMoves: fc.constantFrom(1, 2, 50),
    margin: fc.constantFrom(1, 1.3, 3),
  }),
);

type Table = typeof tableArb extends fc.Arbitrary<infer T> ? T : never;

function roundOf(t: Table): { round: Round; policy: Policy } {
  const guests: GuestSnapshot[] = t.guests.map((g, i) => ({
    id: `g${i}`,
    name: `guest-${i}`,
    hostId: `h${g.host}`,
    memoryBytes: g.memoryMiB * 2 ** 20,
    cpuRate: g.cpuRate,
    deadline: g.deadlineMin === null ? null : NOW + g.deadlineMin * 60_000,
    expectMs: g.deadlineMin === null ? null : g.expectMin * 60_000,
    cpuMs: g.cpuMin * 60_000,
  }));
  const pStay = (id: string, age: number, horizon: number): number =>
    t.stay === 'one'
      ? 1
      : t.stay === 'step'
        ? ([0, 0.3, 0.5, 0.9][(id.length + Math.floor(age / 3_600_000) + Math.floor(horizon / 600_000)) % 4] ?? 0)
        : Math.exp(-horizon / (600_000 * (1 + (Number(id.slice(1)) % 7)) + age / 10));
  return {
    round: {
      now: NOW,
      hosts: [...t.hosts],
      guests,
      lowSince: new Map(t.degraded.map((i) => [`h${i}`, NOW - 30_000])),
      lastMoved: new Map(t.cooling.map((i) => [`g${i}`, NOW - 10_000])),
      moving: new Set(),
      pStay,
    },
    // An odd horizon, so that no guest's time to finish equals it (the P(stay) count below tells them apart by it).
    policy: { ...DEFAULT_POLICY, maxConcurrentMoves: t.maxConcurrentMoves, margin: t.margin, horizonMinutes: 7.3 },
  };
}

describe('sortByKeyDescending', () => {
  it('orders as a stable sort by (a, b) => key[b] - key[a] does, 0 and -0 alike', () => {
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom(0, -0, 0.5, 1, 2, 3.25, -1, Infinity), { maxLength: 200 }),
        fc.array(fc.double({ noNaN: true }), { maxLength: 100 }),
        (coarse, fine) => {
          const key = Float64Array.from([...coarse, ...fine]);
          const items = Int32Array.from(key.keys());
          const expected = [...items].sort((a, b) => (key[b] ?? 0) - (key[a] ?? 0) || a - b);
          sortByKeyDescending(items, key);
          assert.deepEqual([...items], expected);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('sorts a part of a larger array in place', () => {
    const key = Float64Array.from([5, 1, 4, 2, 3]);
    const items = Int32Array.from([0, 1, 2, 3, 4]);
    sortByKeyDescending(items.subarray(1, 4), key);
    assert.deepEqual([...items], [0, 2, 3, 1, 4]);
  });
});

describe('decision round against the reference', () => {
  it('ranks every guest as the reference comparator does, with and without an excluded host', () => {
    fc.assert(
      fc.property(tableArb, fc.nat(), (t, pick) => {
        const { round, policy } = roundOf(t);
        const exclude = round.hosts[pick % round.hosts.length]?.id;
        for (const g of round.guests) {
          assert.deepEqual(rankCandidates(g, round, policy), referenceRanking(g, round, policy));
          assert.deepEqual(rankCandidates(g, round, policy, exclude), referenceRanking(g, round, policy, exclude));
          const fresh = { ...g, hostId: '' };
          assert.deepEqual(
            placeGuest(fresh, round, policy),
            referenceRanking(fresh, round, policy).find((c) => !c.rejected),
          );
        }
      }),
      { numRuns: 300 },
    );
  });

  it('puts the reference ranking in each decision and asks for P(stay) at most once per host and horizon', () => {
    fc.assert(
      fc.property(tableArb, (t) => {
        const { round, policy } = roundOf(t);
        const asked = new Map<string, number>();
        const counted: Round = {
          ...round,
          pStay: (id, age, horizon) => {
            if (horizon === policy.horizonMinutes * 60_000) asked.set(id, (asked.get(id) ?? 0) + 1);
            return round.pStay(id, age, horizon);
          },
        };
        const decisions = decide(counted, policy);
        for (const [id, n] of asked) assert.equal(n, 1, `P(stay) of ${id} asked ${n} times`);
        for (const d of decisions) {
          if (d.data['candidates'] === undefined) continue;
          const guest = round.guests.find((g) => g.id === d.guestId);
          assert.ok(guest);
          const expected = referenceRanking(guest, round, policy).map((c) => ({
            host: c.host.name,
            speed: c.speed,
            pStay: c.pStay,
            pFinish: c.pFinish,
            rejected: c.rejected ?? null,
          }));
          assert.deepEqual(d.data['candidates'], expected.slice(0, LISTED_CANDIDATES));
          assert.equal(d.data['candidatesTotal'], expected.length);
          if (d.kind === 'move') {
            const usable = expected.filter((c) => c.rejected === null);
            assert.equal(d.to, usable[0]?.host);
            assert.equal(d.backup, usable[1]?.host ?? null);
          }
        }
      }),
      { numRuns: 300 },
    );
  });

  it('the monitor says what the reference monitor says, round after round', () => {
    fc.assert(
      fc.property(
        tableArb,
        fc.array(fc.record({ step: fc.constantFrom(0, 500, 1000, 4000), flip: fc.nat() }), { maxLength: 40 }),
        fc.constantFrom(0, 1, 10),
        (t, steps, windowSeconds) => {
          const policy = { ...DEFAULT_POLICY, windowSeconds };
          const monitor = new UtilityMonitor();
          const reference = new ReferenceMonitor();
          let now = NOW;
          const hosts = [...t.hosts];
          for (const s of steps) {
            now += s.step;
            const i = s.flip % hosts.length;
            const h = hosts[i];
            if (h && s.flip % 3 === 0) hosts[i] = { ...h, up: !h.up };
            assert.deepEqual([...monitor.observe(hosts, policy, now)], [...reference.observe(hosts, policy, now)]);
            for (const x of hosts) assert.equal(monitor.mean(x.id), reference.mean(x.id));
          }
        },
      ),
      { numRuns: 200 },
    );
  });
});
