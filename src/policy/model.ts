/**
 * What the policy sees of the roaming table: plain data, so decisions are pure functions of it.
 */
export interface HostMetrics {
  cpu: { usage: number; capacity: number; waiting?: number };
  memory: { totalBytes: number; freeBytes: number; limitBytes: number | null };
  network: { utilisation: number | null };
}

export interface HostSnapshot {
  id: string;
  name: string;
  /** Only `up` hosts with a peer port can take guests. */
  up: boolean;
  canReceive: boolean;
  /** Benchmark score (null: unknown, taken as 1). */
  score: number | null;
  rttMs: number | null;
  metrics: HostMetrics | null;
  /** When its current session began (ms since the epoch). */
  joinedAt: number | null;
}

export interface GuestSnapshot {
  id: string;
  name: string;
  hostId: string;
  memoryBytes: number;
  /** CPU it used per second of late (ms/s), as the monitor measured it. */
  cpuRate: number;
  /** Deadline (ms since the epoch) and expected run time on a host of score 1 (ms), if declared. */
  deadline: number | null;
  expectMs: number | null;
  /** CPU time it has had so far (ms): the work done, for deadline guests. */
  cpuMs: number;
}
