/**
 * Control groups: when the controller runs confined (a container, a systemd slice, a test that
 * gives each host its own cgroup), the host's CPU and memory are not what it can use. Like
 * container-aware runtimes (the JDK, Go 1.25, .NET), Roam finds its own cgroup, reads the CPU
 * quota and memory limit that apply to it, and reports capacity and usage against them.
 *
 * Where the files are:
 *   - `/proc/self/cgroup` names the process's cgroup in each hierarchy: "ID:CONTROLLERS:PATH",
 *     with "0::PATH" for the unified (v2) hierarchy.
 *   - `/proc/self/mountinfo` says where each hierarchy is mounted and which of its cgroups is the
 *     root of that mount (inside a container the mount root is often the container's own cgroup).
 *   - The cgroup's directory is the mount point plus the process's path below the mount root.
 *
 * Limits are hierarchical: a quota or limit on any ancestor binds the child too, so every level
 * from the process's cgroup up to the mount point is read and the tightest one wins.
 *
 * v1: cpu.cfs_quota_us / cpu.cfs_period_us (quota -1: none), cpuacct.usage (ns), memory.limit_in_bytes
 * (a huge value near 2^63: none), memory.usage_in_bytes. v2: cpu.max ("max 100000": none),
 * cpu.stat usage_usec, memory.max ("max": none), memory.current.
 *
 * Everything here is pure: text in, values out; reading goes through a `FileReader`.
 */
import { posix } from 'node:path';
import { lines, parseCount, parseSignedCount, type FileReader } from './read.js';

/** One line of /proc/self/cgroup. */
export interface SelfCgroupEntry {
  /** Hierarchy id; 0 is the unified (v2) hierarchy. */
  hierarchy: number;
  /** Controllers bound to the hierarchy (v1), e.g. ["cpu", "cpuacct"]; empty for v2. */
  controllers: string[];
  /** The process's cgroup, relative to the hierarchy's root, e.g. "/docker/abc". */
  path: string;
}

/** A cgroup file system in /proc/self/mountinfo. */
export interface CgroupMount {
  version: 1 | 2;
  /** The cgroup that is the root of this mount, e.g. "/" or "/docker/abc". */
  root: string;
  /** Where it is mounted, e.g. "/sys/fs/cgroup/cpu,cpuacct". */
  mountPoint: string;
  /** v1: the controllers of this hierarchy (from the super options); v2: empty. */
  controllers: string[];
}

/** Parses /proc/self/cgroup; lines that do not fit are skipped. */
export function parseSelfCgroup(text: string | undefined): SelfCgroupEntry[] {
  if (typeof text !== 'string') return [];
  const out: SelfCgroupEntry[] = [];
  for (const line of lines(text)) {
    const first = line.indexOf(':');
    const second = first < 0 ? -1 : line.indexOf(':', first + 1);
    if (second < 0) continue;
    const hierarchy = parseCount(line.slice(0, first));
    // The path is everything after the second colon: a cgroup name may itself contain colons.
    const path = line.slice(second + 1);
    if (hierarchy === undefined || !path.startsWith('/')) continue;
    const list = line.slice(first + 1, second);
    const controllers = list === '' ? [] : list.split(',').filter((c) => c !== '');
    out.push({ hierarchy, controllers, path });
  }
  return out;
}

/** Undoes mountinfo's octal escapes (\040 space, \011 tab, \012 newline, \134 backslash). */
export function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/**
 * Parses the cgroup mounts out of /proc/self/mountinfo:
 * "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS".
 */
export function parseMountInfo(text: string | undefined): CgroupMount[] {
  if (typeof text !== 'string') return [];
  const out: CgroupMount[] = [];
  for (const line of lines(text)) {
    const fields = line.trim().split(' ');
    const dash = fields.indexOf('-', 6);
    if (dash < 0 || fields.length < dash + 3) continue;
    const fsType = fields[dash + 1];
    if (fsType !== 'cgroup' && fsType !== 'cgroup2') continue;
    const root = unescapeMountField(fields[3] ?? '');
    const mountPoint = unescapeMountField(fields[4] ?? '');
    if (!root.startsWith('/') || !mountPoint.startsWith('/')) continue;
    const superOptions = (fields[dash + 3] ?? '').split(',');
    const controllers =
      fsType === 'cgroup2'
        ? []
        : superOptions.filter((o) => /^[a-z_][a-z0-9_]*$/.test(o) && !['rw', 'ro'].includes(o) && !o.includes('='));
    out.push({ version: fsType === 'cgroup2' ? 2 : 1, root, mountPoint, controllers });
  }
  return out;
}

/** Where one controller's files are for this process: its cgroup directory and its ancestors. */
export interface CgroupLocation {
  version: 1 | 2;
  mountPoint: string;
  /** Path segments from the mount point down to the process's cgroup. */
  segments: string[];
}

