/**
 * The cost of one decision round at scale: 10,000 hosts and 10,000 guests (one per host), the
 * monitor observing every host's report, then `decide` (which calls rankCandidates for the guests
 * it considers) with P(stay) from an availability model fitted on a history of the same hosts.
 * A tenth of the hosts are saturated (degraded once the monitor's window is covered), so decide
 * has work to do. Rounds are timed after the monitor has seen a full window.
 */
import type { Session } from '../src/policy/availability.js';
import type { Policy } from '../src/policy/config.js';
import type { Round } from '../src/policy/decide.js';
import type { GuestSnapshot, HostSnapshot } from '../src/policy/model.js';
import type { PolicyCode } from './policy-sim.js';
import { rng } from './policy-trace.js';

export interface RoundCost {
  hosts: number;
  guests: number;
  degraded: number;
  maxConcurrentMoves: number;
  fitMs: number;
  /** Per round: monitor.observe + decide, wall time and the process's CPU time. */
  roundMs: number[];
  roundCpuMs: number[];
  observeMs: number[];
  decideMs: number[];
  moves: number;
  declined: number;
}

export function roundCost(code: PolicyCode, n: number, policy: Policy, rounds: number, seed = 5): RoundCost {
  const { fitAvailability, UtilityMonitor, decide } = code;
  const r = rng(seed);
  const t0 = Date.UTC(2026, 10, 10, 12);
  const hosts: HostSnapshot[] = [];
  const sessions: Session[] = [];
  for (let i = 0; i < n; i++) {
    const id = `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`;
    hosts.push({
      id,
      name: `h${i}`,
      up: true,
      canReceive: true,
      score: 0.5 + 2 * r(),
      rttMs: 1 + 30 * r(),
      metrics: {
        cpu: { usage: i % 10 === 0 ? 0.99 : 0.5 * r(), capacity: [1, 2, 4][i % 3] ?? 2 },
        memory: { totalBytes: 8 * 2 ** 30, freeBytes: (2 + 6 * r()) * 2 ** 30, limitBytes: null },
        network: { utilisation: i % 2 ? null : 0.3 * r() },
      },
      joinedAt: t0 - 3_600_000 * 5 * r(),
    });
    // A few past sessions per host.
    let t = t0 - 7 * 86_400_000;
    for (let k = 0; k < 3; k++) {
      const length = 3_600_000 * 10 * r();
      sessions.push({ hostId: id, joinedAt: t, endedAt: t + length, endReason: 'left' });
      t += length + 3_600_000 * r();
    }
  }
  const guests: GuestSnapshot[] = hosts.map((h, i) => ({
    id: `g${i}`,
    name: `g${i}`,
    hostId: h.id,
    memoryBytes: 2 ** 20 * (64 + 512 * r()),
    cpuRate: 1000 * r(),
    deadline: i % 4 === 0 ? t0 + 3_600_000 * 3 : null,
    expectMs: i % 4 === 0 ? 3_600_000 : null,
    cpuMs: 600_000 * r(),
  }));
  const f0 = performance.now();
  const model = fitAvailability(sessions, t0, policy.horizonMinutes * 60_000);
  const fitMs = performance.now() - f0;
  const monitor = new UtilityMonitor();
  const lastMoved = new Map<string, number>();
  const out: RoundCost = {
    hosts: n,
    guests: guests.length,
    degraded: 0,
    maxConcurrentMoves: policy.maxConcurrentMoves,
    fitMs,
    roundMs: [],
    roundCpuMs: [],
    observeMs: [],
    decideMs: [],
    moves: 0,
    declined: 0,
  };
  const step = 1000;
  const warm = policy.windowSeconds + 2;
  for (let k = 0; k < warm + rounds; k++) {
    const now = t0 + k * step;
    const cpu = process.cpuUsage();
    const a = performance.now();
    const lowSince = monitor.observe(hosts, policy, now);
    const b = performance.now();
    const round: Round = {
      now,
      hosts,
      guests,
      lowSince,
      meanUtility: new Map(hosts.map((h) => [h.id, monitor.mean(h.id) ?? 1])),
      lastMoved,
      moving: new Set(),
      pStay: (id, age, horizon) => model.pStay(id, age, horizon, now),
    };
    const decisions = decide(round, policy);
    const c = performance.now();
    const used = process.cpuUsage(cpu);
    if (k >= warm) {
      out.roundCpuMs.push((used.user + used.system) / 1000);
      out.observeMs.push(b - a);
      out.decideMs.push(c - b);
      out.roundMs.push(c - a);
      out.degraded = lowSince.size;
      out.moves = decisions.filter((d) => d.kind === 'move').length;
      out.declined = decisions.length - out.moves;
    }
  }
  return out;
}
