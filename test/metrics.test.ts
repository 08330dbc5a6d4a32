/**
 * Host metrics of the Interface Controller: every parser on fixture text (including hostile
 * text), the sampler over a fake file system and clock, a live sample of this machine, the
 * benchmark score, and (as root) a real cgroup v1 CPU quota seen from inside.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, realpathSync, rmdirSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import fc from 'fast-check';
import {
  byteRates,
  CHECKSUM,
  REFERENCE_MS,
  chooseInterfaces,
  cpuIdentity,
  cpuTimesFromOs,
  cpuUsageBetween,
  cpuUsageFile,
  HostSampler,
  linkUtilisation,
  measureBenchmark,
  parseCpuacctUsage,
  parseCpuInfo,
  parseDefaultRouteV4,
  parseDefaultRouteV6,
  parseLinkSpeed,
  parseMemInfo,
  parseMemoryUsage,
  parseMountInfo,
  parseNetDev,
  parseProcStat,
  parseSelfCgroup,
  parseV1CpuQuota,
  parseV1MemoryLimit,
  parseV2CpuMax,
  parseV2CpuStatUsageNs,
  parseV2MemoryMax,
  readCpuQuota,
  readMemoryLimit,
  resolveCgroups,
  totalLinkMbps,
  type HostReport,
  type OsProbe,
} from '../src/controller/metrics/index.js';

const METRICS_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'src', 'controller', 'metrics');

// ---- fixtures (taken from real machines) -------------------------------------------------------

const CPUINFO_X86 = `processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 207
model name\t: Intel(R) Xeon(R) Processor
stepping\t: 2
cpu MHz\t\t: 2100.000
cache size\t: 307200 KB
flags\t\t: fpu vme de pse

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor
cpu MHz\t\t: 2095.512

`;

const CPUINFO_ARM32 = `Processor\t: ARMv7 Processor rev 4 (v7l)
processor\t: 0
BogoMIPS\t: 38.40

processor\t: 1
BogoMIPS\t: 38.40

Hardware\t: BCM2835
Revision\t: a02082
`;

const CPUINFO_ARM64 = `processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics
CPU implementer\t: 0x41
CPU part\t: 0xd0c

processor\t: 1
BogoMIPS\t: 50.00
`;

const STAT_1 = `cpu  167070 0 16235 196959 74 0 532 122 0 0
cpu0 83592 0 8272 98285 27 0 223 63 0 0
cpu1 83478 0 7962 98674 47 0 308 58 0 0
intr 12345 0 0
ctxt 987654
btime 1700000000
`;
// 1 s later on 2 cores at 100 Hz: 200 jiffies, of which 50 idle + 10 iowait.
const STAT_2 = `cpu  167170 0 16265 197009 84 0 542 122 0 0
cpu0 83642 0 8287 98310 32 0 228 63 0 0
cpu1 83528 0 7977 98699 52 0 313 58 0 0
`;

const MEMINFO = `MemTotal:       24684092 kB
MemFree:        23629964 kB
MemAvailable:   24288124 kB
Buffers:           54812 kB
Cached:           787920 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
`;

const NET_DEV = `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 431305563   20595    0    0    0     0          0         0 431305563   20595    0    0    0     0       0          0
  ifb0:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
  eth0: 225798908   10820    0    0    0     0          0         0  1062169    7898    0    0    0     0       0          0
`;

const ROUTE = `Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
`;

const IPV6_ROUTE = `fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000002 00000000 00000003     wlan0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
`;

// This machine: cgroup v1 with separate cpu and cpuacct hierarchies, the process in a memory cgroup.
const SELF_CGROUP_V1 = `9:name=systemd:/
8:pids:/
4:memory:/process_api/8d68b7778683e6b61b70c1c36c1a1468
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
`;
const MOUNTINFO_V1 = `24 1 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`;

// A Docker container on a v1 host without a cgroup namespace: mount roots are the container's cgroup.
const SELF_CGROUP_DOCKER = `12:cpu,cpuacct:/docker/0123abcd
6:memory:/docker/0123abcd
1:name=systemd:/docker/0123abcd
`;
const MOUNTINFO_DOCKER = `1045 1037 0:92 /docker/0123abcd /sys/fs/cgroup/cpu,cpuacct ro,nosuid,nodev,noexec,relatime master:11 - cgroup cgroup rw,cpu,cpuacct
1048 1037 0:95 /docker/0123abcd /sys/fs/cgroup/memory ro,nosuid,nodev,noexec,relatime master:14 - cgroup cgroup rw,memory
`;

// A systemd host on pure cgroup v2.
const SELF_CGROUP_V2 = `0::/user.slice/user-1000.slice/session-3.scope
`;
const MOUNTINFO_V2 = `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
35 26 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`;

function fakeReader(files: Record<string, string>): (path: string) => string | undefined {
  return (path) => (Object.prototype.hasOwnProperty.call(files, path) ? files[path] : undefined);
}

const NO_OS: OsProbe = {
  cpus: () => [],
  totalmem: () => 0,
  freemem: () => 0,
};

// ---- CPU ---------------------------------------------------------------------------------------

test('cpuinfo: model, the highest MHz and the processor count, on x86 and ARM', () => {
  assert.deepEqual(parseCpuInfo(CPUINFO_X86), { model: 'Intel(R) Xeon(R) Processor', mhz: 2100, cores: 2 });
  assert.deepEqual(parseCpuInfo(CPUINFO_ARM32), { model: 'ARMv7 Processor rev 4 (v7l)', cores: 2 });
  assert.deepEqual(parseCpuInfo(CPUINFO_ARM64), { cores: 2 });
  assert.equal(parseCpuInfo(''), undefined);
  assert.equal(parseCpuInfo(undefined), undefined);
  assert.equal(parseCpuInfo('cpu MHz : 1e309\nmodel name :\n'), undefined);
  assert.deepEqual(parseCpuInfo('processor : 0\ncpu MHz : 2.5e3\nclock : 2500.000000MHz\n'), { cores: 1, mhz: 2500 });
});

test('cpu identity: /proc/cpuinfo first, os.cpus() for what it lacks, never empty', () => {
  const cpus = [0, 1, 2, 3].map(() => ({
    model: 'Neoverse-N1',
    speed: 3000,
    times: { user: 0, nice: 0, sys: 0, idle: 0, irq: 0 },
  }));
  assert.deepEqual(cpuIdentity(CPUINFO_ARM64, cpus), { model: 'Neoverse-N1', mhz: 3000, cores: 2 });
  assert.deepEqual(cpuIdentity(undefined, cpus), { model: 'Neoverse-N1', mhz: 3000, cores: 4 });
  assert.deepEqual(cpuIdentity(undefined, []), { model: 'unknown', mhz: null, cores: 1 });
  const noSpeed = cpus.map((c) => ({ ...c, speed: 0 }));
  assert.equal(cpuIdentity(CPUINFO_ARM64, noSpeed).mhz, null, 'an unknown speed stays unknown');
});

test('/proc/stat: usage from deltas, iowait counts as idle, guest time not counted twice', () => {
  const a = parseProcStat(STAT_1);
  const b = parseProcStat(STAT_2);
  assert.deepEqual(a, { idle: 196959 + 74, total: 167070 + 16235 + 196959 + 74 + 532 + 122 });
  assert.ok(a && b);
  assert.equal(cpuUsageBetween(a, b), 1 - 60 / 200);
  assert.equal(cpuUsageBetween(a, a), undefined, 'no tick elapsed: unknown, not 0 or NaN');
  assert.equal(cpuUsageBetween(b, a), undefined, 'counters going backwards are not a measurement');
  // Kernels before 2.6 print four fields.
  assert.deepEqual(parseProcStat('cpu 10 20 30 40\n'), { idle: 40, total: 100 });
  for (const bad of ['', 'cpu0 1 2 3 4', 'cpu 1 2 x 4', 'cpu 1 2', 'cpu -1 2 3 4', undefined]) {
    assert.equal(parseProcStat(bad), undefined, String(bad));
  }
});

test('os.cpus() fallback: summed times give the same usage', () => {
  const at = (user: number, idle: number) => [
    { model: 'x', speed: 1, times: { user, nice: 0, sys: 0, idle, irq: 0 } },
    { model: 'x', speed: 1, times: { user, nice: 0, sys: 0, idle, irq: 0 } },
  ];
  const a = cpuTimesFromOs(at(1000, 9000));
  const b = cpuTimesFromOs(at(1250, 9750));
  assert.ok(a && b);
  assert.equal(cpuUsageBetween(a, b), 0.25);
  assert.equal(cpuTimesFromOs([]), undefined);
});

// ---- memory ------------------------------------------------------------------------------------

test('/proc/meminfo: total and MemAvailable in bytes, older kernels approximated', () => {
  assert.deepEqual(parseMemInfo(MEMINFO), { totalBytes: 24684092 * 1024, availableBytes: 24288124 * 1024 });
  const old = 'MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 250 kB\n';
  assert.deepEqual(parseMemInfo(old), { totalBytes: 1000 * 1024, availableBytes: 400 * 1024 });
  assert.equal(parseMemInfo('MemFree: 1 kB'), undefined);
  assert.equal(parseMemInfo('MemTotal: lots\nMemAvailable: 1 kB'), undefined);
  assert.equal(parseMemInfo(undefined), undefined);
});

// ---- network -----------------------------------------------------------------------------------

test('/proc/net/dev: byte counters per interface', () => {
  const dev = parseNetDev(NET_DEV);
  assert.deepEqual([...dev.keys()], ['lo', 'ifb0', 'eth0']);
  assert.deepEqual(dev.get('eth0'), { rxBytes: 225798908, txBytes: 1062169 });
  // Old kernels glue wide counters to the colon.
  const glued = parseNetDev('  eth1:123456789 1 0 0 0 0 0 0 987654321 1 0 0 0 0 0 0\n');
  assert.deepEqual(glued.get('eth1'), { rxBytes: 123456789, txBytes: 987654321 });
  assert.equal(parseNetDev('eth0: 1 2 3\n../x: ' + '1 '.repeat(16)).size, 0);
  assert.equal(parseNetDev(undefined).size, 0);
});

test('default routes: IPv4 and IPv6, reject routes and loopback ignored', () => {
  assert.deepEqual(parseDefaultRouteV4(ROUTE), ['eth0']);
  assert.deepEqual(parseDefaultRouteV6(IPV6_ROUTE), ['wlan0']);
  // A default route that is down (flags 0) does not count.
  assert.deepEqual(parseDefaultRouteV4('eth9\t00000000\t010200C0\t0000\t0\t0\t0\t00000000\t0\t0\t0\n'), []);
  assert.deepEqual(parseDefaultRouteV4(undefined), []);
});

test('link speed: Mbit/s when the kernel knows it, otherwise null (unknown), never a guess', () => {
  assert.equal(parseLinkSpeed('1000\n'), 1000);
  assert.equal(parseLinkSpeed('100000'), 100000);
  assert.equal(parseLinkSpeed('-1\n'), null, 'SPEED_UNKNOWN');
  assert.equal(parseLinkSpeed(undefined), null, 'missing file or EINVAL');
  assert.equal(parseLinkSpeed('0'), null);
  assert.equal(parseLinkSpeed('4294967295'), null, 'unsigned -1 from old kernels');
  assert.equal(parseLinkSpeed('65535'), null, 'unsigned 16-bit unknown');
  assert.equal(parseLinkSpeed('fast'), null);
  assert.equal(totalLinkMbps([1000, 1000]), 2000);
  assert.equal(totalLinkMbps([1000, null]), null, 'one unknown link makes the total unknown');
  assert.equal(totalLinkMbps([]), null);
});

test('interface choice, byte rates and utilisation', () => {
  const present = ['lo', 'eth0', 'eth1'];
  assert.deepEqual(chooseInterfaces(present, ['eth1']), ['eth1']);
  assert.deepEqual(chooseInterfaces(present, []), ['eth0', 'eth1'], 'no default route: all but loopback');
  assert.deepEqual(chooseInterfaces(['lo'], []), ['lo'], 'loopback when it is all there is');
  assert.deepEqual(chooseInterfaces(present, ['eth1'], 'eth0'), ['eth0'], 'the configured one wins');
  assert.deepEqual(chooseInterfaces(present, [], '../../etc'), [], 'never a path');
  const before = new Map([
    ['eth0', { rxBytes: 1000, txBytes: 5000 }],
    ['eth1', { rxBytes: 9000, txBytes: 9000 }],
  ]);
  const after = new Map([
    ['eth0', { rxBytes: 3000, txBytes: 6000 }],
    ['eth1', { rxBytes: 10, txBytes: 9400 }], // rx counter reset: that interval is ignored
  ]);
  assert.deepEqual(byteRates(before, after, ['eth0', 'eth1'], 2), { rxBytesPerSec: 1000, txBytesPerSec: 700 });
  assert.deepEqual(byteRates(before, after, ['eth0'], 0), { rxBytesPerSec: 0, txBytesPerSec: 0 });
  assert.equal(linkUtilisation(12_500_000, 1000, 1000), 0.1, '100 Mbit/s of a 1 Gbit/s link');
  assert.equal(linkUtilisation(12_500_000, 1000, null), null);
});

// ---- cgroups -----------------------------------------------------------------------------------

test('/proc/self/cgroup and mountinfo: v1, v2 and escaped mount points', () => {
  const self = parseSelfCgroup(SELF_CGROUP_V1);
  assert.deepEqual(
    self.find((e) => e.controllers.includes('memory')),
    {
      hierarchy: 4,
      controllers: ['memory'],
      path: '/process_api/8d68b7778683e6b61b70c1c36c1a1468',
    },
  );
  assert.deepEqual(parseSelfCgroup('0::/a:b\n'), [{ hierarchy: 0, controllers: [], path: '/a:b' }]);
  assert.deepEqual(parseSelfCgroup('garbage\nx:cpu:/\n1:cpu:relative\n'), []);
  const mounts = parseMountInfo(MOUNTINFO_V1);
  assert.deepEqual(
    mounts.map((m) => [m.version, m.mountPoint, m.controllers.join(',')]),
    [
      [1, '/sys/fs/cgroup/cpu', 'cpu'],
      [1, '/sys/fs/cgroup/cpuacct', 'cpuacct'],
      [1, '/sys/fs/cgroup/memory', 'memory'],
      [1, '/sys/fs/cgroup/systemd', 'xattr'],
      [2, '/sys/fs/cgroup/unified', ''],
    ],
  );
  const escaped = parseMountInfo('50 31 0:40 / /mnt/my\\040cgroups rw - cgroup2 none rw\n');
  assert.equal(escaped[0]?.mountPoint, '/mnt/my cgroups');
});

test('cgroup location: this machine (v1, nested memory cgroup)', () => {
  const layout = resolveCgroups(parseSelfCgroup(SELF_CGROUP_V1), parseMountInfo(MOUNTINFO_V1));
  assert.equal(layout.version, 1);
  assert.deepEqual(layout.cpu, { version: 1, mountPoint: '/sys/fs/cgroup/cpu', segments: [] });
  assert.deepEqual(layout.cpuacct, { version: 1, mountPoint: '/sys/fs/cgroup/cpuacct', segments: [] });
  assert.deepEqual(layout.memory, {
    version: 1,
    mountPoint: '/sys/fs/cgroup/memory',
    segments: ['process_api', '8d68b7778683e6b61b70c1c36c1a1468'],
  });
});

test('cgroup location: a container whose mount root is its own cgroup, and pure v2', () => {
  const docker = resolveCgroups(parseSelfCgroup(SELF_CGROUP_DOCKER), parseMountInfo(MOUNTINFO_DOCKER));
  assert.deepEqual(docker.cpu, { version: 1, mountPoint: '/sys/fs/cgroup/cpu,cpuacct', segments: [] });
  assert.deepEqual(docker.cpuacct, docker.cpu, 'co-mounted cpu,cpuacct share one directory');
  assert.deepEqual(docker.memory, { version: 1, mountPoint: '/sys/fs/cgroup/memory', segments: [] });
  const v2 = resolveCgroups(parseSelfCgroup(SELF_CGROUP_V2), parseMountInfo(MOUNTINFO_V2));
  assert.equal(v2.version, 2);
  const where = {
    version: 2,
    mountPoint: '/sys/fs/cgroup',
    segments: ['user.slice', 'user-1000.slice', 'session-3.scope'],
  };
  assert.deepEqual(v2.cpu, where);
  assert.deepEqual(v2.cpuacct, where);
  assert.deepEqual(v2.memory, where);
  // Outside any cgroup file system, or told to climb out of the mount: nothing, or the mount itself.
  assert.deepEqual(resolveCgroups([], []), { version: null, cpu: undefined, cpuacct: undefined, memory: undefined });
  const hostile = resolveCgroups(parseSelfCgroup('0::/../../etc\n'), parseMountInfo(MOUNTINFO_V2));
  assert.deepEqual(hostile.memory?.segments, []);
});

test('cgroup limit files: quotas, "unlimited" and "max"', () => {
  assert.equal(parseV1CpuQuota('50000\n', '100000\n'), 0.5);
  assert.equal(parseV1CpuQuota('-1', '100000'), null, 'no quota');
  assert.equal(parseV1CpuQuota('150000', '0'), null);
  assert.equal(parseV1CpuQuota(undefined, '100000'), null);
  assert.equal(parseV2CpuMax('50000 100000\n'), 0.5);
  assert.equal(parseV2CpuMax('250000 100000'), 2.5);
  assert.equal(parseV2CpuMax('max 100000\n'), null, 'no quota');
  assert.equal(parseV2CpuMax('max'), null);
  assert.equal(parseV2CpuMax('1 2 3'), null);
  assert.equal(parseV1MemoryLimit('536870912\n'), 536870912);
  assert.equal(parseV1MemoryLimit('9223372036854771712\n'), null, 'v1 "unlimited" on 4 KiB pages');
  assert.equal(parseV1MemoryLimit('9223372036854710272'), null, 'v1 "unlimited" on 64 KiB pages');
  assert.equal(parseV2MemoryMax('max\n'), null, 'v2 "max"');
  assert.equal(parseV2MemoryMax('268435456\n'), 268435456);
  assert.equal(parseV2MemoryMax('-5'), null);
  assert.equal(parseCpuacctUsage('1938475888386\n'), 1938475888386);
  const cpuStat = 'usage_usec 8123456\nuser_usec 6000000\nsystem_usec 2123456\nnr_periods 10\n';
  assert.equal(parseV2CpuStatUsageNs(cpuStat), 8123456000);
  assert.equal(parseV2CpuStatUsageNs('nr_periods 0\n'), undefined);
  assert.equal(parseMemoryUsage('134217728\n'), 134217728);
});

test('cgroup hierarchy: the tightest quota or limit on any ancestor binds', () => {
  const cpuLoc = { version: 1 as const, mountPoint: '/cg/cpu', segments: ['outer', 'inner'] };
  const memLoc = { version: 2 as const, mountPoint: '/cg2', segments: ['outer', 'inner'] };
  const read = fakeReader({
    '/cg/cpu/outer/inner/cpu.cfs_quota_us': '150000',
    '/cg/cpu/outer/inner/cpu.cfs_period_us': '100000',
    '/cg/cpu/outer/cpu.cfs_quota_us': '50000',
    '/cg/cpu/outer/cpu.cfs_period_us': '100000',
    '/cg/cpu/cpu.cfs_quota_us': '-1',
    '/cg/cpu/cpu.cfs_period_us': '100000',
    '/cg2/outer/inner/memory.max': '1073741824',
    '/cg2/outer/inner/memory.current': '104857600',
    '/cg2/outer/memory.max': '536870912',
    '/cg2/outer/memory.current': '469762048', // siblings use most of the parent's limit
  });
  assert.deepEqual(readCpuQuota(cpuLoc, read), { cores: 0.5, level: 1 });
  assert.deepEqual(cpuUsageFile(cpuLoc, 1)?.path, '/cg/cpu/outer/cpuacct.usage');
  assert.deepEqual(cpuUsageFile(memLoc, 0)?.path, '/cg2/outer/inner/cpu.stat');
  assert.deepEqual(readMemoryLimit(memLoc, read), {
    limitBytes: 536870912,
    usageBytes: 469762048,
    freeBytes: 536870912 - 469762048,
  });
  assert.equal(readCpuQuota({ ...cpuLoc, segments: [] }, read), null);
  assert.equal(readMemoryLimit(undefined, read), null);
});

test('hostile file contents never throw', () => {
  const tokens = fc.constantFrom(
    'cpu',
    'processor',
    ':',
    ' - ',
    'cgroup',
    'cgroup2',
    'max',
    '-1',
    '0',
    '9223372036854771712',
    '99999999999999999999999999999999999',
    '\\040',
    '/',
    '..',
    'eth0:',
    'usage_usec',
    'MemTotal:',
    'kB',
    '00000000',
    '\t',
    '\n',
    '\u0000',
  );
  const text = fc.oneof(
    fc.string({ maxLength: 300 }),
    fc.array(fc.oneof(tokens, fc.string({ maxLength: 8 })), { maxLength: 80 }).map((a) => a.join(' ')),
  );
  fc.assert(
    fc.property(text, text, (a, b) => {
      parseCpuInfo(a);
      parseProcStat(a);
      parseMemInfo(a);
      parseNetDev(a);
      parseDefaultRouteV4(a);
      parseDefaultRouteV6(a);
      parseLinkSpeed(a);
      parseV1CpuQuota(a, b);
      parseV2CpuMax(a);
      parseV1MemoryLimit(a);
      parseV2MemoryMax(a);
      parseCpuacctUsage(a);
      parseV2CpuStatUsageNs(a);
      const layout = resolveCgroups(parseSelfCgroup(a), parseMountInfo(b));
      for (const loc of [layout.cpu, layout.cpuacct, layout.memory]) {
        for (const seg of loc?.segments ?? []) assert.notEqual(seg, '..');
      }
      const q = parseV2CpuMax(a);
      assert.ok(q === null || (Number.isFinite(q) && q > 0));
      const s = parseLinkSpeed(a);
      assert.ok(s === null || (Number.isInteger(s) && s > 0));
    }),
    { numRuns: 2000 },
  );
});

// ---- the sampler over a fake host --------------------------------------------------------------

/** A fake host: cgroup v1 with cpu,cpuacct co-mounted, a 0.5-core quota and a 512 MiB limit. */
function fakeV1Host(): Record<string, string> {
  return {
    '/proc/cpuinfo': CPUINFO_X86,
    '/proc/stat': STAT_1,
    '/proc/meminfo': 'MemTotal: 8388608 kB\nMemAvailable: 4194304 kB\n',
    '/proc/net/dev': NET_DEV,
    '/proc/net/route': ROUTE,
    '/sys/class/net/eth0/speed': '100\n',
    '/proc/self/cgroup': '5:memory:/roam/host-a\n3:cpu,cpuacct:/roam/host-a\n0::/\n',
    '/proc/self/mountinfo': [
      '32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct',
      '35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory',
      '41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw',
    ].join('\n'),
    '/sys/fs/cgroup/cpu,cpuacct/roam/host-a/cpu.cfs_quota_us': '50000\n',
    '/sys/fs/cgroup/cpu,cpuacct/roam/host-a/cpu.cfs_period_us': '100000\n',
    '/sys/fs/cgroup/cpu,cpuacct/roam/host-a/cpuacct.usage': '1000000000\n',
    '/sys/fs/cgroup/cpu,cpuacct/roam/cpu.cfs_quota_us': '-1\n',
    '/sys/fs/cgroup/cpu,cpuacct/roam/cpu.cfs_period_us': '100000\n',
    '/sys/fs/cgroup/memory/roam/host-a/memory.limit_in_bytes': '536870912\n',
    '/sys/fs/cgroup/memory/roam/host-a/memory.usage_in_bytes': '134217728\n',
    '/sys/fs/cgroup/memory/roam/memory.limit_in_bytes': '9223372036854771712\n',
    '/sys/fs/cgroup/memory/roam/memory.usage_in_bytes': '900000000\n',
    '/sys/fs/cgroup/memory/memory.limit_in_bytes': '9223372036854771712\n',
  };
}

