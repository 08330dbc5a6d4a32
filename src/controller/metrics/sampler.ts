/**
 * HostSampler: the controller's view of its host's health, reported to the Proxy at every
 * interval (paper section IV-B: CPU, memory and network of the host system).
 *
 * Every rate and usage figure in a report is measured over the interval since the previous
 * `sample()` (the first one: since construction, so build it with `HostSampler.create()`, which
 * waits a short baseline, or construct it and sample one interval later). All reading goes through
 * an injectable file reader and clock, so tests drive it with fixture files and fake time.
 */
import { readdirSync } from 'node:fs';
import * as nodeOs from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  cpuUsageFile,
  detectCgroups,
  readCpuQuota,
  readMemoryLimit,
  type CgroupLayout,
  type CpuQuota,
} from './cgroup.js';
import {
  clamp01,
  cpuIdentity,
  cpuTimesFromOs,
  cpuUsageBetween,
  parseProcStat,
  type CpuIdentity,
  type CpuTimes,
} from './cpu.js';
import { parseMemInfo } from './memory.js';
import {
  byteRates,
  chooseInterfaces,
  linkUtilisation,
  parseDefaultRouteV4,
  parseDefaultRouteV6,
  parseLinkSpeed,
  parseNetDev,
  totalLinkMbps,
  type InterfaceCounters,
} from './network.js';
import { readHostFile, type FileReader } from './read.js';

export interface HostReport {
  /** The interval, in milliseconds, that usage and rates were measured over. */
  intervalMs: number;
  cpu: {
    model: string;
    /** Clock speed; `null` when neither /proc/cpuinfo nor os.cpus() knows it. */
    mhz: number | null;
    /** Logical processors of the host. */
    cores: number;
    /**
     * Busy share 0..1 of `capacity`: of the cgroup's CPU quota when one is set (the cgroup's own
     * CPU time), else of the whole host (all processes, from /proc/stat or os.cpus()).
     */
    usage: number;
    /** Cores this controller can use: the cgroup quota (at most `cores`), else `cores`. */
    capacity: number;
    /**
     * Under a quota: the share of `capacity` the cgroup's tasks spent ready to run but waiting
     * (throttled by the quota, or kept off the CPU by other work on the machine), from each task's
     * /proc schedstat. usage + waiting near 1 or above means the host cannot keep up.
     */
    waiting?: number;
  };
  memory: {
    totalBytes: number;
    /** Available to new work: MemAvailable, and under a cgroup limit at most limit − usage. */
    freeBytes: number;
    /** The cgroup memory limit, `null` when none is set. */
    limitBytes: number | null;
  };
  network: {
    /** The interfaces measured (default-route ones unless configured). */
    interfaces: string[];
    /** Sum of their link speeds; `null` ("unknown") when the kernel does not know one of them. */
    linkMbps: number | null;
    rxBytesPerSec: number;
    txBytesPerSec: number;
    /** The busier direction's share of `linkMbps`, 0..1; `null` when the speed is unknown. */
    utilisation: number | null;
  };
  cgroup: {
    /** Which cgroup version holds the process's CPU or memory controller; `null` outside cgroups. */
    version: 1 | 2 | null;
    cpuQuotaCores: number | null;
    memoryLimitBytes: number | null;
  };
}

/** The parts of `node:os` the sampler uses (the portable fallbacks). */
export interface OsProbe {
  cpus(): nodeOs.CpuInfo[];
  totalmem(): number;
  freemem(): number;
}

export interface HostSamplerOptions {
  /** Reads a file's text or returns `undefined` (default: the real file system). */
  readFile?: FileReader;
  /** Monotonic milliseconds (default `performance.now`). */
  now?: () => number;
  /** Portable fallbacks (default `node:os`). */
  os?: OsProbe;
  /** Measure this network interface instead of the default-route ones. */
  networkInterface?: string;
  /** Lists a directory's entries or returns [] (default: the real file system). */
  listDir?: (path: string) => string[];
}