/** The process's cgroup directory, then each parent up to and including the mount point. */
export function cgroupLevels(loc: CgroupLocation): string[] {
  const out: string[] = [];
  for (let n = loc.segments.length; n >= 0; n--) {
    out.push(n === 0 ? loc.mountPoint : posix.join(loc.mountPoint, ...loc.segments.slice(0, n)));
  }
  return out;
}

/** The process's cgroups for CPU quota, CPU accounting and memory; `undefined` where there is none. */
export interface CgroupLayout {
  version: 1 | 2 | null;
  cpu: CgroupLocation | undefined;
  cpuacct: CgroupLocation | undefined;
  memory: CgroupLocation | undefined;
}

/** Segments below `mount` for cgroup `path`, or the mount point itself when `path` is not under it. */
function segmentsBelow(mount: CgroupMount, path: string): string[] {
  let rel: string;
  if (mount.root === '/') rel = path;
  else if (path === mount.root || path.startsWith(mount.root + '/')) rel = path.slice(mount.root.length);
  // A cgroup namespace shows the process at "/" while the mount root names the real cgroup, or the
  // process sits outside what is mounted: the mount point is then the best (and usual) answer.
  else rel = '/';
  const segments = rel.split('/').filter((s) => s !== '' && s !== '.');
  // Never climb out of the mount, whatever the text says.
  return segments.includes('..') ? [] : segments;
}

function fits(mount: CgroupMount, path: string): boolean {
  return mount.root === '/' || path === mount.root || path.startsWith(mount.root + '/');
}

function locate(mounts: readonly CgroupMount[], path: string, version: 1 | 2): CgroupLocation | undefined {
  // Among several mounts of the same hierarchy, prefer one whose root holds the process's cgroup,
  // and among those the deepest root.
  const ranked = [...mounts].sort(
    (a, b) => Number(fits(b, path)) - Number(fits(a, path)) || b.root.length - a.root.length,
  );
  const mount = ranked[0];
  if (!mount) return undefined;
  return { version, mountPoint: mount.mountPoint, segments: segmentsBelow(mount, path) };
}

/**
 * Finds the process's cgroup for each controller. A v1 hierarchy that carries the controller wins;
 * otherwise the unified hierarchy is used (pure v2, or hybrid systems where v2 has the controller).
 */
export function resolveCgroups(self: readonly SelfCgroupEntry[], mounts: readonly CgroupMount[]): CgroupLayout {
  const v2Entry = self.find((e) => e.hierarchy === 0 && e.controllers.length === 0);
  const v2Mounts = mounts.filter((m) => m.version === 2);
  const find = (controller: string): CgroupLocation | undefined => {
    const entry = self.find((e) => e.hierarchy !== 0 && e.controllers.includes(controller));
    if (entry) {
      const v1 = mounts.filter((m) => m.version === 1 && entry.controllers.every((c) => m.controllers.includes(c)));
      const loc = locate(v1, entry.path, 1);
      if (loc) return loc;
    }
    if (v2Entry) return locate(v2Mounts, v2Entry.path, 2);
    return undefined;
  };
  const cpu = find('cpu');
  const cpuacct = find('cpuacct');
  const memory = find('memory');
  const versions = [cpu, memory].filter((l) => l !== undefined).map((l) => l.version);
  const version = versions.includes(1) ? 1 : versions.includes(2) ? 2 : null;
  return { version, cpu, cpuacct, memory };
}

/** Reads and resolves the process's cgroups through `read`. */
export function detectCgroups(read: FileReader): CgroupLayout {
  return resolveCgroups(parseSelfCgroup(read('/proc/self/cgroup')), parseMountInfo(read('/proc/self/mountinfo')));
}

// ---- limit and usage files ----------------------------------------------------------------------

/** At or above this many bytes a memory limit means "no limit" (v1 writes ~2^63 rounded to a page). */
export const UNLIMITED_BYTES = 2 ** 60;

/** v1 CPU quota in cores from cpu.cfs_quota_us and cpu.cfs_period_us; `null` for none (-1) or nonsense. */
export function parseV1CpuQuota(quotaText: string | undefined, periodText: string | undefined): number | null {
  const quota = parseSignedCount(quotaText);
  const period = parseCount(periodText);
  if (quota === undefined || period === undefined || quota <= 0 || period <= 0) return null;
  return quota / period;
}

/** v2 CPU quota in cores from cpu.max ("QUOTA PERIOD", "max PERIOD", or just "max"); `null` for none. */
export function parseV2CpuMax(text: string | undefined): number | null {
  if (typeof text !== 'string') return null;
  const [quotaField, periodField, ...rest] = text.trim().split(/\s+/);
  if (quotaField === undefined || quotaField === 'max' || rest.length > 0) return null;
  const quota = parseCount(quotaField);
  const period = periodField === undefined ? 100000 : parseCount(periodField);
  if (quota === undefined || period === undefined || quota <= 0 || period <= 0) return null;
  return quota / period;
}