test('sampler over a fake cgroup v1 host: two samples, usage and rates from the deltas', () => {
  const files = fakeV1Host();
  let now = 10_000;
  const sampler = new HostSampler({ readFile: fakeReader(files), now: () => now, os: NO_OS });

  // One second later: the cgroup used 0.4 s of CPU (0.8 of its 0.5 cores), eth0 received 10 Mbit/s.
  now += 1000;
  files['/proc/stat'] = STAT_2;
  files['/sys/fs/cgroup/cpu,cpuacct/roam/host-a/cpuacct.usage'] = '1400000000\n';
  files['/proc/net/dev'] = NET_DEV.replace('225798908', String(225798908 + 1_250_000)).replace(
    '1062169',
    String(1062169 + 250_000),
  );
  const first = sampler.sample();
  assert.deepEqual(first, {
    intervalMs: 1000,
    cpu: { model: 'Intel(R) Xeon(R) Processor', mhz: 2100, cores: 2, usage: 0.8, capacity: 0.5 },
    memory: { totalBytes: 8 * 2 ** 30, freeBytes: 536870912 - 134217728, limitBytes: 536870912 },
    network: {
      interfaces: ['eth0'],
      linkMbps: 100,
      rxBytesPerSec: 1_250_000,
      txBytesPerSec: 250_000,
      utilisation: 0.1,
    },
    cgroup: { version: 1, cpuQuotaCores: 0.5, memoryLimitBytes: 536870912 },
  } satisfies HostReport);

  // Two more seconds, idle network, 0.25 s of CPU; the link speed becomes unknown; quota lifted.
  now += 2000;
  files['/sys/fs/cgroup/cpu,cpuacct/roam/host-a/cpuacct.usage'] = '1650000000\n';
  files['/sys/class/net/eth0/speed'] = '-1\n';
  const second = sampler.sample();
  assert.equal(second.intervalMs, 2000);
  assert.equal(second.cpu.usage, 0.25);
  assert.equal(second.network.rxBytesPerSec, 0);
  assert.equal(second.network.linkMbps, null);
  assert.equal(second.network.utilisation, null);

  files['/sys/fs/cgroup/cpu,cpuacct/roam/host-a/cpu.cfs_quota_us'] = '-1\n';
  files['/proc/stat'] = 'cpu  167200 0 16275 197129 84 0 542 122 0 0\n';
  now += 1000;
  const third = sampler.sample();
  assert.equal(third.cgroup.cpuQuotaCores, null);
  assert.equal(third.cpu.capacity, 2, 'without a quota the capacity is every core');
  // Without a quota, usage is the host's: 40 busy jiffies out of 160 since the previous sample.
  assert.equal(third.cpu.usage, 40 / 160);
});