/** Tasks whose wait time is summed per sample, at most (a bound on the work per report). */
const MAX_TASKS = 4096;

interface Snapshot {
  at: number;
  cpu: { source: 'proc' | 'os'; times: CpuTimes } | undefined;
  net: Map<string, InterfaceCounters>;
  quota: CpuQuota | null;
  /** The cgroup's CPU time counter (where the quota binds), read only while a quota is set. */
  cgroupCpu: { path: string; ns: number } | undefined;
  /** Time the cgroup's tasks spent runnable but waiting, summed (ns), while a quota is set. */
  cgroupWaitNs: number | undefined;
}

export class HostSampler {
  readonly identity: CpuIdentity;
  private readonly read: FileReader;
  private readonly now: () => number;
  private readonly os: OsProbe;
  private readonly networkInterface: string | undefined;
  private readonly listDir: (path: string) => string[];
  private selfCgroupText: string | undefined;
  private layout: CgroupLayout;
  private previous: Snapshot;
  private lastHostUsage = 0;
  private lastCgroupUsage = 0;

  /** Takes the baseline the first `sample()` measures against. */
  constructor(options: HostSamplerOptions = {}) {
    this.read = options.readFile ?? readHostFile;
    this.now = options.now ?? (() => performance.now());
    this.os = options.os ?? nodeOs;
    this.networkInterface = options.networkInterface;
    this.listDir =
      options.listDir ??
      ((path) => {
        try {
          return readdirSync(path);
        } catch {
          return [];
        }
      });
    this.identity = cpuIdentity(this.read('/proc/cpuinfo'), this.safeCpus());
    this.selfCgroupText = this.read('/proc/self/cgroup');
    this.layout = detectCgroups(this.read);
    this.previous = this.snapshot();
  }

  /** A sampler whose first `sample()` already covers `baselineMs` (default 250 ms) of activity. */
  static async create(options: HostSamplerOptions & { baselineMs?: number } = {}): Promise<HostSampler> {
    const sampler = new HostSampler(options);
    await sleep(Math.max(0, options.baselineMs ?? 250));
    return sampler;
  }

  /** Where this process's cgroups are (re-detected when /proc/self/cgroup changes). */
  get cgroups(): CgroupLayout {
    return this.layout;
  }

  /** Measures the host over the interval since the previous sample. Never throws on odd files. */
  sample(): HostReport {
    const before = this.previous;
    const after = this.snapshot();
    this.previous = after;
    const intervalMs = Math.max(0, after.at - before.at);
    const { cores, model, mhz } = this.identity;

    // CPU of the host.
    if (before.cpu && after.cpu && before.cpu.source === after.cpu.source) {
      this.lastHostUsage = cpuUsageBetween(before.cpu.times, after.cpu.times) ?? this.lastHostUsage;
    }
    // CPU against the cgroup's quota.
    const quotaCores = after.quota?.cores ?? null;
    const capacity = quotaCores === null ? cores : Math.min(quotaCores, cores);
    let usage = this.lastHostUsage;
    let waiting: number | undefined;
    if (
      quotaCores !== null &&
      before.cgroupWaitNs !== undefined &&
      after.cgroupWaitNs !== undefined &&
      intervalMs > 0
    ) {
      // Tasks that exited take their counts with them: a negative delta is read as no wait.
      waiting = clamp01(Math.max(0, after.cgroupWaitNs - before.cgroupWaitNs) / (intervalMs * 1e6) / capacity);
    }
    if (quotaCores !== null) {
      const a = before.cgroupCpu;
      const b = after.cgroupCpu;
      if (a && b && a.path === b.path && b.ns >= a.ns && intervalMs > 0) {
        this.lastCgroupUsage = clamp01((b.ns - a.ns) / (intervalMs * 1e6) / capacity);
        usage = this.lastCgroupUsage;
      } else if (a && b && a.path === b.path) {
        usage = this.lastCgroupUsage;
      }
      // Otherwise the quota (or its cgroup) just appeared: this one interval reports the host.
    }

    // Memory.
    const meminfo = parseMemInfo(this.read('/proc/meminfo'));
    const totalBytes = meminfo?.totalBytes ?? this.safeOs(() => this.os.totalmem(), 0);
    let freeBytes = meminfo?.availableBytes ?? this.safeOs(() => this.os.freemem(), 0);
    const limit = readMemoryLimit(this.layout.memory, this.read);
    if (limit) freeBytes = Math.min(freeBytes, limit.freeBytes);

    // Network.
    const present = [...after.net.keys()];
    const routed = [
      ...parseDefaultRouteV4(this.read('/proc/net/route')),
      ...parseDefaultRouteV6(this.read('/proc/net/ipv6_route')),
    ];
    const interfaces = chooseInterfaces(present, [...new Set(routed)], this.networkInterface);
    const linkMbps = totalLinkMbps(interfaces.map((i) => parseLinkSpeed(this.read(`/sys/class/net/${i}/speed`))));
    const { rxBytesPerSec, txBytesPerSec } = byteRates(before.net, after.net, interfaces, intervalMs / 1000);

    return {
      intervalMs,
      cpu: { model, mhz, cores, usage, capacity, ...(waiting !== undefined ? { waiting } : {}) },
      memory: { totalBytes, freeBytes, limitBytes: limit?.limitBytes ?? null },
      network: {
        interfaces,
        linkMbps,
        rxBytesPerSec,
        txBytesPerSec,
        utilisation: linkUtilisation(rxBytesPerSec, txBytesPerSec, linkMbps),
      },
      cgroup: { version: this.layout.version, cpuQuotaCores: quotaCores, memoryLimitBytes: limit?.limitBytes ?? null },
    };
  }