/** v1 memory.limit_in_bytes: bytes, or `null` for the "unlimited" huge value or nonsense. */
export function parseV1MemoryLimit(text: string | undefined): number | null {
  const n = parseCount(text);
  if (n === undefined || n <= 0 || n >= UNLIMITED_BYTES) return null;
  return n;
}

/** v2 memory.max: bytes, or `null` for "max" or nonsense. */
export function parseV2MemoryMax(text: string | undefined): number | null {
  if (typeof text !== 'string' || text.trim() === 'max') return null;
  return parseV1MemoryLimit(text);
}

/** v1 cpuacct.usage: CPU time of the cgroup in nanoseconds. */
export function parseCpuacctUsage(text: string | undefined): number | undefined {
  return parseCount(text);
}

/** v2 cpu.stat: the `usage_usec` line, converted to nanoseconds. */
export function parseV2CpuStatUsageNs(text: string | undefined): number | undefined {
  if (typeof text !== 'string') return undefined;
  for (const line of lines(text)) {
    const [key, value, ...rest] = line.trim().split(/\s+/);
    if (key === 'usage_usec' && rest.length === 0) {
      const us = parseCount(value);
      return us === undefined ? undefined : us * 1000;
    }
  }
  return undefined;
}

/** memory.usage_in_bytes (v1) or memory.current (v2). */
export function parseMemoryUsage(text: string | undefined): number | undefined {
  return parseCount(text);
}

// ---- reading the limits that apply -------------------------------------------------------------

export interface CpuQuota {
  /** The tightest quota on the process's cgroup or any ancestor, in cores. */
  cores: number;
  /** How many levels above the process's cgroup it is set (0: on the cgroup itself). */
  level: number;
}

/** The CPU quota that binds the process, or `null` when no level sets one. */
export function readCpuQuota(loc: CgroupLocation | undefined, read: FileReader): CpuQuota | null {
  if (!loc) return null;
  let best: CpuQuota | null = null;
  cgroupLevels(loc).forEach((dir, level) => {
    const cores =
      loc.version === 1
        ? parseV1CpuQuota(read(`${dir}/cpu.cfs_quota_us`), read(`${dir}/cpu.cfs_period_us`))
        : parseV2CpuMax(read(`${dir}/cpu.max`));
    if (cores !== null && (best === null || cores < best.cores)) best = { cores, level };
  });
  return best;
}

/**
 * The file that counts CPU time for the cgroup `level` levels above the process's accounting
 * cgroup (the level where the quota binds), with how to parse it. In v1, `cpu` and `cpuacct` may
 * be separate hierarchies; their paths are assumed to mirror each other, as every tool that
 * creates cgroups (systemd, Docker, runc) makes them.
 */
export function cpuUsageFile(
  loc: CgroupLocation | undefined,
  level: number,
): { path: string; parse: (text: string | undefined) => number | undefined } | undefined {
  if (!loc) return undefined;
  const levels = cgroupLevels(loc);
  const dir = levels[Math.min(Math.max(0, level), levels.length - 1)];
  if (dir === undefined) return undefined;
  return loc.version === 1
    ? { path: `${dir}/cpuacct.usage`, parse: parseCpuacctUsage }
    : { path: `${dir}/cpu.stat`, parse: parseV2CpuStatUsageNs };
}

export interface MemoryLimit {
  /** The tightest limit on the process's cgroup or any ancestor, in bytes. */
  limitBytes: number;
  /** The least headroom (limit minus usage) over every level that sets a limit; never negative. */
  freeBytes: number;
  /** Usage of the cgroup whose limit is tightest. */
  usageBytes: number;
}

/** The memory limit that binds the process, or `null` when no level sets one. */
export function readMemoryLimit(loc: CgroupLocation | undefined, read: FileReader): MemoryLimit | null {
  if (!loc) return null;
  let out: MemoryLimit | null = null;
  for (const dir of cgroupLevels(loc)) {
    const limit =
      loc.version === 1
        ? parseV1MemoryLimit(read(`${dir}/memory.limit_in_bytes`))
        : parseV2MemoryMax(read(`${dir}/memory.max`));
    if (limit === null) continue;
    const usage = parseMemoryUsage(read(loc.version === 1 ? `${dir}/memory.usage_in_bytes` : `${dir}/memory.current`));
    // Without a usage figure nothing is known to be used: the headroom is the limit (an upper bound).
    const used = usage ?? 0;
    const free = Math.max(0, limit - used);
    if (out === null) out = { limitBytes: limit, freeBytes: free, usageBytes: used };
    else {
      if (limit < out.limitBytes) {
        out.limitBytes = limit;
        out.usageBytes = used;
      }
      out.freeBytes = Math.min(out.freeBytes, free);
    }
  }
  return out;
}