test('sampler under a quota: time its tasks waited for a CPU, from their schedstat, as a share of the quota', () => {
  const files = fakeV1Host();
  files['/sys/fs/cgroup/cpu,cpuacct/roam/host-a/cgroup.procs'] = '42\n';
  files['/proc/42/task/42/schedstat'] = '100 1000000000 5\n';
  files['/proc/42/task/43/schedstat'] = '100 500000000 5\n';
  let now = 0;
  const listed: string[] = [];
  const sampler = new HostSampler({
    readFile: fakeReader(files),
    now: () => now,
    os: NO_OS,
    listDir: (path) => {
      listed.push(path);
      return path === '/proc/42/task' ? ['42', '43'] : [];
    },
  });
  // One second: the two threads waited 0.3 s and 0.1 s more: 0.4 s of a 0.5-core quota.
  now += 1000;
  files['/proc/42/task/42/schedstat'] = '200 1300000000 9\n';
  files['/proc/42/task/43/schedstat'] = '200 600000000 9\n';
  const report = sampler.sample();
  assert.equal(report.cpu.waiting, 0.8);
  assert.deepEqual([...new Set(listed)], ['/proc/42/task']);
  // A thread that exited takes its count with it: no negative wait.
  now += 1000;
  delete files['/proc/42/task/43/schedstat'];
  assert.equal(sampler.sample().cpu.waiting, 0);
});

