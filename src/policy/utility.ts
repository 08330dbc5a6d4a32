/**
 * The paper's monitoring model: each host's utilisation of CPU, memory and network, and its
 * utility, the weighted mean of their headroom (1 = idle, 0 = saturated). A resource the host
 * cannot measure (network utilisation without a known link speed) is left out of the mean rather
 * than guessed.
 */
import type { Policy } from './config.js';
import type { HostMetrics, HostSnapshot } from './model.js';

export interface Utilisation {
  cpu: number;
  memory: number;
  network: number | null;
}

const clamp = (x: number): number => Math.min(1, Math.max(0, Number.isFinite(x) ? x : 0));

export function utilisation(m: HostMetrics): Utilisation {
  const total = m.memory.limitBytes ?? m.memory.totalBytes;
  return {
    // Time ready but waiting counts as demand: a host whose work waits for CPU is saturated,
    // whether its quota or other work on the machine holds it back.
    cpu: clamp(m.cpu.usage + (m.cpu.waiting ?? 0)),
    memory: total > 0 ? clamp(1 - m.memory.freeBytes / total) : 0,
    network: m.network.utilisation === null ? null : clamp(m.network.utilisation),
  };
}

export function utility(m: HostMetrics, weights: Policy['weights']): number {
  const u = utilisation(m);
  let sum = weights.cpu * (1 - u.cpu) + weights.memory * (1 - u.memory);
  let total = weights.cpu + weights.memory;
  if (u.network !== null) {
    sum += weights.network * (1 - u.network);
    total += weights.network;
  }
  return total > 0 ? sum / total : 1;
}

/**
 * How fast a guest's CPU work would progress on a host (work per ms at score 1, per ms): its
 * benchmark score times the share of a core it has free. What a deadline guest's time to finish is
 * worked out from: distance from the proxy does not slow a computation.
 */
export function computeRate(host: HostSnapshot, extraLoadCores = 0): number {
  const m = host.metrics;
  if (!m) return 0;
  const freeCores = Math.max(0.05, m.cpu.capacity * (1 - clamp(m.cpu.usage + (m.cpu.waiting ?? 0))) - extraLoadCores);
  return (host.score ?? 1) * Math.min(1, freeCores);
}

/**
 * The paper's benchmark-like model of how fast a guest would run on a host: its compute rate,
 * discounted by its distance (RTT) from the proxy.
 */
export function speed(host: HostSnapshot, policy: Pick<Policy, 'rttHalfMs'>, extraLoadCores = 0): number {
  return computeRate(host, extraLoadCores) / (1 + (host.rttMs ?? 0) / policy.rttHalfMs);
}
