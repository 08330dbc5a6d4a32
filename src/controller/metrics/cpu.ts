/**
 * CPU: what the processor is (model, speed, cores) and how busy it is. Busy is measured the way
 * `top` does: the share of non-idle time in the kernel's cumulative counters between two samples.
 * The counters come from `/proc/stat` on Linux and from `os.cpus()` elsewhere (the portable
 * fallback; on Linux libuv reads the same file).
 */
import type { CpuInfo } from 'node:os';
import { lines, parseCount } from './read.js';

export interface CpuIdentity {
  /** Marketing name, e.g. "Intel(R) Xeon(R) Processor"; "unknown" when nothing says. */
  model: string;
  /** Clock speed in MHz (the highest any core reports); `null` when unknown. */
  mhz: number | null;
  /** Logical processors. */
  cores: number;
}

/** Cumulative CPU time since boot, in any unit (jiffies for /proc/stat, ms for os.cpus()). */
export interface CpuTimes {
  idle: number;
  total: number;
}

/**
 * Parses `/proc/cpuinfo`. Understands x86 ("model name", "cpu MHz"), ARM ("Processor",
 * "Hardware", "CPU part"), POWER ("cpu", "clock") and s390 layouts, as far as they say anything.
 * Returns `undefined` when the text lists no processor.
 */
export function parseCpuInfo(text: string | undefined): Partial<CpuIdentity> | undefined {
  if (typeof text !== 'string') return undefined;
  let cores = 0;
  let model: string | undefined;
  let fallbackModel: string | undefined;
  let mhz: number | undefined;
  for (const line of lines(text)) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const key = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    if (key === 'processor' && /^\d+$/.test(value)) cores++;
    else if (key === 'model name' && value) model ??= value;
    else if ((key === 'processor' || key === 'hardware' || key === 'cpu' || key === 'vendor_id') && value) {
      fallbackModel ??= value;
    } else if (key === 'cpu mhz' || key === 'clock' || key === 'cpu mhz static') {
      const m = /^(\d{1,7}(?:\.\d{1,9})?)\s*(?:MHz)?$/i.exec(value);
      const v = m ? Number(m[1]) : NaN;
      if (Number.isFinite(v) && v > 0 && v < 1e6) mhz = Math.max(mhz ?? 0, v);
    }
  }
  if (cores === 0 && model === undefined && fallbackModel === undefined) return undefined;
  const out: Partial<CpuIdentity> = {};
  const name = model ?? fallbackModel;
  if (name !== undefined) out.model = name.replace(/\s+/g, ' ').slice(0, 200);
  if (mhz !== undefined) out.mhz = Math.round(mhz);
  if (cores > 0) out.cores = cores;
  return out;
}

/** What `os.cpus()` says about the processor (model, speed, count). */
export function cpuIdentityFromOs(cpus: readonly CpuInfo[]): Partial<CpuIdentity> {
  const out: Partial<CpuIdentity> = {};
  if (cpus.length > 0) out.cores = cpus.length;
  const model = cpus.find((c) => typeof c.model === 'string' && c.model.trim() !== '')?.model.trim();
  if (model !== undefined) out.model = model.replace(/\s+/g, ' ').slice(0, 200);
  const speeds = cpus.map((c) => c.speed).filter((s) => Number.isFinite(s) && s > 0);
  if (speeds.length > 0) out.mhz = Math.round(Math.max(...speeds));
  return out;
}

/** Combines /proc/cpuinfo (preferred) with os.cpus(); never fails. */
export function cpuIdentity(cpuinfo: string | undefined, cpus: readonly CpuInfo[]): CpuIdentity {
  const fromProc = parseCpuInfo(cpuinfo) ?? {};
  const fromOs = cpuIdentityFromOs(cpus);
  return {
    model: fromProc.model ?? fromOs.model ?? 'unknown',
    mhz: fromProc.mhz ?? fromOs.mhz ?? null,
    cores: Math.max(1, fromProc.cores ?? fromOs.cores ?? 1),
  };
}

/**
 * Parses the aggregate "cpu" line of `/proc/stat`: user nice system idle iowait irq softirq steal
 * guest guest_nice (in jiffies; kernels before 2.6.11 give fewer fields). Guest time is already
 * counted in user and nice, so it is left out of the total. Idle includes iowait: a CPU waiting
 * for I/O could run something else.
 */
export function parseProcStat(text: string | undefined): CpuTimes | undefined {
  if (typeof text !== 'string') return undefined;
  const line = lines(text).find((l) => /^cpu\s/.test(l));
  if (!line) return undefined;
  const fields = line.trim().split(/\s+/).slice(1, 9);
  if (fields.length < 4) return undefined;
  const nums: number[] = [];
  for (const f of fields) {
    const n = parseCount(f);
    if (n === undefined) return undefined;
    nums.push(n);
  }
  const idle = (nums[3] ?? 0) + (nums[4] ?? 0);
  const total = nums.reduce((a, b) => a + b, 0);
  return { idle, total };
}

/** Sums `os.cpus()` times over all processors (milliseconds). */
export function cpuTimesFromOs(cpus: readonly CpuInfo[]): CpuTimes | undefined {
  if (cpus.length === 0) return undefined;
  let idle = 0;
  let total = 0;
  for (const { times } of cpus) {
    const parts = [times.user, times.nice, times.sys, times.idle, times.irq];
    if (!parts.every((p) => Number.isFinite(p) && p >= 0)) return undefined;
    idle += times.idle;
    total += parts.reduce((a, b) => a + b, 0);
  }
  return { idle, total };
}

/**
 * Busy share of the CPU between two readings, 0..1; `undefined` when the counters did not move
 * (interval shorter than the kernel's tick) or went backwards (not the same counters).
 */
export function cpuUsageBetween(before: CpuTimes, after: CpuTimes): number | undefined {
  const total = after.total - before.total;
  const idle = after.idle - before.idle;
  if (!(total > 0) || idle < 0) return undefined;
  return clamp01(1 - idle / total);
}

export function clamp01(x: number): number {
  if (!Number.isFinite(x)) return 0;
  return x < 0 ? 0 : x > 1 ? 1 : x;
}