test('sampler over a fake cgroup v2 host, a memory limit above what the host has', () => {
  const files: Record<string, string> = {
    '/proc/cpuinfo': CPUINFO_ARM64,
    '/proc/stat': STAT_1,
    '/proc/meminfo': 'MemTotal: 2097152 kB\nMemAvailable: 262144 kB\n',
    '/proc/net/dev': NET_DEV,
    '/proc/self/cgroup': SELF_CGROUP_V2,
    '/proc/self/mountinfo': MOUNTINFO_V2,
    '/sys/fs/cgroup/user.slice/user-1000.slice/session-3.scope/cpu.max': '150000 100000\n',
    '/sys/fs/cgroup/user.slice/user-1000.slice/session-3.scope/cpu.stat': 'usage_usec 5000000\n',
    '/sys/fs/cgroup/user.slice/user-1000.slice/session-3.scope/memory.max': '4294967296\n',
    '/sys/fs/cgroup/user.slice/user-1000.slice/session-3.scope/memory.current': '1073741824\n',
    '/sys/fs/cgroup/user.slice/memory.max': 'max\n',
  };
  let now = 0;
  const os: OsProbe = {
    cpus: () =>
      [0, 1].map(() => ({ model: 'Neoverse-N1', speed: 0, times: { user: 0, nice: 0, sys: 0, idle: 0, irq: 0 } })),
    totalmem: () => 1,
    freemem: () => 1,
  };
  const sampler = new HostSampler({ readFile: fakeReader(files), now: () => now, os });
  now += 500;
  files['/sys/fs/cgroup/user.slice/user-1000.slice/session-3.scope/cpu.stat'] = 'usage_usec 5600000\n';
  const r = sampler.sample();
  assert.deepEqual(r.cpu, { model: 'Neoverse-N1', mhz: null, cores: 2, usage: 0.6 / 0.5 / 1.5, capacity: 1.5 });
  assert.deepEqual(r.cgroup, { version: 2, cpuQuotaCores: 1.5, memoryLimitBytes: 4294967296 });
  assert.equal(r.memory.freeBytes, 262144 * 1024, 'the host has less available than the cgroup allows');
  assert.deepEqual(r.network.interfaces, ['ifb0', 'eth0'], 'no default route: every interface but loopback');
  assert.equal(r.network.linkMbps, null, 'no speed files: unknown');
});