  private snapshot(): Snapshot {
    const selfCgroup = this.read('/proc/self/cgroup');
    if (selfCgroup !== this.selfCgroupText) {
      this.selfCgroupText = selfCgroup;
      this.layout = detectCgroups(this.read);
    }
    const at = this.now();
    const procTimes = parseProcStat(this.read('/proc/stat'));
    const osTimes = procTimes ? undefined : cpuTimesFromOs(this.safeCpus());
    const cpu = procTimes
      ? { source: 'proc' as const, times: procTimes }
      : osTimes
        ? { source: 'os' as const, times: osTimes }
        : undefined;
    const quota = readCpuQuota(this.layout.cpu, this.read);
    let cgroupCpu: Snapshot['cgroupCpu'];
    let cgroupWaitNs: number | undefined;
    if (quota) {
      const file = cpuUsageFile(this.layout.cpuacct, quota.level);
      const ns = file ? file.parse(this.read(file.path)) : undefined;
      if (file && ns !== undefined) cgroupCpu = { path: file.path, ns };
      if (file) cgroupWaitNs = this.waitNs(file.path.slice(0, file.path.lastIndexOf('/')));
    }
    return { at, cpu, net: parseNetDev(this.read('/proc/net/dev')), quota, cgroupCpu, cgroupWaitNs };
  }

  /** The run delay (ns) of every task in the cgroup at `dir`, from /proc/PID/task/TID/schedstat. */
  private waitNs(dir: string): number | undefined {
    const procs = this.read(`${dir}/cgroup.procs`);
    if (procs === undefined) return undefined;
    let total = 0;
    let tasks = 0;
    for (const pid of procs.split('\n')) {
      if (!/^\d+$/.test(pid)) continue;
      for (const tid of this.listDir(`/proc/${pid}/task`)) {
        if (++tasks > MAX_TASKS) return total;
        const delay = Number(this.read(`/proc/${pid}/task/${tid}/schedstat`)?.split(' ')[1]);
        if (Number.isFinite(delay)) total += delay;
      }
    }
    return total;
  }

  private safeCpus(): nodeOs.CpuInfo[] {
    return this.safeOs(() => this.os.cpus(), []);
  }

  private safeOs<T>(f: () => T, fallback: T): T {
    try {
      return f();
    } catch {
      return fallback;
    }
  }
}