test('sampler without /proc: the portable fallbacks', () => {
  let now = 0;
  let cpus = [0, 1].map(() => ({
    model: 'Apple M2',
    speed: 3490,
    times: { user: 1000, nice: 0, sys: 0, idle: 9000, irq: 0 },
  }));
  const os: OsProbe = { cpus: () => cpus, totalmem: () => 16 * 2 ** 30, freemem: () => 6 * 2 ** 30 };
  const sampler = new HostSampler({ readFile: () => undefined, now: () => now, os });
  now += 1000;
  cpus = cpus.map((c) => ({ ...c, times: { ...c.times, user: 1300, idle: 9700 } }));
  const r = sampler.sample();
  assert.ok(Math.abs(r.cpu.usage - 0.3) < 1e-9, String(r.cpu.usage));
  assert.deepEqual(r, {
    intervalMs: 1000,
    cpu: { model: 'Apple M2', mhz: 3490, cores: 2, usage: r.cpu.usage, capacity: 2 },
    memory: { totalBytes: 16 * 2 ** 30, freeBytes: 6 * 2 ** 30, limitBytes: null },
    network: { interfaces: [], linkMbps: null, rxBytesPerSec: 0, txBytesPerSec: 0, utilisation: null },
    cgroup: { version: null, cpuQuotaCores: null, memoryLimitBytes: null },
  } satisfies HostReport);
});

// ---- this machine ------------------------------------------------------------------------------

function assertSane(r: HostReport): void {
  assert.ok(r.cpu.model.length > 0);
  assert.ok(r.cpu.mhz === null || (r.cpu.mhz > 0 && r.cpu.mhz < 100_000));
  assert.ok(Number.isInteger(r.cpu.cores) && r.cpu.cores >= 1);
  assert.ok(r.cpu.usage >= 0 && r.cpu.usage <= 1);
  assert.ok(r.cpu.capacity > 0 && r.cpu.capacity <= r.cpu.cores);
  assert.ok(r.memory.totalBytes > 0);
  assert.ok(r.memory.freeBytes >= 0 && r.memory.freeBytes <= r.memory.totalBytes);
  assert.ok(r.network.rxBytesPerSec >= 0 && r.network.txBytesPerSec >= 0);
  assert.ok(r.network.linkMbps === null || r.network.linkMbps > 0);
  assert.ok(r.network.utilisation === null || (r.network.utilisation >= 0 && r.network.utilisation <= 1));
}

test('live: this machine samples without throwing and every value is in range', async (t) => {
  const sampler = await HostSampler.create({ baselineMs: 300 });
  const first = sampler.sample();
  assertSane(first);
  assert.ok(first.intervalMs >= 290, 'the first sample covers the baseline');
  assert.ok(sampler.cgroups.memory === undefined || existsSync(cgroupDir(sampler.cgroups.memory)));
  const second = sampler.sample();
  assertSane(second);
  t.diagnostic(JSON.stringify(first));
});

function cgroupDir(loc: { mountPoint: string; segments: string[] }): string {
  return join(loc.mountPoint, ...loc.segments);
}

test('benchmark: the fixed workload runs in the guest sandbox and scores against the reference', async (t) => {
  const r = await measureBenchmark();
  assert.equal(r.runsMs.length, 3);
  assert.equal(r.bestMs, Math.min(...r.runsMs));
  assert.ok(r.score > 0 && Number.isFinite(r.score));
  // No range on the score itself: it is a timing, and timings belong in benchmarks, not tests.
  assert.equal(r.score, REFERENCE_MS / r.bestMs);
  t.diagnostic(`score ${r.score.toFixed(2)}, runs ${r.runsMs.map((x) => x.toFixed(0)).join('/')} ms`);
  await assert.rejects(measureBenchmark({ runs: 1, expectChecksum: CHECKSUM + 1 }), /benchmark workload returned/);
});

// ---- a real cgroup v1 CPU quota (root) ---------------------------------------------------------

/** Runs in the child: samples while burning CPU for 1.5 s, then while idle for 0.5 s. */
const CHILD = `
import { HostSampler } from './sampler.js';
const sampler = new HostSampler();
const start = performance.now();
let spins = 0;
while (performance.now() - start < 1500) spins++;
const busy = sampler.sample();
await new Promise((resolve) => setTimeout(resolve, 500));
const idle = sampler.sample();
process.stdout.write(JSON.stringify({ busy, idle, cgroups: sampler.cgroups, spins }));
`;

test('a real cgroup v1 CPU quota of 0.5 cores: capacity 0.5, a busy loop uses all of it', async (t) => {
  const cpuRoot = '/sys/fs/cgroup/cpu';
  const acctRoot = '/sys/fs/cgroup/cpuacct';
  if (
    process.getuid?.() !== 0 ||
    !existsSync(join(cpuRoot, 'cpu.cfs_quota_us')) ||
    !existsSync(join(acctRoot, 'cpuacct.usage'))
  ) {
    t.skip('needs root and cgroup v1 cpu');
    return;
  }
  const name = `roam-test-${process.pid}`;
  // cpu and cpuacct are separate hierarchies here, co-mounted (one directory) on many systems.
  const dirs = [...new Set([realpathSync(cpuRoot), realpathSync(acctRoot)])].map((root) => join(root, name));
  const cpuDir = join(realpathSync(cpuRoot), name);
  const created: string[] = [];
  t.after(() => {
    // Runs once the child has exited (awaited below, or killed on failure), so the cgroups are empty.
    for (const dir of created.reverse()) rmdirSync(dir);
  });
  for (const dir of dirs) {
    mkdirSync(dir);
    created.push(dir);
  }
  writeFileSync(join(cpuDir, 'cpu.cfs_period_us'), '100000');
  writeFileSync(join(cpuDir, 'cpu.cfs_quota_us'), '50000');

  // The child is plain JavaScript (bundled here), so it is the only process in the cgroup.
  const bundle = await build({
    stdin: { contents: CHILD, resolveDir: METRICS_DIR, loader: 'ts', sourcefile: 'cgroup-child.ts' },
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    write: false,
    logLevel: 'silent',
  });
  const code = bundle.outputFiles[0]?.text ?? '';
  // The shell joins the cgroups, then becomes node: the sampler's baseline is taken inside them.
  const join$ = dirs.map((_, i) => `echo $$ > "$${i + 1}"`).join(' && ');
  const child = spawn(
    'sh',
    [
      '-c',
      `${join$} && exec "$0" --input-type=module -e "$${dirs.length + 1}"`,
      process.execPath,
      ...dirs.map((d) => join(d, 'cgroup.procs')),
      code,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  const [exitCode] = await exited.finally(() => clearTimeout(timer));
  assert.equal(exitCode, 0, stderr);

  const out = JSON.parse(stdout) as {
    busy: HostReport;
    idle: HostReport;
    cgroups: { cpu?: { segments: string[] }; cpuacct?: { segments: string[] } };
  };
  t.diagnostic(`busy: ${JSON.stringify(out.busy.cpu)} ${JSON.stringify(out.busy.cgroup)}`);
  t.diagnostic(`idle: ${JSON.stringify(out.idle.cpu)}`);
  assert.deepEqual(out.cgroups.cpu?.segments, [name]);
  assert.deepEqual(out.cgroups.cpuacct?.segments, [name]);
  assert.equal(out.busy.cgroup.version, 1);
  assert.equal(out.busy.cgroup.cpuQuotaCores, 0.5);
  assert.equal(out.busy.cpu.capacity, 0.5);
  assert.ok(out.busy.intervalMs >= 1400, `busy interval ${out.busy.intervalMs} ms`);
  // Capped at the quota, the loop uses (nearly) all of its 0.5 cores.
  assert.ok(out.busy.cpu.usage > 0.6, `busy usage ${out.busy.cpu.usage} of the quota`);
  // The cgroup's own CPU time, not the host's: idle means idle, whatever else runs on this machine.
  assert.ok(out.idle.cpu.usage < 0.3, `idle usage ${out.idle.cpu.usage} of the quota`);
});
